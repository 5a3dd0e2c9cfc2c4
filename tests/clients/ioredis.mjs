// An application's usual ioredis patterns against 127.0.0.1:PORT.
//
// Usage: node tests/clients/ioredis.mjs PORT
//
// Prints a deterministic transcript (one line per result, values
// JSON-encoded, set and hash orders sorted) so that a run against a real
// redis-server and one against the proxy can be diffed. Exits 0 when every
// step ran, 1 on an error or when a step waits longer than its timeout.
//
// ioredis comes from target/clients/node (scripts/ensure-clients.sh), or
// from the directory named by CLIENTS_NODE_DIR.
import { createRequire } from 'node:module';
import { createHash, randomUUID } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const nodeDir = process.env.CLIENTS_NODE_DIR || join(here, '..', '..', 'target', 'clients', 'node');
const require = createRequire(join(nodeDir, 'package.json'));
const Redis = require('ioredis');

const HOST = '127.0.0.1';
const PREFIX = 'ioredis:';
const TIMEOUT_MS = 10_000; // any one wait
const WATCHDOG_MS = 30_000; // the whole script

const NAMES = [
  'str', 'counter', 'session', 'expiring', 'user', 'list', 'set', 'zset', 'm1', 'm2',
  'pipe:str', 'pipe:counter', 'pipe:list', 'pipe:hash', 'pipe:set', 'auto:a', 'auto:b',
  'tx:str', 'tx:counter', 'tx:list', 'watched', 'lock', 'queue:empty', 'queue', 'db',
  'read:str', 'read:px', 'read:pexpire', 'read:lua', 'read:tx', 'read:renamed', 'read:renamed2',
  'read:hash', 'read:counter', 'pipe:many', 'big',
];
const K = Object.fromEntries(NAMES.map((n) => [n, PREFIX + n]));
const MISSING = PREFIX + 'missing';
const CHANNEL = PREFIX + 'news';
const PATTERN = PREFIX + 'events.*';
const PATTERN_CHANNEL = PREFIX + 'events.login';
const RELEASE_LOCK =
  "if redis.call('get',KEYS[1]) == ARGV[1] then " +
  "return redis.call('del',KEYS[1]) else return 0 end";

// JSON-ready with object keys sorted; Maps as objects, Sets sorted, Buffers as
// text, errors as their class name and message.
function plain(v) {
  if (v === undefined) return null;
  if (Buffer.isBuffer(v)) return v.toString('utf8');
  if (v instanceof Error) return `${v.constructor.name}: ${v.message}`;
  if (Array.isArray(v)) return v.map(plain);
  if (v instanceof Set) return [...v].map(plain).sort();
  if (v instanceof Map) v = Object.fromEntries(v);
  if (v !== null && typeof v === 'object') {
    const o = {};
    for (const k of Object.keys(v).sort()) o[k] = plain(v[k]);
    return o;
  }
  return v;
}

function out(label, value) {
  process.stdout.write(`${label}: ${JSON.stringify(plain(value))}\n`);
}

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${TIMEOUT_MS} ms: ${what}`)), TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const clients = [];
async function connect(port, options = {}) {
  const client = new Redis({
    host: HOST,
    port,
    lazyConnect: true,
    connectTimeout: TIMEOUT_MS,
    commandTimeout: TIMEOUT_MS,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null, // no reconnects: a dropped connection is a failure
    ...options,
  });
  client.on('error', (err) => process.stderr.write(`ioredis client error: ${err}\n`));
  clients.push(client);
  await withTimeout(client.connect(), 'connect');
  return client;
}

async function closeAll(failed) {
  for (const c of clients) {
    if (c.status === 'end') continue;
    if (failed) {
      c.disconnect();
      continue;
    }
    try {
      await withTimeout(c.quit(), 'quit');
    } catch {
      c.disconnect();
    }
  }
}

async function errorName(promise) {
  try {
    return ['ok', await promise];
  } catch (e) {
    return ['error', `${e.constructor.name}: ${e.message}`];
  }
}

async function plainCommands(r) {
  out('set', await r.set(K.str, 'hello'));
  out('get', await r.get(K.str));
  out('get missing', await r.get(MISSING));
  out('incr', await r.incr(K.counter));
  out('incrby', await r.incrby(K.counter, 41));
  out('get counter', await r.get(K.counter));
  out('setex', await r.setex(K.session, 100, 'token-1'));
  out('ttl > 0', (await r.ttl(K.session)) > 0);
  out('ttl no expiry', await r.ttl(K.str));
  out('set expiring', await r.set(K.expiring, 'soon'));
  out('expire', await r.expire(K.expiring, 50));
  out('expiring ttl > 0', (await r.ttl(K.expiring)) > 0);
  out('exists one', await r.exists(K.str));
  out('exists two + missing', await r.exists(K.str, K.counter, MISSING));
  out('hset', await r.hset(K.user, { name: 'ada', lang: 'en', visits: '1' }));
  out('hget', await r.hget(K.user, 'name'));
  out('hget missing', await r.hget(K.user, 'missing'));
  out('hincrby', await r.hincrby(K.user, 'visits', 2));
  out('hgetall', await r.hgetall(K.user));
  out('hgetall missing', await r.hgetall(MISSING));
  out('lpush', await r.lpush(K.list, 'a', 'b', 'c'));
  out('lrange', await r.lrange(K.list, 0, -1));
  out('sadd', await r.sadd(K.set, 'x', 'y', 'z', 'x'));
  out('smembers', (await r.smembers(K.set)).sort());
  out('sismember', await r.sismember(K.set, 'y'));
  out('zadd', await r.zadd(K.zset, 3, 'alice', 1.5, 'bob', 2, 'carol'));
  out('zrange withscores', await r.zrange(K.zset, 0, -1, 'WITHSCORES'));
  out('zrevrange', await r.zrevrange(K.zset, 0, 1));
  out('mset', await r.mset({ [K.m1]: 'v1', [K.m2]: 'v2' }));
  out('mget', await r.mget(K.m1, K.m2, MISSING));
  out('del', await r.del(K.m1, K.m2, MISSING));
  out('mget after del', await r.mget([K.m1, K.m2]));
  out('type', await r.type(K.zset));
  out('getBuffer', await r.getBuffer(K.str));
}

// Reads that a cache in between could answer stale: each key is read (so it
// may be cached), then changed, then read again.
async function readsAfterWrites(port, r) {
  const other = await connect(port);
  out('read counter before incr', await r.get(K['read:counter']));
  out('incr', await r.incr(K['read:counter']));
  out('read counter after incr', await r.get(K['read:counter']));
  out('set', await r.set(K['read:str'], 'v1'));
  out('read', await r.get(K['read:str']));
  out('second client set', await other.set(K['read:str'], 'v2'));
  out('read after second client set', await r.get(K['read:str']));
  out('second client del', await other.del(K['read:str']));
  out('read after second client del', await r.get(K['read:str']));
  out('set px 1000', await r.set(K['read:px'], 'short', 'PX', 1000));
  out('read before expiry', await r.get(K['read:px']));
  out('set', await r.set(K['read:pexpire'], 'long'));
  out('read before pexpire', await r.get(K['read:pexpire']));
  out('pexpire 1000', await r.pexpire(K['read:pexpire'], 1000));
  await sleep(1300); // both keys expire after 1 s
  out('read after px expiry', await r.get(K['read:px']));
  out('read after pexpire expiry', await r.get(K['read:pexpire']));
  out('set', await r.set(K['read:lua'], 'before'));
  out('read', await r.get(K['read:lua']));
  out('eval set', await r.eval("return redis.call('set',KEYS[1],ARGV[1])", 1, K['read:lua'], 'after'));
  out('read after eval', await r.get(K['read:lua']));
  out('set', await r.set(K['read:tx'], 'before'));
  out('read', await r.get(K['read:tx']));
  out('multi append', await r.multi().append(K['read:tx'], '+after').get(K['read:tx']).exec());
  out('read after multi', await r.get(K['read:tx']));
  out('set', await r.set(K['read:renamed'], 'moving'));
  out('read', await r.get(K['read:renamed']));
  out('read target', await r.get(K['read:renamed2']));
  out('rename', await r.rename(K['read:renamed'], K['read:renamed2']));
  out('read source after rename', await r.get(K['read:renamed']));
  out('read target after rename', await r.get(K['read:renamed2']));
  out('hset', await r.hset(K['read:hash'], 'f', '1'));
  out('hgetall', await r.hgetall(K['read:hash']));
  out('second client hset', await other.hset(K['read:hash'], 'g', '2'));
  out('hgetall after second client hset', await r.hgetall(K['read:hash']));
}

async function pipelines(port, r) {
  // pipeline().exec() gives [error, result] per command.
  out('pipeline', await r.pipeline()
    .set(K['pipe:str'], 'p1')
    .get(K['pipe:str'])
    .incr(K['pipe:counter'])
    .incrby(K['pipe:counter'], 9)
    .rpush(K['pipe:list'], 'one', 'two')
    .lrange(K['pipe:list'], 0, -1)
    .hset(K['pipe:hash'], 'f', 'v')
    .hgetall(K['pipe:hash'])
    .sadd(K['pipe:set'], 'm')
    .exists(K['pipe:str'], K['pipe:set'])
    .get(MISSING)
    .incr(K['pipe:str']) // an error reply, returned in place
    .exec());

  // The array form, as in pipeline([['set', k, v], ...]).
  out('pipeline (array form)', await r.pipeline([
    ['set', K['pipe:str'], 'p2'],
    ['get', K['pipe:str']],
    ['del', K['pipe:str']],
  ]).exec());

  // enableAutoPipelining batches commands issued in the same tick.
  const auto = await connect(port, { enableAutoPipelining: true });
  out('auto-pipelined', await Promise.all([
    auto.set(K['auto:a'], '1'),
    auto.set(K['auto:b'], '2'),
    auto.incr(K['auto:a']),
    auto.mget(K['auto:a'], K['auto:b']),
    errorName(auto.incr(K.str)),
    auto.get(K['auto:b']),
  ]));

  out('transaction', await r.multi()
    .set(K['tx:str'], 't1')
    .incr(K['tx:counter'])
    .incr(K['tx:counter'])
    .get(K['tx:str'])
    .lpush(K['tx:list'], 'never')
    .del(K['tx:list'])
    .exec());
  out('after transaction', [await r.get(K['tx:str']), await r.get(K['tx:counter'])]);

  // A command that fails at EXEC time: the others still run.
  out('transaction with failing command', await r.multi()
    .set(K['tx:str'], 't2')
    .incr(K['tx:str'])
    .get(K['tx:str'])
    .exec());

  // A command Redis rejects while queueing: EXEC is refused (EXECABORT).
  out('transaction with queueing error', await errorName(r.multi()
    .set(K['tx:str'], 't3')
    .call('NOSUCHCOMMAND', 'x')
    .exec()));
  out('after refused transaction', await r.get(K['tx:str']));

  // A long pipeline: the replies come back complete and in order.
  const many = r.pipeline();
  for (let i = 0; i < 500; i++) many.incr(K['pipe:many']);
  const manyResults = await many.exec();
  out('500-command pipeline: count', manyResults.length);
  out('500-command pipeline: in order', manyResults.every(([e, v], i) => e === null && v === i + 1));
  // The same through auto-pipelining: 500 commands issued in one tick.
  const autoMany = await Promise.all(Array.from({ length: 500 }, () => auto.incr(K['pipe:many'])));
  out('500 auto-pipelined: in order', autoMany.every((v, i) => v === i + 501));
}

async function largeValue(r) {
  // 4 MiB: larger than the proxy's default --cache-max-value-bytes.
  const parts = [];
  for (let i = 0; i < 65536; i++) parts.push(createHash('sha256').update(String(i)).digest('hex'));
  const big = parts.join('');
  out('set 4 MiB', await r.set(K.big, big));
  for (const i of [1, 2]) {
    const got = await r.get(K.big);
    out(`get 4 MiB (${i}): length`, got.length);
    out(`get 4 MiB (${i}): equal`, got === big);
  }
  out('strlen', await r.strlen(K.big));
}

async function scan(r) {
  const keys = [];
  await withTimeout(new Promise((resolve, reject) => {
    const stream = r.scanStream({ match: PREFIX + '*', count: 100 });
    stream.on('data', (batch) => keys.push(...batch));
    stream.on('end', resolve);
    stream.on('error', reject);
  }), 'scanStream');
  out('scan by prefix', keys.sort());
}

async function optimisticLock(port, r) {
  const w = await connect(port);
  await r.set(K.watched, '10');
  out('watch', await w.watch(K.watched));
  let current = Number(await w.get(K.watched));
  out('watch get', current);
  out('watch exec', await w.multi().set(K.watched, String(current + 1)).exec());
  out('watched after exec', await r.get(K.watched));

  out('watch (to abort)', await w.watch(K.watched));
  current = Number(await w.get(K.watched));
  out('watch get (to abort)', current);
  out('second client set', await r.set(K.watched, 'changed'));
  out('watch exec (to abort)', await w.multi().set(K.watched, String(current + 1)).exec());
  out('watched after abort', await r.get(K.watched));
}

// A queue of events; next() waits for one.
function inbox() {
  const items = [];
  const waiters = [];
  return {
    push(item) {
      const w = waiters.shift();
      if (w) w(item);
      else items.push(item);
    },
    next(what) {
      if (items.length) return Promise.resolve(items.shift());
      return withTimeout(new Promise((resolve) => waiters.push(resolve)), what);
    },
  };
}

async function pubsub(port, r) {
  const sub = await connect(port);
  const box = inbox();
  sub.on('message', (channel, message) => box.push({ channel, message }));
  sub.on('pmessage', (pattern, channel, message) => box.push({ pattern, channel, message }));

  out('subscribe', await withTimeout(sub.subscribe(CHANNEL), 'subscribe'));
  for (let i = 1; i <= 3; i++) out(`publish ${i}`, await r.publish(CHANNEL, `message ${i}`));
  for (let i = 1; i <= 3; i++) out(`received ${i}`, await box.next(`message ${i}`));
  out('unsubscribe', await withTimeout(sub.unsubscribe(CHANNEL), 'unsubscribe'));

  out('psubscribe', await withTimeout(sub.psubscribe(PATTERN), 'psubscribe'));
  out('publish to pattern', await r.publish(PATTERN_CHANNEL, 'ada logged in'));
  out('received by pattern', await box.next('pattern message'));
  out('punsubscribe', await withTimeout(sub.punsubscribe(PATTERN), 'punsubscribe'));
  out('publish with no subscriber', await r.publish(CHANNEL, 'nobody'));
  out('subscriber back to commands', await sub.ping());
}

async function lock(r) {
  const token = 'token-' + randomUUID();
  out('acquire', await r.set(K.lock, token, 'PX', 10000, 'NX'));
  out('second acquire', await r.set(K.lock, 'other-token', 'PX', 10000, 'NX'));
  out('lock pttl > 0', (await r.pttl(K.lock)) > 0);
  out('lock holder is us', (await r.get(K.lock)) === token);
  out('release with wrong token', await r.eval(RELEASE_LOCK, 1, K.lock, 'other-token'));
  out('release (EVAL)', await r.eval(RELEASE_LOCK, 1, K.lock, token));
  out('lock after release', await r.get(K.lock));

  // defineCommand runs EVALSHA, and EVAL on NOSCRIPT. A fresh comment makes
  // its sha new to the server, so the fallback runs every time.
  const lua = `${RELEASE_LOCK} -- ${randomUUID()}`;
  r.defineCommand('releaseLock', { numberOfKeys: 1, lua });
  const digest = createHash('sha1').update(lua).digest('hex');
  out('script exists before', await r.script('EXISTS', digest));
  out('acquire again', await r.set(K.lock, token, 'PX', 10000, 'NX'));
  out('release (defineCommand)', await r.releaseLock(K.lock, token));
  out('script exists after', await r.script('EXISTS', digest));
  out('release again (EVALSHA)', await r.releaseLock(K.lock, token));
  out('lock after second release', await r.get(K.lock));
}

async function blockingPops(port, r) {
  out('blpop empty (1s)', await withTimeout(r.blpop(K['queue:empty'], 1), 'BLPOP 1'));
  const pusher = await connect(port);
  const popped = r.blpop(K.queue, 5);
  await sleep(200);
  out('lpush from second client', await pusher.lpush(K.queue, 'job-1'));
  out('blpop woken by push', await withTimeout(popped, 'BLPOP 5'));
  out('queue left', await r.llen(K.queue));
}

async function databases(port, r) {
  const r1 = await connect(port, { db: 1 });
  out('db0 set', await r.set(K.db, 'zero'));
  out('db1 get before set', await r1.get(K.db));
  out('db1 set', await r1.set(K.db, 'one'));
  out('db0 get', await r.get(K.db));
  out('db1 get', await r1.get(K.db));
  out('db1 exists only there', await r1.exists(K.str));
  out('db1 del', await r1.del(K.db));
  out('db0 get after db1 del', await r.get(K.db));
}

async function main() {
  if (process.argv.length !== 3) {
    process.stderr.write('usage: node ioredis.mjs PORT\n');
    return 2;
  }
  const port = Number(process.argv[2]);
  out('library', 'ioredis');
  const r = await connect(port);
  out('ping', await r.ping());
  out('cleanup db0', (await r.del(...Object.values(K))) >= 0);
  const c1 = await connect(port, { db: 1 });
  out('cleanup db1', (await c1.del(...Object.values(K))) >= 0);

  await plainCommands(r);
  await readsAfterWrites(port, r);
  await pipelines(port, r);
  await largeValue(r);
  await optimisticLock(port, r);
  await pubsub(port, r);
  await lock(r);
  await blockingPops(port, r);
  await databases(port, r);

  await scan(r);
  out('cleanup at end', (await r.del(...Object.values(K))) >= 0);
  out('done', true);
  return 0;
}

const watchdog = setTimeout(() => {
  process.stderr.write(`ioredis.mjs: still running after ${WATCHDOG_MS} ms, giving up\n`);
  process.exit(1);
}, WATCHDOG_MS);
watchdog.unref();

let code = 1;
try {
  code = await main();
} catch (e) {
  process.stdout.write(`ERROR: ${e?.constructor?.name}: ${e?.message}\n`);
  process.stderr.write(`ioredis.mjs: ${e?.stack || e}\n`);
}
await closeAll(code !== 0).catch(() => {});
process.exitCode = code;

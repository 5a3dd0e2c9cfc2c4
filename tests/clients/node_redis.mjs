// An application's usual node-redis patterns against 127.0.0.1:PORT.
//
// Usage: node tests/clients/node_redis.mjs PORT
//
// Prints a deterministic transcript (one line per result, values
// JSON-encoded, set and hash orders sorted) so that a run against a real
// redis-server and one against the proxy can be diffed. Exits 0 when every
// step ran, 1 on an error or when a step waits longer than its timeout.
//
// node-redis comes from target/clients/node (scripts/ensure-clients.sh), or
// from the directory named by CLIENTS_NODE_DIR.
import { createRequire } from 'node:module';
import { createHash, randomUUID } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const nodeDir = process.env.CLIENTS_NODE_DIR || join(here, '..', '..', 'target', 'clients', 'node');
const require = createRequire(join(nodeDir, 'package.json'));
const { createClient, defineScript, WatchError } = require('redis');
const VERSION = require('redis/package.json').version;

const HOST = '127.0.0.1';
const PREFIX = 'node_redis:';
const TIMEOUT_MS = 10_000; // any one wait
const WATCHDOG_MS = 30_000; // the whole script (bounds every other command)

const NAMES = [
  'str', 'counter', 'session', 'expiring', 'user', 'list', 'set', 'zset', 'm1', 'm2',
  'pipe:str', 'pipe:counter', 'pipe:list', 'pipe:hash', 'pipe:set', 'auto:a', 'auto:b',
  'tx:str', 'tx:counter', 'tx:list', 'watched', 'lock', 'queue:empty', 'queue', 'db',
  'read:str', 'read:px', 'read:pexpire', 'read:lua', 'read:tx', 'read:renamed', 'read:renamed2',
  'read:hash', 'read:counter', 'pipe:many', 'big',
  'resp3:hash', 'resp3:zset',
];
const K = Object.fromEntries(NAMES.map((n) => [n, PREFIX + n]));
const MISSING = PREFIX + 'missing';
const CHANNEL = PREFIX + 'news';
const PATTERN = PREFIX + 'events.*';
const PATTERN_CHANNEL = PREFIX + 'events.login';
const RELEASE_LOCK =
  "if redis.call('get',KEYS[1]) == ARGV[1] then " +
  "return redis.call('del',KEYS[1]) else return 0 end";

// JSON-ready with object keys sorted; Maps as objects, Sets sorted, Buffers as text.
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
  const client = createClient({
    socket: {
      host: HOST,
      port,
      connectTimeout: TIMEOUT_MS,
      reconnectStrategy: false,
    },
    ...options,
  });
  client.on('error', (err) => process.stderr.write(`node_redis client error: ${err}\n`));
  clients.push(client);
  await withTimeout(client.connect(), 'connect');
  return client;
}

async function closeAll(failed) {
  for (const c of clients) {
    if (!c.isOpen) continue;
    if (failed) {
      c.destroy();
      continue;
    }
    try {
      await withTimeout(typeof c.close === 'function' ? c.close() : c.quit(), 'close');
    } catch {
      c.destroy?.();
    }
  }
}

async function errorName(promise) {
  try {
    return ['ok', await promise];
  } catch (e) {
    // A MultiErrorReply carries every reply of the transaction, errors included.
    const name = `${e.constructor.name}: ${e.message}`;
    return e.replies ? ['error', name, e.replies] : ['error', name];
  }
}

async function plainCommands(r) {
  out('set', await r.set(K.str, 'hello'));
  out('get', await r.get(K.str));
  out('get missing', await r.get(MISSING));
  out('incr', await r.incr(K.counter));
  out('incrby', await r.incrBy(K.counter, 41));
  out('get counter', await r.get(K.counter));
  out('setex', await r.setEx(K.session, 100, 'token-1'));
  out('ttl > 0', (await r.ttl(K.session)) > 0);
  out('ttl no expiry', await r.ttl(K.str));
  out('set expiring', await r.set(K.expiring, 'soon'));
  out('expire', await r.expire(K.expiring, 50));
  out('expiring ttl > 0', (await r.ttl(K.expiring)) > 0);
  out('exists one', await r.exists(K.str));
  out('exists two + missing', await r.exists([K.str, K.counter, MISSING]));
  out('hset', await r.hSet(K.user, { name: 'ada', lang: 'en', visits: '1' }));
  out('hget', await r.hGet(K.user, 'name'));
  out('hget missing', await r.hGet(K.user, 'missing'));
  out('hincrby', await r.hIncrBy(K.user, 'visits', 2));
  out('hgetall', await r.hGetAll(K.user));
  out('hgetall missing', await r.hGetAll(MISSING));
  out('lpush', await r.lPush(K.list, ['a', 'b', 'c']));
  out('lrange', await r.lRange(K.list, 0, -1));
  out('sadd', await r.sAdd(K.set, ['x', 'y', 'z', 'x']));
  out('smembers', (await r.sMembers(K.set)).sort());
  out('sismember', await r.sIsMember(K.set, 'y'));
  out('zadd', await r.zAdd(K.zset, [
    { score: 3, value: 'alice' },
    { score: 1.5, value: 'bob' },
    { score: 2, value: 'carol' },
  ]));
  out('zrange withscores', await r.zRangeWithScores(K.zset, 0, -1));
  out('zrange rev', await r.zRange(K.zset, 0, 1, { REV: true }));
  out('mset', await r.mSet({ [K.m1]: 'v1', [K.m2]: 'v2' }));
  out('mget', await r.mGet([K.m1, K.m2, MISSING]));
  out('del', await r.del([K.m1, K.m2, MISSING]));
  out('mget after del', await r.mGet([K.m1, K.m2]));
  out('type', await r.type(K.zset));
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
  out('set px 1000', await r.set(K['read:px'], 'short', { PX: 1000 }));
  out('read before expiry', await r.get(K['read:px']));
  out('set', await r.set(K['read:pexpire'], 'long'));
  out('read before pexpire', await r.get(K['read:pexpire']));
  out('pexpire 1000', await r.pExpire(K['read:pexpire'], 1000));
  await sleep(1300); // both keys expire after 1 s
  out('read after px expiry', await r.get(K['read:px']));
  out('read after pexpire expiry', await r.get(K['read:pexpire']));
  out('set', await r.set(K['read:lua'], 'before'));
  out('read', await r.get(K['read:lua']));
  out('eval set', await r.eval("return redis.call('set',KEYS[1],ARGV[1])", { keys: [K['read:lua']], arguments: ['after'] }));
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
  out('hset', await r.hSet(K['read:hash'], 'f', '1'));
  out('hgetall', await r.hGetAll(K['read:hash']));
  out('second client hset', await other.hSet(K['read:hash'], 'g', '2'));
  out('hgetall after second client hset', await r.hGetAll(K['read:hash']));
}

async function pipelines(r) {
  // A non-transactional pipeline: multi() sent as a plain batch.
  out('pipeline', await r.multi()
    .set(K['pipe:str'], 'p1')
    .get(K['pipe:str'])
    .incr(K['pipe:counter'])
    .incrBy(K['pipe:counter'], 9)
    .rPush(K['pipe:list'], ['one', 'two'])
    .lRange(K['pipe:list'], 0, -1)
    .hSet(K['pipe:hash'], 'f', 'v')
    .hGetAll(K['pipe:hash'])
    .sAdd(K['pipe:set'], 'm')
    .exists([K['pipe:str'], K['pipe:set']])
    .get(MISSING)
    .execAsPipeline());

  // node-redis also pipelines commands issued in the same tick (auto-pipelining).
  out('auto-pipelined', await Promise.all([
    r.set(K['auto:a'], '1'),
    r.set(K['auto:b'], '2'),
    r.incr(K['auto:a']),
    r.mGet([K['auto:a'], K['auto:b']]),
    errorName(r.incr(K.str)), // an error reply in the middle
    r.get(K['auto:b']),
  ]));

  out('transaction', await r.multi()
    .set(K['tx:str'], 't1')
    .incr(K['tx:counter'])
    .incr(K['tx:counter'])
    .get(K['tx:str'])
    .lPush(K['tx:list'], 'never')
    .del(K['tx:list'])
    .exec());
  out('after transaction', [await r.get(K['tx:str']), await r.get(K['tx:counter'])]);

  // A command that fails at EXEC time: the others still run.
  out('transaction with failing command', await errorName(r.multi()
    .set(K['tx:str'], 't2')
    .incr(K['tx:str'])
    .get(K['tx:str'])
    .exec()));
  // A command Redis rejects while queueing: EXEC is refused (EXECABORT).
  out('transaction with queueing error', await errorName(r.multi()
    .set(K['tx:str'], 't3')
    .addCommand(['NOSUCHCOMMAND', 'x'])
    .exec()));
  out('after refused transaction', await r.get(K['tx:str']));

  // A long pipeline: the replies come back complete and in order.
  const many = r.multi();
  for (let i = 0; i < 500; i++) many.incr(K['pipe:many']);
  const manyResults = await many.execAsPipeline();
  out('500-command pipeline: count', manyResults.length);
  out('500-command pipeline: in order', manyResults.every((v, i) => v === i + 1));
  // The same through auto-pipelining: 500 commands issued in one tick.
  const auto = await Promise.all(Array.from({ length: 500 }, () => r.incr(K['pipe:many'])));
  out('500 auto-pipelined: in order', auto.every((v, i) => v === i + 501));
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
  out('strlen', await r.strLen(K.big));
}

async function scan(r) {
  const keys = [];
  for await (const batch of r.scanIterator({ MATCH: PREFIX + '*', COUNT: 100 })) keys.push(...batch);
  out('scan by prefix', keys.sort());
}

async function optimisticLock(port, r) {
  // WATCH is per connection: these run on a dedicated client.
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
  try {
    out('watch exec (to abort)', await w.multi().set(K.watched, String(current + 1)).exec());
  } catch (e) {
    if (!(e instanceof WatchError)) throw e;
    out('watch exec (to abort)', e);
  }
  out('watched after abort', await r.get(K.watched));
}

// A queue fed by a subscription listener; next() waits for one message.
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
  const sub = r.duplicate();
  sub.on('error', (err) => process.stderr.write(`node_redis subscriber error: ${err}\n`));
  clients.push(sub);
  await withTimeout(sub.connect(), 'subscriber connect');

  const box = inbox();
  out('subscribe', await withTimeout(
    sub.subscribe(CHANNEL, (message, channel) => box.push({ channel, message })), 'subscribe'));
  for (let i = 1; i <= 3; i++) out(`publish ${i}`, await r.publish(CHANNEL, `message ${i}`));
  for (let i = 1; i <= 3; i++) out(`received ${i}`, await box.next(`message ${i}`));
  out('unsubscribe', await withTimeout(sub.unsubscribe(CHANNEL), 'unsubscribe'));

  const pbox = inbox();
  out('psubscribe', await withTimeout(
    sub.pSubscribe(PATTERN, (message, channel) => pbox.push({ channel, message })), 'psubscribe'));
  out('publish to pattern', await r.publish(PATTERN_CHANNEL, 'ada logged in'));
  out('received by pattern', await pbox.next('pattern message'));
  out('punsubscribe', await withTimeout(sub.pUnsubscribe(PATTERN), 'punsubscribe'));
  out('publish with no subscriber', await r.publish(CHANNEL, 'nobody'));
  out('subscriber back to commands', await sub.ping());
}

async function lock(port, r) {
  const token = 'token-' + randomUUID();
  out('acquire', await r.set(K.lock, token, { condition: 'NX', expiration: { type: 'PX', value: 10000 } }));
  out('second acquire', await r.set(K.lock, 'other-token', { NX: true, PX: 10000 }));
  out('lock pttl > 0', (await r.pTTL(K.lock)) > 0);
  out('lock holder is us', (await r.get(K.lock)) === token);
  out('release with wrong token', await r.eval(RELEASE_LOCK, { keys: [K.lock], arguments: ['other-token'] }));
  out('release (EVAL)', await r.eval(RELEASE_LOCK, { keys: [K.lock], arguments: [token] }));
  out('lock after release', await r.get(K.lock));

  // A script defined on the client runs EVALSHA, and EVAL on NOSCRIPT. A fresh
  // comment makes its sha new to the server, so the fallback runs every time.
  const releaseLock = defineScript({
    SCRIPT: `${RELEASE_LOCK} -- ${randomUUID()}`,
    NUMBER_OF_KEYS: 1,
    parseCommand(parser, key, value) {
      parser.pushKey(key);
      parser.push(value);
    },
    transformReply: undefined,
  });
  const s = await connect(port, { scripts: { releaseLock } });
  out('script exists before', await s.scriptExists(releaseLock.SHA1));
  out('acquire again', await s.set(K.lock, token, { NX: true, PX: 10000 }));
  out('release (defined script)', await s.releaseLock(K.lock, token));
  out('script exists after', await s.scriptExists(releaseLock.SHA1));
  out('release again (EVALSHA)', await s.releaseLock(K.lock, token));
  out('lock after second release', await s.get(K.lock));
}

async function blockingPops(port, r) {
  out('blpop empty (1s)', await withTimeout(r.blPop(K['queue:empty'], 1), 'BLPOP 1'));
  const pusher = await connect(port);
  const popped = r.blPop(K.queue, 5);
  await sleep(200);
  out('lpush from second client', await pusher.lPush(K.queue, 'job-1'));
  out('blpop woken by push', await withTimeout(popped, 'BLPOP 5'));
  out('queue left', await r.lLen(K.queue));
}

async function databases(port, r) {
  const r1 = await connect(port, { database: 1 });
  out('db0 set', await r.set(K.db, 'zero'));
  out('db1 get before set', await r1.get(K.db));
  out('db1 set', await r1.set(K.db, 'one'));
  out('db0 get', await r.get(K.db));
  out('db1 get', await r1.get(K.db));
  out('db1 exists only there', await r1.exists(K.str));
  out('db1 del', await r1.del(K.db));
  out('db0 get after db1 del', await r.get(K.db));
}

async function resp3(port, r) {
  const major = Number(VERSION.split('.')[0]);
  if (major < 5) {
    out('resp3', `skipped: node-redis ${major}.x has no RESP3`);
    return;
  }
  const r3 = await connect(port, { RESP: 3 });
  out('resp3 hset', await r3.hSet(K['resp3:hash'], { b: '2', a: '1' }));
  out('resp3 hgetall', await r3.hGetAll(K['resp3:hash']));
  out('resp3 hgetall missing', await r3.hGetAll(MISSING));
  out('resp3 zadd', await r3.zAdd(K['resp3:zset'], [{ score: 1, value: 'm' }, { score: 2.5, value: 'n' }]));
  out('resp3 zrange withscores', await r3.zRangeWithScores(K['resp3:zset'], 0, -1));
  out('resp3 sees resp2 writes', await r3.get(K.str));

  // Pub/sub over RESP3: messages arrive as push frames.
  const sub3 = r3.duplicate();
  sub3.on('error', (err) => process.stderr.write(`node_redis RESP3 subscriber error: ${err}\n`));
  clients.push(sub3);
  await withTimeout(sub3.connect(), 'RESP3 subscriber connect');
  const box = inbox();
  out('resp3 subscribe', await withTimeout(
    sub3.subscribe(CHANNEL, (message, channel) => box.push({ channel, message })), 'RESP3 subscribe'));
  out('resp3 publish', await r.publish(CHANNEL, 'over resp3'));
  out('resp3 received', await box.next('RESP3 message'));
  out('resp3 unsubscribe', await withTimeout(sub3.unsubscribe(CHANNEL), 'RESP3 unsubscribe'));
  out('resp3 subscriber back to commands', await sub3.get(K.str));
}

async function main() {
  if (process.argv.length !== 3) {
    process.stderr.write('usage: node node_redis.mjs PORT\n');
    return 2;
  }
  const port = Number(process.argv[2]);
  out('library', 'node-redis');
  const r = await connect(port);
  out('ping', await r.ping());
  out('cleanup db0', (await r.del(Object.values(K))) >= 0);
  const c1 = await connect(port, { database: 1 });
  out('cleanup db1', (await c1.del(Object.values(K))) >= 0);

  await plainCommands(r);
  await readsAfterWrites(port, r);
  await pipelines(r);
  await largeValue(r);
  await optimisticLock(port, r);
  await pubsub(port, r);
  await lock(port, r);
  await blockingPops(port, r);
  await databases(port, r);
  await resp3(port, r);

  await scan(r);
  out('cleanup at end', (await r.del(Object.values(K))) >= 0);
  out('done', true);
  return 0;
}

const watchdog = setTimeout(() => {
  process.stderr.write(`node_redis.mjs: still running after ${WATCHDOG_MS} ms, giving up\n`);
  process.exit(1);
}, WATCHDOG_MS);
watchdog.unref();

let code = 1;
try {
  code = await main();
} catch (e) {
  process.stdout.write(`ERROR: ${e?.constructor?.name}: ${e?.message}\n`);
  process.stderr.write(`node_redis.mjs: ${e?.stack || e}\n`);
}
await closeAll(code !== 0).catch(() => {});
process.exitCode = code;

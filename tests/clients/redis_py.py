#!/usr/bin/env python3
"""An application's usual redis-py patterns against 127.0.0.1:PORT.

Usage: redis_py.py PORT

Prints a deterministic transcript (one line per result, values JSON-encoded,
set and hash orders sorted) so that a run against a real redis-server and one
against the proxy can be diffed. Exits 0 when every step ran, 1 on an error or
when a step waits longer than its timeout.
"""

import hashlib
import json
import os
import signal
import sys
import threading
import time
import uuid

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

HOST = "127.0.0.1"
PREFIX = "redis_py:"
TIMEOUT = 10.0  # seconds any one wait may take
WATCHDOG = 30  # seconds the whole script may take

K = {
    name: PREFIX + name
    for name in [
        "str",
        "counter",
        "session",
        "expiring",
        "user",
        "list",
        "set",
        "zset",
        "m1",
        "m2",
        "pipe:str",
        "pipe:counter",
        "pipe:list",
        "pipe:hash",
        "pipe:set",
        "tx:str",
        "tx:counter",
        "watched",
        "lock",
        "queue:empty",
        "queue",
        "db",
        "resp3:hash",
        "resp3:zset",
        "read:str",
        "read:px",
        "read:pexpire",
        "read:lua",
        "read:tx",
        "read:renamed",
        "read:renamed2",
        "read:hash",
        "read:counter",
        "pipe:many",
        "big",
        "lock2",
    ]
}
CHANNEL = PREFIX + "news"
PATTERN = PREFIX + "events.*"
PATTERN_CHANNEL = PREFIX + "events.login"

RELEASE_LOCK = (
    "if redis.call('get',KEYS[1]) == ARGV[1] then "
    "return redis.call('del',KEYS[1]) else return 0 end"
)


def plain(value):
    """JSON-ready: bytes decoded, tuples as lists, sets sorted."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(plain(v) for v in value)
    if isinstance(value, dict):
        return {str(plain(k)): plain(v) for k, v in value.items()}
    if isinstance(value, Exception):
        return f"{type(value).__name__}: {value}"
    return value


def out(label, value):
    print(f"{label}: {json.dumps(plain(value), sort_keys=True)}", flush=True)


def connect(port, **kwargs):
    return redis.Redis(
        host=HOST,
        port=port,
        decode_responses=True,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        retry=Retry(NoBackoff(), 0),  # a timeout is a failure, not a retry
        **kwargs,
    )


def watchdog(_signum, _frame):
    print(f"redis_py.py: still running after {WATCHDOG}s, giving up", file=sys.stderr)
    sys.stderr.flush()
    os._exit(1)


def plain_commands(r):
    out("set", r.set(K["str"], "hello"))
    out("get", r.get(K["str"]))
    out("get missing", r.get(PREFIX + "missing"))
    out("incr", r.incr(K["counter"]))
    out("incrby", r.incrby(K["counter"], 41))
    out("get counter", r.get(K["counter"]))
    out("setex", r.setex(K["session"], 100, "token-1"))
    out("ttl > 0", r.ttl(K["session"]) > 0)
    out("ttl no expiry", r.ttl(K["str"]))
    out("set expiring", r.set(K["expiring"], "soon"))
    out("expire", r.expire(K["expiring"], 50))
    out("expiring ttl > 0", r.ttl(K["expiring"]) > 0)
    out("exists one", r.exists(K["str"]))
    out("exists two + missing", r.exists(K["str"], K["counter"], PREFIX + "missing"))
    out("hset", r.hset(K["user"], mapping={"name": "ada", "lang": "en", "visits": "1"}))
    out("hget", r.hget(K["user"], "name"))
    out("hget missing", r.hget(K["user"], "missing"))
    out("hincrby", r.hincrby(K["user"], "visits", 2))
    out("hgetall", r.hgetall(K["user"]))
    out("lpush", r.lpush(K["list"], "a", "b", "c"))
    out("lrange", r.lrange(K["list"], 0, -1))
    out("sadd", r.sadd(K["set"], "x", "y", "z", "x"))
    out("smembers", sorted(r.smembers(K["set"])))
    out("sismember", r.sismember(K["set"], "y"))
    out("zadd", r.zadd(K["zset"], {"alice": 3, "bob": 1.5, "carol": 2}))
    out("zrange withscores", r.zrange(K["zset"], 0, -1, withscores=True))
    out("zrevrange", r.zrevrange(K["zset"], 0, 1))
    out("mset", r.mset({K["m1"]: "v1", K["m2"]: "v2"}))
    out("mget", r.mget([K["m1"], K["m2"], PREFIX + "missing"]))
    out("del", r.delete(K["m1"], K["m2"], PREFIX + "missing"))
    out("mget after del", r.mget([K["m1"], K["m2"]]))
    out("type", r.type(K["zset"]))


def reads_after_writes(port, r):
    """Reads that a cache in between could answer stale: each key is read
    (so it may be cached), then changed, then read again."""
    other = connect(port)
    out("read counter before incr", r.get(K["read:counter"]))
    out("incr", r.incr(K["read:counter"]))
    out("read counter after incr", r.get(K["read:counter"]))
    out("set", r.set(K["read:str"], "v1"))
    out("read", r.get(K["read:str"]))
    out("second client set", other.set(K["read:str"], "v2"))
    out("read after second client set", r.get(K["read:str"]))
    out("second client del", other.delete(K["read:str"]))
    out("read after second client del", r.get(K["read:str"]))
    out("set px 1000", r.set(K["read:px"], "short", px=1000))
    out("read before expiry", r.get(K["read:px"]))
    out("set", r.set(K["read:pexpire"], "long"))
    out("read before pexpire", r.get(K["read:pexpire"]))
    out("pexpire 1000", r.pexpire(K["read:pexpire"], 1000))
    time.sleep(1.3)  # both keys expire after 1 s
    out("read after px expiry", r.get(K["read:px"]))
    out("read after pexpire expiry", r.get(K["read:pexpire"]))
    out("set", r.set(K["read:lua"], "before"))
    out("read", r.get(K["read:lua"]))
    out(
        "eval set",
        r.eval("return redis.call('set',KEYS[1],ARGV[1])", 1, K["read:lua"], "after"),
    )
    out("read after eval", r.get(K["read:lua"]))
    out("set", r.set(K["read:tx"], "before"))
    out("read", r.get(K["read:tx"]))
    t = r.pipeline(transaction=True)
    t.append(K["read:tx"], "+after")
    t.get(K["read:tx"])
    out("multi append", t.execute())
    out("read after multi", r.get(K["read:tx"]))
    out("set", r.set(K["read:renamed"], "moving"))
    out("read", r.get(K["read:renamed"]))
    out("read target", r.get(K["read:renamed2"]))
    out("rename", r.rename(K["read:renamed"], K["read:renamed2"]))
    out("read source after rename", r.get(K["read:renamed"]))
    out("read target after rename", r.get(K["read:renamed2"]))
    out("hset", r.hset(K["read:hash"], "f", "1"))
    out("hgetall", r.hgetall(K["read:hash"]))
    out("second client hset", other.hset(K["read:hash"], "g", "2"))
    out("hgetall after second client hset", r.hgetall(K["read:hash"]))
    other.close()


def pipelines(r):
    p = r.pipeline(transaction=False)
    p.set(K["pipe:str"], "p1")
    p.get(K["pipe:str"])
    p.incr(K["pipe:counter"])
    p.incrby(K["pipe:counter"], 9)
    p.rpush(K["pipe:list"], "one", "two")
    p.lrange(K["pipe:list"], 0, -1)
    p.hset(K["pipe:hash"], "f", "v")
    p.hgetall(K["pipe:hash"])
    p.sadd(K["pipe:set"], "m")
    p.exists(K["pipe:str"], K["pipe:set"])
    p.get(PREFIX + "missing")
    out("pipeline", p.execute())

    # An error inside a pipeline is returned in place, not raised.
    p = r.pipeline(transaction=False)
    p.set(K["pipe:str"], "p2")
    p.incr(K["pipe:str"])
    p.get(K["pipe:str"])
    results = p.execute(raise_on_error=False)
    out("pipeline with error", results)

    t = r.pipeline(transaction=True)
    t.set(K["tx:str"], "t1")
    t.incr(K["tx:counter"])
    t.incr(K["tx:counter"])
    t.get(K["tx:str"])
    t.lpush(K["tx:str"] + ":l", "never")  # key kept separate from the string
    t.delete(K["tx:str"] + ":l")
    out("transaction", t.execute())
    out("after transaction", [r.get(K["tx:str"]), r.get(K["tx:counter"])])

    # A command Redis rejects while queueing: EXEC is refused (EXECABORT).
    t = r.pipeline(transaction=True)
    t.set(K["tx:str"], "t2")
    t.execute_command("NOSUCHCOMMAND", "x")
    try:
        out("transaction with queueing error", t.execute())
    except redis.RedisError as e:
        out("transaction with queueing error", e)
    out("after refused transaction", r.get(K["tx:str"]))

    # A long pipeline: the replies come back complete and in order.
    p = r.pipeline(transaction=False)
    for _ in range(500):
        p.incr(K["pipe:many"])
    results = p.execute()
    out("500-command pipeline: count", len(results))
    out("500-command pipeline: in order", results == list(range(1, 501)))


def large_value(r):
    # 4 MiB: larger than the proxy's default --cache-max-value-bytes.
    big = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(65536))
    out("set 4 MiB", r.set(K["big"], big))
    for i in (1, 2):
        got = r.get(K["big"])
        out(f"get 4 MiB ({i}): length", len(got))
        out(f"get 4 MiB ({i}): equal", got == big)
    out("strlen", r.strlen(K["big"]))


def optimistic_lock(port, r):
    r.set(K["watched"], "10")
    with r.pipeline() as p:
        p.watch(K["watched"])
        current = int(p.get(K["watched"]))
        out("watch get", current)
        p.multi()
        p.set(K["watched"], str(current + 1))
        out("watch exec", p.execute())
    out("watched after exec", r.get(K["watched"]))

    other = connect(port)
    with r.pipeline() as p:
        p.watch(K["watched"])
        current = int(p.get(K["watched"]))
        out("watch get (to abort)", current)
        out("second client set", other.set(K["watched"], "changed"))
        p.multi()
        p.set(K["watched"], str(current + 1))
        try:
            out("watch exec (to abort)", p.execute())
        except redis.WatchError as e:
            out("watch exec (to abort)", e)
    out("watched after abort", r.get(K["watched"]))
    other.close()

    # redis-py's helper: WATCH, call the function, EXEC, retry on WatchError.
    def bump(pipe):
        value = pipe.get(K["watched"])
        pipe.multi()
        pipe.set(K["watched"], value + "!")
        return value

    out(
        "transaction() helper",
        r.transaction(bump, K["watched"], value_from_callable=True),
    )
    out("watched after helper", r.get(K["watched"]))


def next_message(ps, what):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        msg = ps.get_message(timeout=max(0.0, deadline - time.monotonic()))
        if msg is not None:
            return {k: msg[k] for k in ("type", "pattern", "channel", "data")}
    raise TimeoutError(f"no pub/sub message within {TIMEOUT}s while waiting for {what}")


def pubsub(port, r):
    sub = connect(port)
    ps = sub.pubsub()
    ps.subscribe(CHANNEL)
    out("subscribe", next_message(ps, "subscribe confirmation"))
    for i in range(1, 4):
        out(f"publish {i}", r.publish(CHANNEL, f"message {i}"))
    for i in range(1, 4):
        out(f"received {i}", next_message(ps, f"message {i}"))
    ps.unsubscribe(CHANNEL)
    out("unsubscribe", next_message(ps, "unsubscribe confirmation"))

    ps.psubscribe(PATTERN)
    out("psubscribe", next_message(ps, "psubscribe confirmation"))
    out("publish to pattern", r.publish(PATTERN_CHANNEL, "ada logged in"))
    out("received by pattern", next_message(ps, "pattern message"))
    ps.punsubscribe(PATTERN)
    out("punsubscribe", next_message(ps, "punsubscribe confirmation"))
    out("publish with no subscriber", r.publish(CHANNEL, "nobody"))
    ps.close()
    sub.close()


def lock(r):
    token = "token-" + uuid.uuid4().hex
    out("acquire", r.set(K["lock"], token, nx=True, px=10000))
    out("second acquire", r.set(K["lock"], "other-token", nx=True, px=10000))
    out("lock pttl > 0", r.pttl(K["lock"]) > 0)
    out("lock holder is us", r.get(K["lock"]) == token)
    out("release with wrong token", r.eval(RELEASE_LOCK, 1, K["lock"], "other-token"))
    out("release (EVAL)", r.eval(RELEASE_LOCK, 1, K["lock"], token))
    out("lock after release", r.get(K["lock"]))

    # register_script runs EVALSHA and, on NOSCRIPT, SCRIPT LOAD + EVALSHA.
    # A fresh comment makes the body (and its sha) new to the server, so the
    # fallback path is taken on every run.
    release = r.register_script(RELEASE_LOCK + " -- " + uuid.uuid4().hex)
    out("script exists before", r.script_exists(release.sha))
    out("acquire again", r.set(K["lock"], token, nx=True, px=10000))
    out("release (register_script)", release(keys=[K["lock"]], args=[token]))
    out("script exists after", r.script_exists(release.sha))
    out("release again (EVALSHA)", release(keys=[K["lock"]], args=[token]))
    out("lock after second release", r.get(K["lock"]))

    # redis-py's Lock: SET NX PX to acquire, Lua scripts (EVALSHA) to release.
    held = r.lock(K["lock2"], timeout=10, blocking=False)
    out("Lock.acquire", held.acquire())
    out("second Lock.acquire", r.lock(K["lock2"], timeout=10, blocking=False).acquire())
    out("Lock.owned", held.owned())
    out("Lock.extend", held.extend(5))
    held.release()
    out("Lock released, key", r.get(K["lock2"]))
    with r.lock(K["lock2"], timeout=10, blocking_timeout=1):
        out("with Lock: key set", r.exists(K["lock2"]))
    out("after with Lock: key", r.get(K["lock2"]))


def blocking_pops(port, r):
    out("blpop empty (1s)", r.blpop([K["queue:empty"]], timeout=1))

    pusher = connect(port)
    pushed = []

    def push_later():
        time.sleep(0.2)
        pushed.append(pusher.lpush(K["queue"], "job-1"))

    thread = threading.Thread(target=push_later)
    thread.start()
    out("blpop woken by push", r.blpop([K["queue"]], timeout=5))
    thread.join(TIMEOUT)
    if thread.is_alive() or not pushed:
        raise RuntimeError("the pushing connection did not finish")
    out("lpush from second client", pushed[0])
    out("queue left", r.llen(K["queue"]))
    pusher.close()


def databases(port, r):
    r1 = connect(port, db=1)
    out("db0 set", r.set(K["db"], "zero"))
    out("db1 get before set", r1.get(K["db"]))
    out("db1 set", r1.set(K["db"], "one"))
    out("db0 get", r.get(K["db"]))
    out("db1 get", r1.get(K["db"]))
    out("db1 exists only there", r1.exists(K["str"]))
    out("db1 del", r1.delete(K["db"]))
    out("db0 get after db1 del", r.get(K["db"]))
    r1.close()


def resp3(port, r):
    r3 = connect(port, protocol=3)
    out("resp3 hset", r3.hset(K["resp3:hash"], mapping={"b": "2", "a": "1"}))
    out("resp3 hgetall", r3.hgetall(K["resp3:hash"]))
    out("resp3 hgetall missing", r3.hgetall(PREFIX + "missing"))
    out("resp3 zadd", r3.zadd(K["resp3:zset"], {"m": 1, "n": 2.5}))
    out("resp3 zrange withscores", r3.zrange(K["resp3:zset"], 0, -1, withscores=True))
    out("resp3 sees resp2 writes", r3.get(K["str"]))

    # Pub/sub over RESP3: messages arrive as push frames.
    ps = r3.pubsub()
    ps.subscribe(CHANNEL)
    out("resp3 subscribe", next_message(ps, "RESP3 subscribe confirmation"))
    out("resp3 publish", r.publish(CHANNEL, "over resp3"))
    out("resp3 received", next_message(ps, "RESP3 message"))
    ps.unsubscribe(CHANNEL)
    out("resp3 unsubscribe", next_message(ps, "RESP3 unsubscribe confirmation"))
    ps.close()
    r3.close()


def scan(r):
    out("scan by prefix", sorted(r.scan_iter(match=PREFIX + "*", count=100)))


def main():
    if len(sys.argv) != 2:
        print("usage: redis_py.py PORT", file=sys.stderr)
        return 2
    port = int(sys.argv[1])
    signal.signal(signal.SIGALRM, watchdog)
    signal.alarm(WATCHDOG)

    out("library", "redis-py")
    r = connect(port)
    out("ping", r.ping())
    out("cleanup db0", r.delete(*K.values()) >= 0)
    r1 = connect(port, db=1)
    out("cleanup db1", r1.delete(*K.values()) >= 0)
    r1.close()

    plain_commands(r)
    reads_after_writes(port, r)
    pipelines(r)
    large_value(r)
    optimistic_lock(port, r)
    pubsub(port, r)
    lock(r)
    blocking_pops(port, r)
    databases(port, r)
    resp3(port, r)
    scan(r)

    out("cleanup at end", r.delete(*K.values(), K["tx:str"] + ":l") >= 0)
    r.close()
    out("done", True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # a transcript line, then a non-zero exit
        print(f"ERROR: {type(e).__name__}: {e}", flush=True)
        print(f"redis_py.py: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)

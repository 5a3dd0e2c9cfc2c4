#!/usr/bin/env python3
"""`make bench`: one side-by-side run on this machine, everything on
127.0.0.1, written to bench/results/latest.md.

Rows (10,000 keys of 64-byte values unless said otherwise), each measured
REPEATS times, the subject and its reference one after the other, reported
as the median and the spread (min-max) of the ratio:

- RESP hits, -c 1 -P 1 and -c 50 -P 16: the proxy against Redis direct
- RESP misses on present keys (a proxy with --cache-capacity 1), -c 1 and
  -c 50 -P 16: against twemproxy, which also forwards every GET
- forwarded commands (redis-benchmark -t set, incr, lpush, hset, each a
  row) through a proxy with --allow-writes, -c 1 and -c 50 -P 16: against
  twemproxy. (A plain SET goes through the cache; the others are
  forwarded, and every write's reply waits for its invalidations.)
- the read-your-writes barrier's cost: an EVAL writing a key it did not
  declare (so its keys cannot be known), through the proxy with tracking
  (each reply held until a PING on the invalidation connection returns,
  one PING shared by the writes waiting then) against the same proxy with
  --invalidation ttl (no barrier: the cache is dropped instead)
- HTTP, wrk -t2 -c50 on a random key of 10,000: against webdis, and against
  the seed's Flask design (bench/flask/app.py)
- the hot-key sketch's cost: RESP hits at -c 50 -P 16 and HTTP hits
  (wrk), a proxy with the default --hotkeys-capacity 1024 against one with
  --hotkeys-capacity 0; goal >= 0.97 (it costs the hit path no more than
  3%). Reads spread evenly over 10,000 keys are the sketch's worst case:
  most reads are of keys it does not hold.
- CPU time per request: the proxy's (from /proc/<pid>/stat) next to
  redis-server's per GET, in the -c 50 -P 16 hit row
- RSS with 1,000,000 cached 64-byte values (100,000 with BENCH_QUICK=1),
  next to what Redis spends holding the same data

Every load is bounded in count or time. Only processes this script started
are stopped, by their PID. BENCH_QUICK=1: one repetition, smaller counts.
"""

import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = os.environ.get("BENCH_QUICK") == "1"
REPEATS = 1 if QUICK else 3
WRK_SECONDS = 2 if QUICK else 5
N_LATENCY = 20_000 if QUICK else 100_000
N_THROUGHPUT = 300_000 if QUICK else 2_000_000
N_FLASK_SECONDS = 2 if QUICK else 5
N_WRITES_LATENCY = 5_000 if QUICK else 20_000
N_WRITES = 100_000 if QUICK else 400_000
KEYS = 10_000
VALUE = b"v" * 64
RSS_KEYS = 100_000 if QUICK else 1_000_000
PROXY = os.path.join(ROOT, "target", "release", "redis-proxy")
VENV = os.path.join(ROOT, "bench", ".venv")
CLK_TCK = os.sysconf("SC_CLK_TCK")

started = []  # every process this script started


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} never listened on {port}")


def start(args, what, port, **kw):
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    started.append(p)
    wait_port(port, what)
    return p


def stop_all():
    for p in started:
        if p.poll() is None:
            p.terminate()
    for p in started:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def redis_cli(port, *args, stdin=None):
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], input=stdin, capture_output=True, check=True, timeout=600
    ).stdout


def pipe(port, commands):
    """Sends RESP commands with redis-cli --pipe (which ends with an ECHO)."""
    redis_cli(port, "--pipe", stdin=commands)


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def key(i):
    return b"key:%012d" % i  # what redis-benchmark's key:__rand_int__ becomes


P50 = {}  # port -> p50 latencies (ms) seen at -c 1


def redis_benchmark(port, clients, pipeline, n, test="get"):
    """requests per second; `test` is a -t name, or a whole command (a list)."""
    what = ["-t", test] if isinstance(test, str) else test
    out = subprocess.run(
        ["redis-benchmark", "-p", str(port), "-c", str(clients), "-P", str(pipeline), "-n", str(n),
         "-r", str(KEYS), "-q", *what],
        capture_output=True, text=True, timeout=600,
    ).stdout
    out = out.replace("\r", "\n")
    found = re.findall(r"([0-9.]+) requests per second", out)
    p50 = re.findall(r"requests per second, p50=([0-9.]+) msec", out)
    if clients == 1 and p50 and test == "get":
        P50.setdefault(port, []).append(float(p50[-1]))
    return float(found[-1]) if found else 0.0


def wrk(url, prefix, seconds):
    script = os.path.join(tempdir, f"rand-{prefix.strip('/').replace('/', '_')}.lua")
    with open(script, "w") as f:
        f.write(
            "math.randomseed(os.time())\n"
            "request = function()\n"
            f"  return wrk.format('GET', string.format('{prefix}key:%012d', math.random(0, {KEYS - 1})))\n"
            "end\n"
        )
    out = subprocess.run(
        ["wrk", "-t2", "-c50", f"-d{seconds}s", "-s", script, url],
        capture_output=True, text=True, timeout=seconds + 60,
    ).stdout
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"{url}: {non2xx.group(1)} answers were not 200")
    return float(m.group(1)) if m else 0.0


def spread(values, fmt="{:.2f}"):
    """median (min-max)"""
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def compare(name, subject, reference, run, goal):
    """Runs subject then reference REPEATS times; a table row."""
    s_vals, r_vals, ratios = [], [], []
    for i in range(REPEATS):
        log(f"  {name} [{i + 1}/{REPEATS}]")
        s = run(subject)
        r = run(reference)
        s_vals.append(s)
        r_vals.append(r)
        ratios.append(s / r if r else 0.0)
    return (name, subject[0], spread(s_vals, "{:,.0f}"), reference[0], spread(r_vals, "{:,.0f}"),
            spread(ratios), goal, statistics.median(ratios))


def main():
    global tempdir
    tempdir = tempfile.mkdtemp(prefix="redis-proxy-bench-")
    try:
        rows, extra = run_all()
    finally:
        stop_all()
        shutil.rmtree(tempdir, ignore_errors=True)
    write(rows, extra)


def flask_server(redis_port):
    if not os.path.exists(os.path.join(VENV, "bin", "flask")):
        log("creating bench/.venv for the Flask replica ...")
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "-q", "-r",
                        os.path.join(ROOT, "bench", "flask", "requirements.txt")], check=True)
    port = free_port()
    env = dict(os.environ, REDIS_HOST="127.0.0.1", REDIS_PORT=str(redis_port), FLASK_APP="app.py")
    start([os.path.join(VENV, "bin", "flask"), "run", "--host", "127.0.0.1", "--port", str(port)],
          "flask", port, cwd=os.path.join(ROOT, "bench", "flask"), env=env)
    return port


def proxy(redis_port, *flags):
    http, resp_port, admin = free_port(), free_port(), free_port()
    p = start([PROXY, "--redis-url", f"redis://127.0.0.1:{redis_port}/0",
               "--http-listen", f"127.0.0.1:{http}", "--resp-listen", f"127.0.0.1:{resp_port}",
               "--admin-listen", f"127.0.0.1:{admin}", *flags], "redis-proxy", resp_port)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            import urllib.request
            if urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1).status == 200:
                break
        except OSError:
            time.sleep(0.05)
    return p, http, resp_port


def run_all():
    redis_port = free_port()
    redis = start(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", tempdir, "--logfile", os.path.join(tempdir, "redis.log")],
                  "redis-server", redis_port)
    log(f"loading {KEYS:,} keys ...")
    pipe(redis_port, b"".join(resp("SET", key(i), VALUE) for i in range(KEYS)))

    hits, hits_http, hits_resp = proxy(redis_port)
    _, no_sketch_http, no_sketch_resp = proxy(redis_port, "--hotkeys-capacity", "0")
    misses, _, misses_resp = proxy(redis_port, "--cache-capacity", "1")
    _, _, writes_resp = proxy(redis_port, "--allow-writes")
    _, _, no_barrier_resp = proxy(redis_port, "--allow-writes", "--invalidation", "ttl")
    twem_port, twem_stats = free_port(), free_port()
    with open(os.path.join(tempdir, "twem.yml"), "w") as f:
        f.write(f"bench:\n  listen: 127.0.0.1:{twem_port}\n  redis: true\n"
                f"  servers:\n    - 127.0.0.1:{redis_port}:1\n")
    start(["nutcracker", "-c", os.path.join(tempdir, "twem.yml"), "-s", str(twem_stats), "-a", "127.0.0.1",
           "-o", os.path.join(tempdir, "twem.log")], "twemproxy", twem_port)
    webdis_port = free_port()
    with open(os.path.join(tempdir, "webdis.json"), "w") as f:
        f.write(f'{{"redis_host": "127.0.0.1", "redis_port": {redis_port}, "http_host": "127.0.0.1",'
                f' "http_port": {webdis_port}, "threads": 2, "pool_size": 20, "daemonize": false,'
                f' "websockets": false, "database": 0, "verbosity": 0,'
                f' "logfile": "{os.path.join(tempdir, "webdis.log")}"}}')
    start(["webdis", os.path.join(tempdir, "webdis.json")], "webdis", webdis_port)
    flask_port = flask_server(redis_port)

    log("warming the proxy's cache ...")
    redis_benchmark(hits_resp, 50, 16, 200_000)
    wrk(f"http://127.0.0.1:{hits_http}", "/get/", 1)
    redis_benchmark(no_sketch_resp, 50, 16, 200_000)
    wrk(f"http://127.0.0.1:{no_sketch_http}", "/get/", 1)

    bench = lambda clients, pipeline, n: lambda target: redis_benchmark(target[1], clients, pipeline, n)
    http = lambda target: wrk(f"http://127.0.0.1:{target[1]}", target[2], WRK_SECONDS)
    rows = []
    log("RESP hits ...")
    rows.append(compare("RESP hits, -c 1 -P 1 (latency)", ("redis-proxy", hits_resp), ("Redis direct", redis_port),
                        bench(1, 1, N_LATENCY), 1.0))
    cpu = {}

    def measured(target):
        pid = hits.pid if target[1] == hits_resp else redis.pid
        before = cpu_seconds(pid)
        rps = redis_benchmark(target[1], 50, 16, N_THROUGHPUT)
        cpu.setdefault(target[0], []).append((cpu_seconds(pid) - before) / N_THROUGHPUT * 1e6)
        return rps

    rows.append(compare("RESP hits, -c 50 -P 16", ("redis-proxy", hits_resp), ("Redis direct", redis_port),
                        measured, 1.0))
    log("the hot-key sketch ...")
    rows.append(compare("RESP hits, -c 50 -P 16: the hot-key sketch's cost",
                        ("--hotkeys-capacity 1024 (default)", hits_resp), ("--hotkeys-capacity 0", no_sketch_resp),
                        bench(50, 16, N_THROUGHPUT), 0.97))
    rows.append(compare("HTTP hits, wrk -t2 -c50: the hot-key sketch's cost",
                        ("--hotkeys-capacity 1024 (default)", hits_http, "/get/"),
                        ("--hotkeys-capacity 0", no_sketch_http, "/get/"), http, 0.97))
    log("RESP misses ...")
    rows.append(compare("RESP misses (--cache-capacity 1), -c 1 -P 1", ("redis-proxy", misses_resp),
                        ("twemproxy", twem_port), bench(1, 1, N_LATENCY), 1.0))
    rows.append(compare("RESP misses (--cache-capacity 1), -c 50 -P 16", ("redis-proxy", misses_resp),
                        ("twemproxy", twem_port), bench(50, 16, N_THROUGHPUT), 1.0))
    log("forwarded commands ...")
    for test in ["set", "incr", "lpush", "hset"]:
        for clients, pipeline, n in [(1, 1, N_WRITES_LATENCY), (50, 16, N_WRITES)]:
            run = lambda target, c=clients, p=pipeline, n=n, t=test: redis_benchmark(target[1], c, p, n, t)
            rows.append(compare(f"{test.upper()}, -c {clients} -P {pipeline}", ("redis-proxy", writes_resp),
                                ("twemproxy", twem_port), run, 1.0))
    log("the write barrier ...")
    undeclared = ["EVAL", "redis.call('INCR', 'undeclared:' .. ARGV[1]) return 1", "0", "__rand_int__"]
    for clients, pipeline, n in [(1, 1, N_WRITES_LATENCY), (50, 16, N_WRITES)]:
        run = lambda target, c=clients, p=pipeline, n=n: redis_benchmark(target[1], c, p, n, undeclared)
        rows.append(compare(f"EVAL of an undeclared key, -c {clients} -P {pipeline}: barrier cost",
                            ("tracking", writes_resp), ("--invalidation ttl", no_barrier_resp), run, 0.0))
    log("HTTP ...")
    rows.append(compare("HTTP, wrk -t2 -c50, random key of 10,000", ("redis-proxy", hits_http, "/get/"),
                        ("webdis", webdis_port, "/GET/"), http, 3.0))
    flask_http = lambda target: wrk(f"http://127.0.0.1:{target[1]}", target[2],
                                    WRK_SECONDS if target[0] == "redis-proxy" else N_FLASK_SECONDS)
    rows.append(compare("HTTP, wrk -t2 -c50, random key of 10,000", ("redis-proxy", hits_http, "/get/"),
                        ("Flask + cachetools (seed design)", flask_port, "/get/"), flask_http, 100.0))

    log(f"RSS with {RSS_KEYS:,} cached keys ...")
    rss = rss_row(redis_port)
    names = {hits_resp: "hits: redis-proxy", redis_port: "hits: Redis direct",
             misses_resp: "misses: redis-proxy", twem_port: "misses: twemproxy"}
    extra = {
        "cpu": {k: statistics.median(v) for k, v in cpu.items()},
        "rss": rss,
        "p50": [(names[port], statistics.median(v)) for port, v in P50.items() if port in names],
    }
    return rows, extra


def rss_row(redis_port):
    """The proxy's RSS holding RSS_KEYS cached 64-byte values, and what
    Redis spends on the same keys (its used memory before and after)."""
    used = lambda: int(re.search(rb"used_memory:(\d+)", redis_cli(redis_port, "INFO", "memory")).group(1))
    before = used()
    chunk = 100_000
    for start_at in range(0, RSS_KEYS, chunk):
        pipe(redis_port, b"".join(resp("SET", b"rss:%09d" % i, VALUE)
                                  for i in range(start_at, min(start_at + chunk, RSS_KEYS))))
    redis_bytes = used() - before
    p, _, port = proxy(redis_port, "--cache-capacity", str(RSS_KEYS), "--cache-ttl", "1h")
    empty = rss_mb(p.pid)
    for start_at in range(0, RSS_KEYS, chunk):
        pipe(port, b"".join(resp("GET", b"rss:%09d" % i) for i in range(start_at, min(start_at + chunk, RSS_KEYS))))
    entries = int(re.search(rb"cache_entries:(\d+)", redis_cli(port, "INFO", "proxy")).group(1))
    full = rss_mb(p.pid)
    return {"keys": RSS_KEYS, "entries": entries, "proxy_mb": full, "proxy_empty_mb": empty,
            "redis_mb": redis_bytes / 2**20}


def write(rows, extra):
    out = os.path.join(ROOT, "bench", "results", "latest.md")
    versions = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    twem = subprocess.run(["nutcracker", "-V"], capture_output=True, text=True)
    twem = (twem.stdout + twem.stderr).strip().splitlines()[0]
    lines = [
        "# Benchmark: one side-by-side run",
        "",
        f"- date: {time.strftime('%Y-%m-%d', time.gmtime())}",
        f"- machine: {os.cpu_count()} cores, {os.uname().sysname} {os.uname().release}; the load "
        "generators share the cores with every server",
        f"- workload: GET of {KEYS:,} keys holding {len(VALUE)}-byte values; redis-benchmark -r {KEYS} "
        f"(-n {N_LATENCY:,} at -c 1, -n {N_THROUGHPUT:,} at -c 50 -P 16); wrk {WRK_SECONDS} s on a random key",
        f"- versions: redis {versions}, {twem}; proxy at {git_head()}",
        f"- each row: {REPEATS} run{'s' if REPEATS > 1 else ''}, subject and reference one after the other; "
        "median (min-max) across the runs",
        "",
        "| workload | subject | req/s | reference | req/s | ratio | goal | met |",
        "|---|---|---:|---|---:|---:|---:|---|",
    ]
    for name, s, s_rps, r, r_rps, ratio, goal, median in rows:
        if goal:
            met, goal_text = ("yes" if median >= goal else "no"), f">= {goal:g}x"
        else:
            met, goal_text = "–", "–"
        lines.append(f"| {name} | {s} | {s_rps} | {r} | {r_rps} | {ratio} | {goal_text} | {met} |")
    lat = extra["p50"]
    if lat:
        lines += ["", "p50 latency at -c 1 (median of the runs, ms; redis-benchmark's own figure): " + ", ".join(
            f"{name} {value:.3f}" for name, value in lat)]
    cpu = extra["cpu"]
    rss = extra["rss"]
    lines += [
        "",
        "CPU time per request in the -c 50 -P 16 hit row (utime+stime from /proc/<pid>/stat, median): "
        f"redis-proxy {cpu.get('redis-proxy', 0):.2f} µs per GET, redis-server {cpu.get('Redis direct', 0):.2f} µs "
        "per GET.",
        "",
        f"RSS with {rss['keys']:,} cached {len(VALUE)}-byte values ({rss['entries']:,} entries held): "
        f"redis-proxy {rss['proxy_mb']:.0f} MB ({rss['proxy_empty_mb']:.0f} MB empty); Redis spends "
        f"{rss['redis_mb']:.0f} MB on the same keys (used_memory). Goal: no more than Redis: "
        f"{'met' if rss['proxy_mb'] <= rss['redis_mb'] else 'not met'}.",
    ]
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def git_head():
    r = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


if __name__ == "__main__":
    random.seed(1)
    main()

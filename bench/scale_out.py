#!/usr/bin/env python3
"""The scale-out half of `make bench`, written to bench/results/scale_out.md:

- Redis Cluster rows: a 3-master cluster on free ports (the same
  redis-server), 10,000 keys of 64-byte values; through the proxy
  (--redis-cluster) against `redis-benchmark --cluster` straight to the
  cluster: hits, misses (a proxy with --cache-capacity 1), and forwarded
  SET/INCR/LPUSH/HSET, at -c 1 and -c 50 -P 16. Each row REPEATS times,
  subject and reference one after the other; median (min-max) of the ratio.
- Across proxies: two proxies in front of one Redis; a SET through the
  first, then GETs through the second until it answers the new value. How
  long after the first proxy's reply the second one serves it, and how
  often its first read still saw the old value (read-your-writes holds per
  proxy; across proxies it takes the invalidation's trip).

Everything on 127.0.0.1; every load is bounded in count; only processes
this script started are stopped, by their PID. BENCH_QUICK=1: one
repetition, smaller counts.
"""

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import shutil
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as base  # noqa: E402  (the side-by-side run's helpers)

QUICK = base.QUICK
REPEATS = base.REPEATS
N_LATENCY = 10_000 if QUICK else 50_000
N_THROUGHPUT = 200_000 if QUICK else 1_000_000
ROUNDS = 500 if QUICK else 3_000
KEYS = base.KEYS


def cluster_benchmark(port, clients, pipeline, n, test, cluster):
    args = ["redis-benchmark", "-p", str(port), "-c", str(clients), "-P", str(pipeline), "-n", str(n),
            "-r", str(KEYS), "-q", "-t", test]
    if cluster:
        args.insert(1, "--cluster")
    out = subprocess.run(args, capture_output=True, text=True, timeout=600).stdout.replace("\r", "\n")
    import re
    found = re.findall(r"([0-9.]+) requests per second", out)
    return float(found[-1]) if found else 0.0


def start_cluster():
    ports = [base.free_port() for _ in range(3)]
    for p in ports:
        d = os.path.join(base.tempdir, f"node-{p}")
        os.makedirs(d)
        base.start(["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--cluster-enabled", "yes", "--cluster-port", str(base.free_port()),
                    "--cluster-config-file", "nodes.conf", "--dir", d, "--logfile", os.path.join(d, "log")],
                   "redis-server (cluster)", p)
    subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                    "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=120)
    deadline = time.time() + 60
    while time.time() < deadline:
        if all(b"cluster_state:ok" in base.redis_cli(p, "CLUSTER", "INFO") for p in ports):
            return ports
        time.sleep(0.2)
    raise SystemExit("the cluster never said ok")


def proxy(backend_args, *flags):
    http, resp_port, admin = base.free_port(), base.free_port(), base.free_port()
    base.start([base.PROXY, *backend_args, "--http-listen", f"127.0.0.1:{http}",
                "--resp-listen", f"127.0.0.1:{resp_port}", "--admin-listen", f"127.0.0.1:{admin}", *flags],
               "redis-proxy", resp_port)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1).status == 200:
                return resp_port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("a proxy never became ready")


def cluster_rows():
    ports = start_cluster()
    seeds = ["--redis-cluster", f"redis://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}"]
    hits = proxy(seeds)
    misses = proxy(seeds, "--cache-capacity", "1")
    writes = proxy(seeds, "--allow-writes")
    # redis-benchmark --cluster puts a hash tag in its keys (key:{tag}:n),
    # so the keys it reads straight from the cluster are loaded that way,
    # and those read through the proxy (key:n) through the proxy.
    base.log(f"loading {KEYS:,} keys into the cluster, twice ...")
    cluster_benchmark(ports[0], 50, 16, KEYS * 20, "set", True)
    cluster_benchmark(writes, 50, 16, KEYS * 20, "set", False)
    cluster_benchmark(hits, 50, 16, 200_000, "get", False)  # warm
    rows = []
    for name, port, tests in [("hits", hits, ["get"]), ("misses (--cache-capacity 1)", misses, ["get"]),
                              ("forwarded", writes, ["set", "incr", "lpush", "hset"])]:
        for test in tests:
            for clients, pipeline, n in [(1, 1, N_LATENCY), (50, 16, N_THROUGHPUT)]:
                label = f"{test.upper()} {name}, -c {clients} -P {pipeline}"
                base.log(f"  {label}")
                run = lambda target, c=clients, p=pipeline, n=n, t=test: cluster_benchmark(
                    target[1], c, p, n, t, target[0] != "redis-proxy")
                rows.append(base.compare(label, ("redis-proxy", port), ("cluster direct (--cluster)", ports[0]),
                                         run, 0.0))
    return rows


class Resp:
    """A minimal RESP2 client: one command, one reply, strings only."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.s.makefile("rb")

    def call(self, *args):
        self.s.sendall(base.resp(*args))
        line = self.f.readline()
        if line.startswith(b"$"):
            n = int(line[1:])
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data
        if line.startswith(b"-"):
            raise RuntimeError(line.decode().strip())
        return line[1:].strip()


def across_proxies():
    redis_port = base.free_port()
    base.start(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", base.tempdir, "--logfile", os.path.join(base.tempdir, "r.log")],
               "redis-server", redis_port)
    url = ["--redis-url", f"redis://127.0.0.1:{redis_port}/0"]
    a, b = Resp(proxy(url, "--allow-writes")), Resp(proxy(url))
    delays, stale_first = [], 0
    for i in range(ROUNDS):
        k = b"rw:%d" % (i % 100)
        v = b"%d" % i
        b.call("GET", k)  # cached by the second proxy before the write
        a.call("SET", k, v)
        acked = time.perf_counter()
        first = True
        while True:
            got = b.call("GET", k)
            if got == v:
                delays.append((time.perf_counter() - acked) * 1e6)
                break
            if first:
                stale_first += 1
            first = False
            if time.perf_counter() - acked > 5:
                raise SystemExit("the second proxy never served the write")
    delays.sort()
    pct = lambda q: delays[min(len(delays) - 1, int(len(delays) * q))]
    return {"rounds": ROUNDS, "p50": pct(0.5), "p99": pct(0.99), "max": delays[-1], "stale_first": stale_first}


def main():
    base.tempdir = tempfile.mkdtemp(prefix="redis-proxy-bench-scale-")
    try:
        rows = cluster_rows()
        base.stop_all()
        base.started.clear()
        cross = across_proxies()
    finally:
        base.stop_all()
        shutil.rmtree(base.tempdir, ignore_errors=True)
    lines = [
        "# Benchmark: scale-out",
        "",
        f"- date: {time.strftime('%Y-%m-%d', time.gmtime())}",
        f"- machine: {os.cpu_count()} cores; the cluster's three masters, the proxies and redis-benchmark share them",
        f"- cluster rows: {KEYS:,} keys of 3 bytes (redis-benchmark's SET), -n {N_LATENCY:,} at -c 1, "
        f"-n {N_THROUGHPUT:,} at -c 50 -P 16; {REPEATS} run(s), median (min-max)",
        f"- proxy at {base.git_head()}",
        "",
        "| workload | subject | req/s | reference | req/s | ratio |",
        "|---|---|---:|---|---:|---:|",
    ]
    for name, s, s_rps, r, r_rps, ratio, _goal, _median in rows:
        lines.append(f"| {name} | {s} | {s_rps} | {r} | {r_rps} | {ratio} |")
    lines += [
        "",
        f"Across two proxies in front of one Redis ({cross['rounds']:,} rounds): a SET through the first, then GETs "
        f"through the second until it serves the new value. From the first proxy's reply to the second one "
        f"serving it: p50 {cross['p50']:.0f} µs, p99 {cross['p99']:.0f} µs, max {cross['max']:.0f} µs; the "
        f"second proxy's first read still saw the old value in {cross['stale_first']} of {cross['rounds']:,} rounds.",
    ]
    out = os.path.join(base.ROOT, "bench", "results", "scale_out.md")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

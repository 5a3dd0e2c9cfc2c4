#!/usr/bin/env bash
# Profiles the proxy under one workload with perf (software clock sampling:
# these machines have no hardware counters) and writes a flamegraph to
# bench/results/flame-<workload>.svg (the folded stacks in target/profile/) and
# the top of the flat profile to stdout. Workloads: hits-p16, hits-c1, misses-p16, http.
#   bench/profile.sh hits-p16
# Needs perf (Debian linux-perf) and inferno (cargo install inferno).
set -euo pipefail
cd "$(dirname "$0")/.."
workload=${1:-hits-p16}
CARGO_TARGET_DIR=target/prof RUSTFLAGS="-C force-frame-pointers=yes" \
  CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release --quiet
bin=target/prof/release/redis-proxy
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
rp=$(port); hp=$(port); pp=$(port); ap=$(port)
start_redis "$rp"
python3 - "$rp" <<'PY' | redis-cli -p "$rp" --pipe >/dev/null
import sys
v = b"v" * 64
out = sys.stdout.buffer
for i in range(10000):
    k = b"key:%012d" % i
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
PY
flags=()
[ "$workload" = misses-p16 ] && flags=(--cache-capacity 1)
"$bin" --redis-url "redis://127.0.0.1:$rp/0" --http-listen "127.0.0.1:$hp" --resp-listen "127.0.0.1:$pp" \
  --admin-listen "127.0.0.1:$ap" "${flags[@]}" 2>/dev/null &
proxy=$!; pids+=($proxy); wait_port "$pp"; sleep 0.5
redis-benchmark -p "$pp" -c 50 -P 16 -n 200000 -r 10000 -t get -q >/dev/null
case $workload in
  hits-p16|misses-p16) load=(redis-benchmark -p "$pp" -c 50 -P 16 -n 3000000 -r 10000 -t get -q) ;;
  hits-c1) load=(redis-benchmark -p "$pp" -c 1 -n 100000 -r 10000 -t get -q) ;;
  http)
    printf 'math.randomseed(os.time())\nrequest = function() return wrk.format("GET", string.format("/get/key:%%012d", math.random(0, 9999))) end\n' >"$dir/r.lua"
    load=(wrk -t2 -c50 -d8s -s "$dir/r.lua" "http://127.0.0.1:$hp") ;;
  *) echo "unknown workload $workload" >&2; exit 2 ;;
esac
perf record -F 1999 -g -p "$proxy" -o "$dir/perf.data" -- sleep 6 >/dev/null 2>&1 &
rec=$!
"${load[@]}" | tail -3 >&2 &
loadpid=$!
wait "$rec"; wait "$loadpid" || true
perf script -i "$dir/perf.data" 2>/dev/null | inferno-collapse-perf >"$dir/folded"
inferno-flamegraph --title "redis-proxy: $workload" <"$dir/folded" >"bench/results/flame-$workload.svg"
echo "bench/results/flame-$workload.svg" >&2
mkdir -p target/profile && cp "$dir/folded" "target/profile/folded-$workload.txt"
perf report -i "$dir/perf.data" --no-children --sort symbol --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -40 || true

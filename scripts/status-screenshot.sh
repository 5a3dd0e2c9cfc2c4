#!/usr/bin/env bash
# Redraws docs/status-page.png, the README's picture of the status page:
# a private redis-server and a release proxy on free ports, two minutes of
# mixed traffic (hot keys, a long tail that evicts, HTTP and RESP, writes
# straight to Redis that invalidate, forwarded commands, the XSS key), then
# headless Chromium's screenshot. Everything on 127.0.0.1; every load is
# bounded; only the processes started here are stopped, by PID.
#   scripts/status-screenshot.sh [seconds of traffic, default 120]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-120}
cargo build --release --quiet
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
rp=$(port); hp=$(port); pp=$(port); ap=$(port)
start_redis "$rp"
python3 - "$rp" <<'PY' | redis-cli -p "$rp" --pipe >/dev/null
import sys
out = sys.stdout.buffer
for i in range(20000):
    k = b"key:%012d" % i
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$64\r\n%s\r\n" % (len(k), k, b"v" * 64))
for k in [b"user:42", b"session:7f3a", b"<img src=x onerror=alert(1)>"]:
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$5\r\nhello\r\n" % (len(k), k))
PY
target/release/redis-proxy --redis-url "redis://127.0.0.1:$rp/0" --http-listen "127.0.0.1:$hp" \
  --resp-listen "127.0.0.1:$pp" --admin-listen "127.0.0.1:$ap" --allow-writes \
  --cache-capacity 5000 --cache-ttl 30s 2>"$dir/proxy.log" &
pids+=($!); wait_port "$ap"
end=$((SECONDS + seconds))
round=0
while [ $SECONDS -lt $end ]; do
  round=$((round + 1))
  # A hot set of 12 keys, a long tail over 20,000 (evictions), pipelined.
  redis-benchmark -p "$pp" -c 8 -n $((4000 + (round % 7) * 1500)) -r 12 -q -t get >/dev/null
  redis-benchmark -p "$pp" -c 4 -P 4 -n 6000 -r 20000 -q -t get >/dev/null
  for _ in $(seq 1 $((20 + round % 5 * 10))); do
    curl -s "http://127.0.0.1:$hp/get/user:42" >/dev/null
    curl -s "http://127.0.0.1:$hp/get/session:7f3a" >/dev/null
  done
  curl -s "http://127.0.0.1:$hp/get/absent:$round" >/dev/null
  redis-cli -p "$pp" GET '<img src=x onerror=alert(1)>' >/dev/null
  redis-cli -p "$pp" INCR visits >/dev/null
  redis-cli -p "$pp" LPUSH recent "$round" >/dev/null
  # A write straight to Redis: its invalidation reaches the proxy.
  redis-cli -p "$rp" SET user:42 "v$round" >/dev/null
  sleep 0.5
done
sleep 3
out=$PWD/docs/status-page.png
timeout -k 5 90 chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars \
  --disable-breakpad --no-first-run --user-data-dir="$dir/chromium" --window-size=1280,1750 \
  --virtual-time-budget=4000 --screenshot="$out" "http://127.0.0.1:$ap/" 2>/dev/null
echo "$out" >&2

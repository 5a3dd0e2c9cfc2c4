#!/usr/bin/env bash
# `make run`: the proxy in release mode. With none of REDIS_URL, REDIS_HOST
# or REDIS_CLUSTER set, a private redis-server (no persistence) is started on
# a free port first and stopped when the proxy exits.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
bin=target/release/redis-proxy

if [ -n "${REDIS_URL:-}" ] || [ -n "${REDIS_HOST:-}" ] || [ -n "${REDIS_CLUSTER:-}" ]; then
  exec "$bin" "$@"
fi

./scripts/ensure-redis.sh
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$dir" --logfile "$dir/redis.log" --daemonize no &
redis_pid=$!
cleanup() {
  kill "$redis_pid" 2>/dev/null || true
  wait "$redis_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.05
done
echo "private redis-server on 127.0.0.1:$port (pid $redis_pid), stopped when the proxy exits" >&2
export REDIS_URL="redis://127.0.0.1:$port/0"
# Not exec: the trap must run after the proxy exits. Forward TERM and INT to
# it as they came (SIGTERM waits --shutdown-delay; Ctrl-C does not).
"$bin" "$@" &
proxy_pid=$!
signalled=0
trap 'signalled=1; kill -TERM "$proxy_pid" 2>/dev/null || true' TERM
trap 'signalled=1; kill -INT "$proxy_pid" 2>/dev/null || true' INT
status=0
wait "$proxy_pid" || status=$?
# A signal caught by the trap ends `wait` early: wait again for the drain to
# finish and take the proxy's own exit status (bash keeps it even when the
# proxy has already been reaped).
if [ "$signalled" = 1 ]; then
  status=0
  wait "$proxy_pid" || status=$?
fi
exit "$status"

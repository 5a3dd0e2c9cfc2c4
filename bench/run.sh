#!/usr/bin/env bash
# `make bench`: one side-by-side run on this machine, all on 127.0.0.1:
# the proxy against Redis direct, twemproxy (nutcracker) and webdis, for a
# hot key. Writes bench/results/latest.md. Every load is bounded in count or
# time and stops by itself. Ratios within one run are what to compare.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${BENCH_SECONDS:-5}
REQUESTS=${BENCH_REQUESTS:-200000}
CLIENTS=${BENCH_CLIENTS:-50}
out=bench/results/latest.md

need=()
for pair in redis-server:redis-server redis-benchmark:redis-tools wrk:wrk nutcracker:nutcracker webdis:webdis; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release --quiet
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }

redis_port=$(free_port); http_port=$(free_port); admin_port=$(free_port)
twem_port=$(free_port); twem_stats=$(free_port); webdis_port=$(free_port)

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" --logfile "$dir/redis.log" &
pids+=($!)
wait_port "$redis_port"
value=$(head -c 100 /dev/zero | tr '\0' x)
redis-cli -p "$redis_port" set hot "$value" >/dev/null
# The keys redis-benchmark -t get -r 10000 asks for: key:000000000000 ...
awk -v v="$value" 'BEGIN { for (i = 0; i < 10000; i++) printf "SET key:%012d %s\r\n", i, v }' \
  | redis-cli -p "$redis_port" --pipe >/dev/null

resp_port=$(free_port)
target/release/redis-proxy --redis-url "redis://127.0.0.1:$redis_port/0" \
  --http-listen "127.0.0.1:$http_port" --admin-listen "127.0.0.1:$admin_port" \
  --resp-listen "127.0.0.1:$resp_port" 2>"$dir/proxy.log" &
pids+=($!)
wait_port "$http_port"
wait_port "$resp_port"

cat >"$dir/twem.yml" <<YML
bench:
  listen: 127.0.0.1:$twem_port
  redis: true
  servers:
    - 127.0.0.1:$redis_port:1
YML
nutcracker -c "$dir/twem.yml" -s "$twem_stats" -a 127.0.0.1 -o "$dir/twem.log" &
pids+=($!)
wait_port "$twem_port"

cat >"$dir/webdis.json" <<JSON
{"redis_host": "127.0.0.1", "redis_port": $redis_port, "http_host": "127.0.0.1",
 "http_port": $webdis_port, "threads": 2, "pool_size": 20, "daemonize": false,
 "websockets": false, "database": 0, "verbosity": 0, "logfile": "$dir/webdis.log"}
JSON
webdis "$dir/webdis.json" &
pids+=($!)
wait_port "$webdis_port"

# Warm the proxy's cache.
curl -sf "http://127.0.0.1:$http_port/get/hot" >/dev/null

wrk_rps() { wrk -t1 -c"$CLIENTS" -d"${DURATION}s" "$@" | awk '/Requests\/sec/ {printf "%d", $2}'; }
bench_rps() {  # port, pipeline, then the workload: GET hot, or -t get -r 10000
  local port=$1 pipeline=$2
  shift 2
  timeout 120 redis-benchmark -p "$port" -c "$CLIENTS" -n "$REQUESTS" -P "$pipeline" -q "$@" \
    | tr '\r' '\n' | awk '/requests per second/ {for (i=1;i<=NF;i++) if ($i ~ /^[0-9.]+$/) {printf "%d", $i; exit}}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

echo "HTTP ..." >&2
http_proxy=$(wrk_rps "http://127.0.0.1:$http_port/get/hot")
http_webdis=$(wrk_rps "http://127.0.0.1:$webdis_port/GET/hot")

echo "RESP ..." >&2
declare -A resp
for w in hot rand miss; do
  case $w in
    hot) load=(GET hot) ;;
    rand) load=(-t get -r 10000) ;;
    miss) load=(-t get -r 100000000) ;;  # absent keys: nil is never cached
  esac
  # Warm the proxy's cache with one pass before measuring.
  bench_rps "$resp_port" 16 "${load[@]}" >/dev/null
  for p in 1 16; do
    resp[${w}_redis_$p]=$(bench_rps "$redis_port" "$p" "${load[@]}")
    resp[${w}_twem_$p]=$(bench_rps "$twem_port" "$p" "${load[@]}")
    resp[${w}_proxy_$p]=$(bench_rps "$resp_port" "$p" "${load[@]}")
  done
done

{
  echo "# Benchmark: one side-by-side run"
  echo
  echo "- date: $(date -u +%Y-%m-%d)"
  echo "- machine: $(nproc) cores, $(uname -sr); the load generator shares the cores with the servers"
  echo "- workload: GET of 100-byte values, $CLIENTS connections; HTTP: wrk ${DURATION}s on one hot key; RESP: redis-benchmark -n $REQUESTS"
  echo "- versions: $(redis-server --version | awk '{print $3}'), $(nutcracker -V 2>&1 | head -1), webdis $(dpkg-query -W -f='${Version}' webdis 2>/dev/null)"
  echo
  echo "## HTTP (requests/s; ratio to webdis)"
  echo
  echo "| server | req/s | ratio |"
  echo "|---|---:|---:|"
  echo "| redis-proxy \`/get/hot\` | $http_proxy | $(ratio "$http_proxy" "$http_webdis") |"
  echo "| webdis \`/GET/hot\` | $http_webdis | 1.00 |"
  echo
  for w in hot rand miss; do
    case $w in
      hot) title='`GET hot` (one key)' ;;
      rand) title='`-t get -r 10000` (10,000 keys, all cached after warm-up)' ;;
      miss) title='`-t get -r 100000000` (absent keys: every GET is a miss)' ;;
    esac
    echo "## RESP: redis-benchmark $title, requests/s and ratio to Redis direct"
    echo
    echo "| server | -P 1 | ratio | -P 16 | ratio |"
    echo "|---|---:|---:|---:|---:|"
    echo "| Redis direct | ${resp[${w}_redis_1]} | 1.00 | ${resp[${w}_redis_16]} | 1.00 |"
    echo "| redis-proxy | ${resp[${w}_proxy_1]} | $(ratio "${resp[${w}_proxy_1]}" "${resp[${w}_redis_1]}") | ${resp[${w}_proxy_16]} | $(ratio "${resp[${w}_proxy_16]}" "${resp[${w}_redis_16]}") |"
    echo "| twemproxy | ${resp[${w}_twem_1]} | $(ratio "${resp[${w}_twem_1]}" "${resp[${w}_redis_1]}") | ${resp[${w}_twem_16]} | $(ratio "${resp[${w}_twem_16]}" "${resp[${w}_redis_16]}") |"
    echo
  done
} >"$out"
cat "$out"

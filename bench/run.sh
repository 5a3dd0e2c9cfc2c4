#!/usr/bin/env bash
# `make bench`: installs what the side-by-side run needs (redis, wrk,
# twemproxy, webdis; a virtualenv for the Flask replica is made by run.py),
# builds the proxy in release mode and runs bench/run.py, which writes
# bench/results/latest.md, then bench/scale_out.py (a Redis Cluster behind
# the proxy, and two proxies), which writes bench/results/scale_out.md.
# BENCH_QUICK=1 for a short run.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for pair in redis-server:redis-server redis-benchmark:redis-tools wrk:wrk nutcracker:nutcracker webdis:webdis; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet
python3 bench/run.py
# Redis Cluster rows and the across-proxies delay: bench/results/scale_out.md
exec python3 bench/scale_out.py

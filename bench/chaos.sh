#!/usr/bin/env bash
# The chaos test (tests/chaos.rs), longer than in `make test`: release
# build, CHAOS_ROUNDS (default 20) rounds of SIGKILL + restart, SIGSTOP past
# --backend-timeout and CLIENT KILL TYPE normal, under continuous HTTP and
# RESP readers and direct writers. Prints the report and writes it to
# bench/results/chaos.md.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/ensure-redis.sh
export CHAOS_ROUNDS=${CHAOS_ROUNDS:-20}
report=$(mktemp)
trap 'rm -f "$report"' EXIT
status=0
CHAOS_REPORT="$report" cargo test --release --test chaos -- --nocapture || status=$?
{
  echo "# Chaos run, $(date -u +%Y-%m-%d)"
  echo
  echo "\`bench/chaos.sh\` on $(nproc) cores, release build, everything on 127.0.0.1."
  echo
  cat "$report"
} >bench/results/chaos.md
cat bench/results/chaos.md
exit "$status"

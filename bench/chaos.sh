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
# shellcheck source=bench/report.sh
. bench/report.sh
run_report chaos Chaos

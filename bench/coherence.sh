#!/usr/bin/env bash
# The coherence test (tests/coherence.rs), longer and wider than in
# `make test`: release build, 60 s, 6 writers x 500 keys, 8 readers, with
# Redis evicting, two FLUSHALLs and a restart. Prints the report and writes
# it to bench/results/coherence.md. Override with COHERENCE_SECS,
# COHERENCE_WRITERS, COHERENCE_KEYS_PER_WRITER, COHERENCE_READERS_PER_KIND,
# COHERENCE_INVALIDATION=ttl (to see what the test reports without tracking).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/ensure-redis.sh
export COHERENCE_SECS=${COHERENCE_SECS:-60}
export COHERENCE_WRITERS=${COHERENCE_WRITERS:-6}
export COHERENCE_KEYS_PER_WRITER=${COHERENCE_KEYS_PER_WRITER:-500}
export COHERENCE_READERS_PER_KIND=${COHERENCE_READERS_PER_KIND:-2}
# shellcheck source=bench/report.sh
. bench/report.sh
run_report coherence Coherence

#!/usr/bin/env bash
# The cluster coherence run (tests/cluster.rs,
# two_proxies_stay_coherent_through_resharding_and_failovers) longer than in
# `make test`: release build, CLUSTER_FAULT_ROUNDS rounds (default 4) of a
# reshard of 1,000 slots, a manual failover, a master frozen until its
# replica takes over, a master killed, and FLUSHALL, with two proxies read
# throughout. Prints the report and writes it to
# bench/results/cluster_coherence.md.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/ensure-test-deps.sh
export CLUSTER_FAULT_ROUNDS=${CLUSTER_FAULT_ROUNDS:-4}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
cargo test --release --test cluster two_proxies_stay_coherent -- --nocapture 2>&1 | tee "$out" || status=$?
{
  echo "# Cluster coherence run, $(date -u +%Y-%m-%d)"
  echo
  echo "\`bench/cluster_coherence.sh\` on $(nproc) cores, release build, everything on 127.0.0.1:"
  echo "a cluster of 3 masters and 3 replicas (node-timeout 2 s), two proxies (--tracking-lease 1s),"
  echo "3 writers straight to the cluster, 3 readers per proxy (RESP GET, MGET of 4, HTTP GET)."
  echo
  echo '```'
  grep -E '^\[|^proxy|faults in' "$out" || true
  echo '```'
} >bench/results/cluster_coherence.md
cat bench/results/cluster_coherence.md
exit "$status"

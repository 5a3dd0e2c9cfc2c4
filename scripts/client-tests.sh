#!/usr/bin/env bash
# Runs every client-library script in tests/clients/ against two
# Redis-protocol servers on 127.0.0.1 (say a real redis-server and the proxy
# in front of it) and diffs their transcripts.
#
#   scripts/client-tests.sh PORT_A PORT_B
#
# Installs the client libraries first when missing (scripts/ensure-clients.sh).
# Exits non-zero when a script fails on either side or when any two
# transcripts differ; the transcripts are kept in target/clients/transcripts/.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ne 2 ]; then
  echo "usage: $0 PORT_A PORT_B" >&2
  exit 2
fi
port_a=$1
port_b=$2

./scripts/ensure-clients.sh

out=target/clients/transcripts
mkdir -p "$out"
python=target/clients/venv/bin/python

# name and command line (the port is appended)
scripts=(
  "redis_py|$python tests/clients/redis_py.py"
  "node_redis|node tests/clients/node_redis.mjs"
  "ioredis|node tests/clients/ioredis.mjs"
)

# Runs one script against one port; the transcript goes to $out/NAME.PORT.txt,
# stderr to $out/NAME.PORT.err. A hard limit on top of the scripts' own timeouts.
run_one() {
  local name=$1 cmd=$2 port=$3 rc=0
  timeout -k 5 120 $cmd "$port" >"$out/$name.$port.txt" 2>"$out/$name.$port.err" || rc=$?
  if [ "$rc" != 0 ]; then
    echo "FAIL $name against 127.0.0.1:$port exited $rc" >&2
    sed 's/^/    stderr: /' "$out/$name.$port.err" | tail -n 20 >&2
  fi
  return "$rc"
}

passed=0
failed=0
for entry in "${scripts[@]}"; do
  name=${entry%%|*}
  cmd=${entry#*|}
  ok=1
  a=$out/$name.$port_a.txt
  b=$out/$name.$port_b.txt
  rm -f "$out/$name.diff"
  run_one "$name" "$cmd" "$port_a" || ok=0
  run_one "$name" "$cmd" "$port_b" || ok=0
  if [ "$ok" = 0 ]; then
    # A failed run's transcript ends where it stopped: show that, not a diff.
    for t in "$a" "$b"; do
      echo "    last lines of $t:" >&2
      tail -n 3 "$t" | sed 's/^/      /' >&2
    done
  elif ! diff -u --label "$name @ $port_a" --label "$name @ $port_b" "$a" "$b" >"$out/$name.diff"; then
    ok=0
    echo "DIFF $name: transcripts against $port_a and $port_b differ:" >&2
    cat "$out/$name.diff" >&2
  fi
  if [ "$ok" = 1 ]; then
    echo "ok   $name ($(wc -l <"$a") lines, same against $port_a and $port_b)"
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
done

echo "client-tests: $passed passed, $failed failed"
[ "$failed" = 0 ]

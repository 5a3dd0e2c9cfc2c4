# Sourced by bench/chaos.sh and bench/coherence.sh. run_report TEST TITLE
# runs tests/TEST.rs with the release build, its report written to the
# file that TEST_REPORT (upper case) names, keeps the report as
# bench/results/TEST.md under "TITLE run, <date>", prints it, and returns
# the test's status.
run_report() {
  local test=$1 title=$2 report status=0
  report=$(mktemp)
  # shellcheck disable=SC2064 # the file's name, now
  trap "rm -f '$report'" EXIT
  env "${test^^}_REPORT=$report" cargo test --release --test "$test" -- --nocapture || status=$?
  {
    echo "# $title run, $(date -u +%Y-%m-%d)"
    echo
    echo "\`bench/$test.sh\` on $(nproc) cores, release build, everything on 127.0.0.1."
    echo
    cat "$report"
  } >"bench/results/$test.md"
  cat "bench/results/$test.md"
  return "$status"
}

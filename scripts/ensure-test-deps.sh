#!/usr/bin/env bash
# What `make test` needs beyond Rust: redis-server, redis-tools, haproxy
# (the many-proxies test), promtool from the prometheus package (the
# alert rules' check; no Prometheus server is started) and chromium (the
# status page's test, headless). Debian/Ubuntu;
# `apt-get update` runs once, only when something has to be installed.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "installing ${missing[*]} ..." >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# The packages' services (a Prometheus server on :9090, haproxy, Redis on
# :6379) are not started: the tests start what they need on free ports.
# policy-rc.d answering 101 is Debian's way of saying so, for this install.
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  made_policy=1
fi
status=0
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
[ -z "$made_policy" ] || $sudo rm -f "$policy"
exit "$status"

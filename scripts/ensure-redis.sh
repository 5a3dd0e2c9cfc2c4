#!/usr/bin/env bash
# Installs redis-server and redis-cli when they are missing (Debian/Ubuntu).
# Runs `apt-get update` once, only when something has to be installed.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
  exit 0
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "installing redis-server and redis-tools ..." >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq redis-server redis-tools >/dev/null
command -v redis-server >/dev/null

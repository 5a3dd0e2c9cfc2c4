#!/usr/bin/env bash
# Installs the client libraries that tests/clients/ drives, when missing, into
# private directories under target/clients/ (nothing global is touched):
#   target/clients/venv               Python venv with redis-py
#   target/clients/node/node_modules  node-redis and ioredis
# Idempotent: when the pinned versions are already there it does nothing,
# quickly and quietly. Needs python3 (with venv) and node/npm.
set -euo pipefail
cd "$(dirname "$0")/.."

REDIS_PY_VERSION=8.2.0
NODE_REDIS_VERSION=6.4.0
IOREDIS_VERSION=6.1.0

dir=target/clients
venv=$dir/venv
node_dir=$dir/node

have_redis_py() {
  [ -x "$venv/bin/python" ] || return 1
  compgen -G "$venv/lib/python*/site-packages/redis-$REDIS_PY_VERSION.dist-info" >/dev/null
}

# The "version" of an installed npm package, read from its package.json.
npm_version() {
  local pj="$node_dir/node_modules/$1/package.json"
  [ -f "$pj" ] || return 0
  sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$pj" | head -n 1
}

mkdir -p "$dir"

if ! have_redis_py; then
  echo "installing redis-py $REDIS_PY_VERSION into $venv ..." >&2
  if [ ! -x "$venv/bin/python" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "redis==$REDIS_PY_VERSION"
  have_redis_py
fi

if [ "$(npm_version redis)" != "$NODE_REDIS_VERSION" ] ||
  [ "$(npm_version ioredis)" != "$IOREDIS_VERSION" ]; then
  echo "installing node-redis $NODE_REDIS_VERSION and ioredis $IOREDIS_VERSION into $node_dir ..." >&2
  command -v npm >/dev/null 2>&1 || {
    echo "npm is missing: install nodejs (20+) and npm" >&2
    exit 1
  }
  mkdir -p "$node_dir"
  # A package.json of its own, so npm never walks up into the repository.
  [ -f "$node_dir/package.json" ] ||
    printf '{\n  "name": "redis-proxy-client-tests",\n  "private": true\n}\n' >"$node_dir/package.json"
  npm install --prefix "$node_dir" --no-audit --no-fund --loglevel=error \
    --save-exact "redis@$NODE_REDIS_VERSION" "ioredis@$IOREDIS_VERSION" >/dev/null
  [ "$(npm_version redis)" = "$NODE_REDIS_VERSION" ]
  [ "$(npm_version ioredis)" = "$IOREDIS_VERSION" ]
fi

#!/usr/bin/env bash
# Installs ganache (the local EVM node for the anchor tests) from npm into a
# cache outside the clone, and prints the binary's path. Reused when present.
#
#   INKAN_CACHE        cache root (default: ~/.cache/inkan)
#   INKAN_GANACHE_BIN  use this binary instead (nothing is installed)
set -euo pipefail

GANACHE_VERSION=7.9.2

if [[ -n "${INKAN_GANACHE_BIN:-}" ]]; then
  echo "$INKAN_GANACHE_BIN"
  exit 0
fi
cache="${INKAN_CACHE:-$HOME/.cache/inkan}"
root="$cache/ganache-$GANACHE_VERSION"
bin="$root/node_modules/.bin/ganache"
if [[ -x "$bin" ]]; then
  echo "$bin"
  exit 0
fi
if ! command -v npm >/dev/null; then
  if [[ "$(id -u)" == 0 ]]; then
    (apt-get update -qq && apt-get install -y -qq nodejs npm) >/dev/null
  else
    echo "needs node and npm: sudo apt-get install -y nodejs npm" >&2
    exit 1
  fi
fi
mkdir -p "$root"
echo "installing ganache $GANACHE_VERSION into $root (first run only)" >&2
npm install --prefix "$root" --no-audit --no-fund --loglevel=error "ganache@$GANACHE_VERSION" >&2
echo "$bin"

#!/usr/bin/env bash
# Installs ganache (the local EVM node for the anchor tests) from npm into a
# cache outside the clone, and prints the binary's path. Reused when present.
#
#   INKAN_CACHE        cache root (default: ~/.cache/inkan)
#   INKAN_GANACHE_BIN  use this binary instead (nothing is installed)
set -euo pipefail
source "$(dirname "$0")/lib/npm-cache.sh"

GANACHE_VERSION=7.9.2

if [[ -n "${INKAN_GANACHE_BIN:-}" ]]; then
  echo "$INKAN_GANACHE_BIN"
  exit 0
fi
root="$(npm_cached_install ganache "$GANACHE_VERSION" node_modules/.bin/ganache)"
echo "$root/node_modules/.bin/ganache"

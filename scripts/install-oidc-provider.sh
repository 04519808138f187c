#!/usr/bin/env bash
# Installs oidc-provider (node-oidc-provider, a certified OpenID Connect
# implementation) from npm into a cache outside the clone, for the identity
# tests, and prints the directory that holds its node_modules. Reused when
# present. scripts/oidc-provider.mjs runs it.
#
#   INKAN_CACHE              cache root (default: ~/.cache/inkan)
#   INKAN_OIDC_PROVIDER_DIR  use this installation instead (nothing is installed)
set -euo pipefail
source "$(dirname "$0")/lib/npm-cache.sh"

OIDC_PROVIDER_VERSION=9.13.3

if [[ -n "${INKAN_OIDC_PROVIDER_DIR:-}" ]]; then
  echo "$INKAN_OIDC_PROVIDER_DIR"
  exit 0
fi
npm_cached_install oidc-provider "$OIDC_PROVIDER_VERSION" node_modules/oidc-provider/package.json

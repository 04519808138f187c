#!/usr/bin/env bash
# Installs oidc-provider (node-oidc-provider, a certified OpenID Connect
# implementation) from npm into a cache outside the clone, for the identity
# tests, and prints the directory that holds its node_modules. Reused when
# present. scripts/oidc-provider.mjs runs it.
#
#   INKAN_CACHE              cache root (default: ~/.cache/inkan)
#   INKAN_OIDC_PROVIDER_DIR  use this installation instead (nothing is installed)
set -euo pipefail

OIDC_PROVIDER_VERSION=9.13.3

if [[ -n "${INKAN_OIDC_PROVIDER_DIR:-}" ]]; then
  echo "$INKAN_OIDC_PROVIDER_DIR"
  exit 0
fi
cache="${INKAN_CACHE:-$HOME/.cache/inkan}"
root="$cache/oidc-provider-$OIDC_PROVIDER_VERSION"
if [[ -f "$root/node_modules/oidc-provider/package.json" ]]; then
  echo "$root"
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
echo "installing oidc-provider $OIDC_PROVIDER_VERSION into $root (first run only)" >&2
npm install --prefix "$root" --no-audit --no-fund --loglevel=error "oidc-provider@$OIDC_PROVIDER_VERSION" >&2
echo "$root"

#!/usr/bin/env bash
# Installs Helios FHIR Server (the upstream used by the demo and the tests)
# into a cache outside the clone, and prints the binary's path.
# Reused when present: a fresh machine builds it once (~20 min on 2 cores).
#
#   INKAN_CACHE    cache root (default: ~/.cache/inkan)
#   INKAN_HFS_BIN  use this binary instead (nothing is installed)
set -euo pipefail

HFS_VERSION=0.2.7
# Only the R4 model and the SQLite backend: the UI and the other FHIR
# releases are not needed and roughly double the build time.
HFS_FEATURES=R4,sqlite

if [[ -n "${INKAN_HFS_BIN:-}" ]]; then
  echo "$INKAN_HFS_BIN"
  exit 0
fi

cache="${INKAN_CACHE:-$HOME/.cache/inkan}"
root="$cache/hfs-$HFS_VERSION-r4-sqlite"
bin="$root/bin/hfs"
if [[ -x "$bin" ]]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$cache"
echo "installing helios-hfs $HFS_VERSION into $root (first run only; takes a while)" >&2
# A separate target dir so the build does not collide with the project's.
CARGO_TARGET_DIR="$cache/hfs-build" cargo install --locked "helios-hfs@$HFS_VERSION" \
  --no-default-features --features "$HFS_FEATURES" --root "$root" >&2
rm -rf "$cache/hfs-build"
echo "$bin"

#!/usr/bin/env bash
# Installs Helios FHIR Server (the upstream used by the demo and the tests)
# into a cache outside the clone, and prints the binary's path.
# Reused when present: a fresh machine builds it once (about 25 minutes on
# 2 cores), showing a one-line progress count; the full cargo output goes to
# a log file whose path is printed.
#
#   INKAN_CACHE    cache root (default: ~/.cache/inkan)
#   INKAN_HFS_BIN  use this binary instead (nothing is installed)
set -euo pipefail

HFS_VERSION=0.2.7
# Only the R4 model and the SQLite backend: the UI and the other FHIR
# releases are not needed and roughly double the build time.
HFS_FEATURES=R4,sqlite
# Crates compiled for these features (counted on a full build), for the
# progress line.
HFS_CRATES=409

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
log="$cache/hfs-build.log"
cores="$(nproc)"
minutes=$((50 / cores)); ((minutes >= 5)) || minutes=5
{
  echo "Building Helios FHIR Server $HFS_VERSION, the upstream for the demo and the tests, into $root"
  echo "  first run only: about $minutes minutes on $cores cores; later runs reuse it"
  echo "  full build log: $log"
} >&2

# One progress line from cargo's "Compiling <crate>" lines: rewritten in
# place on a terminal, a line every 50 crates otherwise.
progress() {
  local line n=0 shown=0 tty=0 start=$SECONDS
  [[ -t 2 ]] && tty=1
  while IFS= read -r line; do
    printf '%s\n' "$line" >&3
    [[ "$line" =~ ^[[:space:]]*Compiling[[:space:]] ]] || continue
    n=$((n + 1))
    local status="building helios-hfs: $n/$HFS_CRATES crates, $(((SECONDS - start) / 60)) min"
    ((n <= HFS_CRATES)) || status="building helios-hfs: $n crates, $(((SECONDS - start) / 60)) min"
    if ((tty)); then
      printf '\r  %s\033[K' "$status" >&2
    elif ((n - shown >= 50)); then
      echo "  $status" >&2
      shown=$n
    fi
  done
  if ((tty)); then printf '\n' >&2; fi
}

exec 3>"$log"
# A separate target dir so the build does not collide with the project's.
if ! CARGO_TERM_COLOR=never CARGO_TARGET_DIR="$cache/hfs-build" cargo install --locked "helios-hfs@$HFS_VERSION" \
  --no-default-features --features "$HFS_FEATURES" --root "$root" 2>&1 | progress; then
  exec 3>&-
  echo "building helios-hfs failed; the end of $log:" >&2
  tail -n 30 "$log" >&2
  exit 1
fi
exec 3>&-
rm -rf "$cache/hfs-build"
echo "Helios FHIR Server installed: $bin (build log: $log)" >&2
echo "$bin"

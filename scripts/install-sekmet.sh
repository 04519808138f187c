#!/usr/bin/env bash
# Installs sekmet-fhir (the second upstream FHIR server of the tests: a Python
# FHIR R4 server that speaks JSON and XML natively) from PyPI into a virtual
# environment in a cache outside the clone, and prints the path of its
# `sekmet` executable. Reused when present.
#
# Every transitive dependency is pinned, hash-checked, in
# scripts/sekmet-requirements.txt (the hashes are those of the wheels for
# CPython 3.11 on x86_64 Linux; on another Python the pins are kept and the
# hashes dropped, with a warning).
#
#   INKAN_CACHE       cache root (default: ~/.cache/inkan)
#   INKAN_SEKMET_BIN  use this executable instead (nothing is installed)
#
# Start it (see docs/upstreams.md) with a settings file in a throwaway dir:
#   sekmet serve --config DIR/settings.yaml
set -euo pipefail

SEKMET_VERSION=0.1.1

if [[ -n "${INKAN_SEKMET_BIN:-}" ]]; then
  echo "$INKAN_SEKMET_BIN"
  exit 0
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
requirements="$here/sekmet-requirements.txt"
cache="${INKAN_CACHE:-$HOME/.cache/inkan}"
root="$cache/sekmet-fhir-$SEKMET_VERSION"
bin="$root/bin/sekmet"
stamp="$root/.inkan-installed"
# The stamp records which requirements file the venv was built from: a changed
# pin list rebuilds it.
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$bin"
  exit 0
fi

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null; then
  if [[ "$(id -u)" == 0 ]]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-pip) >/dev/null
  else
    echo "needs Python 3.11+: sudo apt-get install -y python3 python3-venv" >&2
    exit 1
  fi
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "sekmet-fhir needs Python 3.11 or later; $("$python" --version 2>&1) found" >&2
  exit 1
fi
# Debian's python3 ships venv and ensurepip in a separate package.
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  if [[ "$(id -u)" == 0 ]]; then
    minor="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    (apt-get update -qq && export DEBIAN_FRONTEND=noninteractive && { apt-get install -y -qq "python$minor-venv" || apt-get install -y -qq python3-venv; }) >/dev/null
  else
    echo "needs the venv module: sudo apt-get install -y python3-venv" >&2
    exit 1
  fi
fi

echo "installing sekmet-fhir $SEKMET_VERSION into $root (first run only)" >&2
rm -rf "$root"
mkdir -p "$cache"
"$python" -m venv "$root" >&2

pip_args=(--disable-pip-version-check --no-input --quiet --no-deps)
platform="$("$python" -c 'import platform, sys; print(platform.python_implementation(), sys.version_info[0], sys.version_info[1], platform.machine())')"
if [[ "$platform" == "CPython 3 11 x86_64" ]]; then
  "$root/bin/python" -m pip install "${pip_args[@]}" --require-hashes --only-binary :all: -r "$requirements" >&2
else
  echo "warning: $platform is not CPython 3.11 on x86_64: installing the pinned versions without hash checks" >&2
  unhashed="$root/requirements-unhashed.txt"
  sed -e 's/ *\\$//' -e '/^ *--hash=/d' "$requirements" > "$unhashed"
  "$root/bin/python" -m pip install "${pip_args[@]}" -r "$unhashed" >&2
fi
"$root/bin/python" -m pip check >&2
echo "$want" > "$stamp"
echo "$bin"

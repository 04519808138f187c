#!/usr/bin/env bash
# Installs the FHIR client libraries the end-to-end tests drive inkan with,
# pinned, into a cache outside the clone, and prints where they are as
# KEY=path lines on stdout (progress goes to stderr). Reused when present.
#
#   Python: fhirpy 2.3.1 and fhirclient 4.4.0 (both on requests), into a venv;
#           every package pinned and hash-checked (scripts/client-requirements.txt).
#   Node:   fhir-kit-client 2.0.3 (on Node's fetch), with `npm ci` from
#           tests/clients/package.json and package-lock.json into a prefix.
#
# Output:
#   INKAN_CLIENT_PYTHON=<venv>/bin/python        runs tests/clients/python_client.py
#   INKAN_CLIENT_NODE=<node>                     runs tests/clients/node_client.mjs
#   INKAN_CLIENT_NODE_MODULES=<prefix>/node_modules   (its --node-modules, or the
#                                                env var of the same name)
#
#   INKAN_CACHE  cache root (default: ~/.cache/inkan)
set -euo pipefail
cd "$(dirname "$0")/.."

pins=(scripts/client-requirements.txt tests/clients/package.json tests/clients/package-lock.json)
# The directory is named after the pins: changing one installs afresh.
tag="$(cat "${pins[@]}" | sha256sum | cut -c1-12)"
cache="${INKAN_CACHE:-$HOME/.cache/inkan}"
root="$cache/clients-$tag"

apt_install() { # package...
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "installing $* with apt-get" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@") >/dev/null
  else
    echo "needs $*: sudo apt-get install -y $*" >&2
    exit 1
  fi
}

command -v python3 >/dev/null || apt_install python3
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if (( node_major < 20 )); then
  echo "fhir-kit-client 2.0.3 needs Node.js 20 or later; found $(node --version)" >&2
  exit 1
fi

python="$root/venv/bin/python"
node_modules="$root/node/node_modules"
installed() {
  [[ -f "$root/complete" ]] \
    && "$python" -c 'import fhirpy, fhirclient' 2>/dev/null \
    && [[ -f "$node_modules/fhir-kit-client/package.json" ]]
}

if ! installed; then
  echo "installing the FHIR client libraries into $root (first run only)" >&2
  rm -rf "$root"
  mkdir -p "$root/node"
  # A fresh Debian has python3 without ensurepip: venv needs python3-venv.
  if ! python3 -m venv "$root/venv" >/dev/null 2>&1; then
    rm -rf "$root/venv"
    apt_install python3-venv
    python3 -m venv "$root/venv"
  fi
  pip_args=(--disable-pip-version-check --no-input --quiet --no-deps)
  platform="$("$python" -c 'import platform, sys; print(platform.python_implementation(), sys.version_info[0], sys.version_info[1], platform.machine())')"
  if [[ "$platform" == "CPython 3 11 x86_64" ]]; then
    "$python" -m pip install "${pip_args[@]}" --require-hashes --only-binary :all: \
      -r scripts/client-requirements.txt >&2
  else
    # The hashes are those of the CPython 3.11 x86_64 wheels.
    echo "warning: $platform is not CPython 3.11 on x86_64: installing the pinned versions without hash checks" >&2
    sed -e 's/ *\\$//' -e '/^ *--hash=/d' scripts/client-requirements.txt >"$root/requirements-unhashed.txt"
    "$python" -m pip install "${pip_args[@]}" -r "$root/requirements-unhashed.txt" >&2
  fi
  "$python" -m pip check >&2
  cp tests/clients/package.json tests/clients/package-lock.json "$root/node/"
  npm ci --prefix "$root/node" --no-audit --no-fund --loglevel=error >&2
  touch "$root/complete"
fi

echo "INKAN_CLIENT_PYTHON=$python"
echo "INKAN_CLIENT_NODE=$(command -v node)"
echo "INKAN_CLIENT_NODE_MODULES=$node_modules"

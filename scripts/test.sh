#!/usr/bin/env bash
# Runs every test: unit and table tests, the ledger's crash test, and the
# end-to-end tests against a real Helios FHIR Server (installed into a cache
# outside the clone on first run; see scripts/install-hfs.sh), the RFC 3161
# tests against OpenSSL's TSA and the chain tests against ganache (npm,
# cached the same way: scripts/install-ganache.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# Whatever a test starts carries this marker; anything still carrying it
# when the run ends (a test binary killed mid-run orphans its servers) is
# stopped with the same TERM-then-KILL as every other script.
source scripts/lib/procs.sh
export INKAN_TEST_RUN="test-$$-$RANDOM"
at_exit 'stop_marked INKAN_TEST_RUN "$INKAN_TEST_RUN"'

# The real peers, each installed once into the cache: two upstream FHIR
# servers (HFS, JSON only; sekmet-fhir, native XML), ganache, and the
# client libraries the e2e tests drive the gateway with.
INKAN_HFS_BIN="$(scripts/install-hfs.sh)"
INKAN_SEKMET_BIN="$(scripts/install-sekmet.sh)"
INKAN_GANACHE_BIN="$(scripts/install-ganache.sh)"
INKAN_OIDC_PROVIDER_DIR="$(scripts/install-oidc-provider.sh)"
export INKAN_HFS_BIN INKAN_SEKMET_BIN INKAN_GANACHE_BIN INKAN_OIDC_PROVIDER_DIR
# A failure here stops the run (a process substitution would hide it).
clients_env="$(scripts/install-clients.sh)"
while IFS= read -r line; do export "${line?}"; done <<<"$clients_env"
# From Debian: nkf, an independent oracle for the Japanese decoding tests
# (with jaconv 0.5.0 from PyPI below), and nginx, the authorizing proxy in
# front of HFS for the caller-bound $proof tests.
missing=()
command -v nkf >/dev/null || missing+=(nkf)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
if ((${#missing[@]})); then
  if [[ "$(id -u)" == 0 ]]; then
    (apt-get update -qq && apt-get install -y -qq "${missing[@]}") >/dev/null
  else
    echo "the tests need: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
pylib="${INKAN_CACHE:-$HOME/.cache/inkan}/pylib"
export PYTHONPATH="$pylib${PYTHONPATH:+:$PYTHONPATH}"
# Pinned, by package name, with the pip of the client libraries' venv (a
# fresh Debian's python3 has none).
python3 -c 'import jaconv' 2>/dev/null ||
  "$INKAN_CLIENT_PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$pylib" jaconv==0.5.0 >&2
# The end-to-end tests drive the real binary.
cargo build --locked -p inkan
log="$(mktemp)"
at_exit 'rm -f "$log"'
status=0
cargo test --locked --workspace 2>&1 | tee "$log" || status=$?
# One closing line for all test binaries together.
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '^test result: .* ([0-9]+) failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
echo "tests: $passed passed, $failed failed"
exit "$status"

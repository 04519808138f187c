#!/usr/bin/env bash
# Runs every test: unit and table tests, the ledger's crash test, and the
# end-to-end tests against a real Helios FHIR Server (installed into a cache
# outside the clone on first run; see scripts/install-hfs.sh), the RFC 3161
# tests against OpenSSL's TSA and the chain tests against ganache (npm,
# cached the same way: scripts/install-ganache.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

INKAN_HFS_BIN="$(scripts/install-hfs.sh)"
INKAN_GANACHE_BIN="$(scripts/install-ganache.sh)"
export INKAN_HFS_BIN INKAN_GANACHE_BIN
# The end-to-end tests drive the real binary.
cargo build --locked -p inkan
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked --workspace 2>&1 | tee "$log" || status=$?
# One closing line for all test binaries together.
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '^test result: .* ([0-9]+) failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
echo "tests: $passed passed, $failed failed"
exit "$status"

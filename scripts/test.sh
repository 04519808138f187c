#!/usr/bin/env bash
# Runs every test: unit and table tests, the ledger's crash test, and the
# end-to-end tests against a real Helios FHIR Server (installed into a cache
# outside the clone on first run; see scripts/install-hfs.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

INKAN_HFS_BIN="$(scripts/install-hfs.sh)"
export INKAN_HFS_BIN
# The end-to-end tests drive the real binary.
cargo build --locked -p inkan
cargo test --locked --workspace

#!/usr/bin/env bash
# Ledger benchmarks, one run on this machine (results go to docs/benchmarks.md):
#   - durable appends/s for a fixed time, with a 100 ms checkpointer running,
#     and the append → signed-checkpoint latency;
#   - canonicalize + commit throughput on the FHIR R4 examples, next to
#     sha256sum on the same bytes (the physical limit);
#   - inclusion proof generation and verification per second at 10 M leaves;
#   - bytes on disk per sealed version.
#
#   bench/ledger.sh [append seconds, default 60] [writer threads, default 16] [batch, default 64]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"; writers="${2:-16}"; batch="${3:-64}"
corpus="$(pwd)/fixtures/r4-examples"
cargo build --release --locked -p inkan-ledger --example ledger_bench >&2
bench="$(pwd)/target/release/examples/ledger_bench"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT

echo "Run: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, filesystem of $(df --output=source "$work" | tail -1)"
echo
echo "### Durable appends ($writers writer threads, $batch versions per seal call, ${seconds}s, checkpoint every 100 ms)"
"$bench" appends "$seconds" "$writers" "$batch" "$work/ledger" | sed 's/^/    /'
echo
echo "### Canonicalize + commit vs sha256sum (R4 examples corpus)"
"$bench" canonical "$corpus" | sed 's/^/    /'
# sha256sum over the same bytes, repeated to ~200 MB so start-up does not count.
for _ in $(seq 1 400); do cat "$corpus"/*.json; done >"$work/corpus.bin"
bytes=$(stat -c %s "$work/corpus.bin")
start=$(date +%s.%N); sha256sum "$work/corpus.bin" >/dev/null; end=$(date +%s.%N)
python3 -c "print('    sha256sum_mb_per_s=%.1f' % ($bytes / ($end - $start) / 1e6))"
echo
echo "### Proofs at 10,000,000 leaves"
"$bench" proofs 10000000 | sed 's/^/    /'

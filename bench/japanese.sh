#!/usr/bin/env bash
# Japanese text path throughput: decode + normalize + re-serialize a 10 MB
# Shift_JIS transaction Bundle (profiles-jp, in process), next to
# `iconv -f CP932 -t UTF-8` and `nkf -w` decoding the same file, same run.
#
#   bench/japanese.sh [megabytes, default 10]
# Needs iconv (libc-bin) and nkf (apt-get install nkf).
set -euo pipefail
cd "$(dirname "$0")/.."
mb="${1:-10}"
command -v nkf >/dev/null || { echo "needs nkf: apt-get install -y nkf" >&2; exit 1; }
cargo build --release --locked -p inkan-profiles-jp --example transcode_bench >&2
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
read -r bytes seconds <<<"$(target/release/examples/transcode_bench "$work/bundle.sjis" "$mb")"
best_of_3() { # command…
  python3 - "$@" <<'PY'
import subprocess, sys, time
best = min(
    (lambda t: (subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True), time.perf_counter() - t)[1])(time.perf_counter())
    for _ in range(3))
print(f"{best:.4f}")
PY
}
iconv_s="$(best_of_3 iconv -f CP932 -t UTF-8 "$work/bundle.sjis")"
nkf_s="$(best_of_3 nkf -S -w "$work/bundle.sjis")"
mbs() { python3 -c "print(f'{$bytes / $1 / 1e6:.1f}')"; }
echo "Run: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $bytes bytes of Shift_JIS (transaction Bundle)"
echo
echo "| tool | what | seconds | MB/s |"
echo "|---|---|---:|---:|"
echo "| inkan profiles-jp | decode + normalize by datatype + re-serialize | $seconds | $(mbs "$seconds") |"
echo "| iconv -f CP932 -t UTF-8 | decode only | $iconv_s | $(mbs "$iconv_s") |"
echo "| nkf -S -w | decode only | $nkf_s | $(mbs "$nkf_s") |"

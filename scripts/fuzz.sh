#!/usr/bin/env bash
# Fuzzes every parser a request, an upstream answer or a proof can reach
# (fuzz/fuzz_targets/*.rs) with libFuzzer through cargo fuzz, each for a
# bounded time, and prints executions and crashes per target.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]     (default 60, all)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain, or
# stable with RUSTC_BOOTSTRAP=1 (used when no nightly is installed).
# Corpora live outside the clone (~/.cache/inkan/fuzz/<target>), seeded from
# fixtures/; a crash is saved under fuzz/artifacts/<target>/ and the run
# exits non-zero. Every crash found becomes a regression test (named after
# what broke) before it is fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/procs.sh

seconds="${1:-60}"
shift || true
command -v cargo-fuzz >/dev/null || {
  echo "needs cargo-fuzz: cargo install cargo-fuzz --locked" >&2; exit 1; }
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi
targets=("$@")
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <("${fuzz[@]}" list)
fi

cache="${INKAN_CACHE:-$HOME/.cache/inkan}/fuzz"
work="$(mktemp -d)"
at_exit 'rm -rf "$work"'
# The RFC 3161 target needs trust anchors: a throwaway test CA.
python3 scripts/tsa-shim.py init "$work/tsa" >/dev/null
export INKAN_FUZZ_TSA_CA="$work/tsa/ca.pem"

seed() { # target: a corpus directory with real inputs to start from
  local corpus="$cache/$1"
  mkdir -p "$corpus"
  if [[ -z "$(ls -A "$corpus")" ]]; then
    case "$1" in
      canonical_xml|xml_bridge)
        printf '%s' '<?xml version="1.0" encoding="UTF-8"?><Patient xmlns="http://hl7.org/fhir"><id value="p1"/><meta><versionId value="1"/></meta><name><family value="山田"/><given value="太郎"/></name><birthDate value="1980-02-03"/></Patient>' >"$corpus/patient.xml"
        printf '%s' '<Observation xmlns="http://hl7.org/fhir"><id value="o"/><text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml"><p>a <b>b</b></p></div></text><status value="final"/><code><text value="x"/></code><valueQuantity><value value="1.50"/></valueQuantity></Observation>' >"$corpus/observation.xml" ;;&
      canonical_json|xml_bridge|japanese_text|url_rewriter|proof_parsing)
        cp fixtures/r4-examples/*.json fixtures/jp-core/json/*.json "$corpus/" ;;
    esac
  fi
  echo "$corpus"
}

"${fuzz[@]}" build -O >&2
printf '%-16s %10s %12s %8s\n' target seconds executions crashes
status=0
for target in "${targets[@]}"; do
  corpus="$(seed "$target")"
  log="$work/$target.log"
  result=0
  "${fuzz[@]}" run -O "$target" "$corpus" -- \
    -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 >"$log" 2>&1 || result=$?
  runs="$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)"
  crashes=0
  if ((result != 0)); then
    crashes=1
    status=1
    grep -E 'ERROR|panicked|Test unit written' "$log" | head -5 >&2
  fi
  printf '%-16s %10s %12s %8s\n' "$target" "$seconds" "${runs:-?}" "$crashes"
done
exit "$status"

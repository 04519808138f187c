#!/usr/bin/env bash
# Write path cost: 16 concurrent writers creating Patients (wrk, POST) against
# (a) Helios FHIR Server directly, (b) inkan in pass-through, (c) inkan with
# every write sealed (`seal_writes = true`: intent journal + the stored version
# from the upstream's answer + durable append).
# One run, same machine.
#
#   bench/writes.sh [seconds per target, default 20] [connections, default 16]
#
# INKAN_BASELINE_BIN=/path/to/an/older/inkan adds it (every write sealed) as
# a fourth target, to tell a regression from drift: same run, interleaved.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-20}"; connections="${2:-16}"
source bench/hfs_common.sh

start_inkan() { # dir port upstream seal [binary]
  mkdir -p "$1"
  local inkan="${5:-$inkan}"
  printf 'listen = "127.0.0.1:%s"\nbase_path = "/fhir"\n[log]\nlevel = "warn"\n[upstream]\nurl = "%s"\n[ledger]\ndir = "%s/ledger"\nseal_writes = %s\n' "$2" "$3" "$1" "$4" >"$1/inkan.toml"
  start_inkan_gw "$1/inkan.toml" "$1/inkan.log" "$2"
}
run() { # label url: one round, appended to $work/results
  wrk -t2 -c"$connections" -d"${round}s" --latency -s "$work/post.lua" "$2" >"$work/wrk.txt" 2>&1
  echo "$1|$(python3 bench/wrk_summary.py "$work/wrk.txt")" >>"$work/results"
}
# Each target has its own upstream (a fresh HFS database). The machine's
# speed drifts over a run, so targets are measured in interleaved, rotated
# rounds and each figure is the median of its rounds.
p=$(free_port); start_hfs "$work/a" "$p"
p2=$(free_port); start_hfs "$work/b" "$p2"; g=$(free_port); start_inkan "$work/b" "$g" "http://127.0.0.1:$p2" false
p3=$(free_port); start_hfs "$work/c" "$p3"; g2=$(free_port); start_inkan "$work/c" "$g2" "http://127.0.0.1:$p3" true
if [[ -n "${INKAN_BASELINE_BIN:-}" ]]; then
  p4=$(free_port); start_hfs "$work/d" "$p4"; g3=$(free_port)
  start_inkan "$work/d" "$g3" "http://127.0.0.1:$p4" true "$INKAN_BASELINE_BIN"
fi
targets=("HFS directly|http://127.0.0.1:$p/Patient"
  "inkan, pass-through|http://127.0.0.1:$g/fhir/Patient"
  "inkan, every write sealed|http://127.0.0.1:$g2/fhir/Patient")
if [[ -n "${INKAN_BASELINE_BIN:-}" ]]; then
  targets+=("baseline inkan, every write sealed|http://127.0.0.1:$g3/fhir/Patient")
fi
# Two rounds per target, so each target runs in every position twice.
rounds=$((2 * ${#targets[@]}))
round=$(( duration / rounds > 2 ? duration / rounds : 2 ))
# Each round starts one target later (A B C, B C A, C A B, …): no target
# always runs right after another's load, or first on a cold machine.
for r in $(seq 0 $((rounds - 1))); do
  for i in $(seq 0 $((${#targets[@]} - 1))); do
    target="${targets[$(((r + i) % ${#targets[@]}))]}"
    run "${target%%|*}" "${target#*|}"
  done
done
echo "Run: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, wrk -t2 -c$connections, $rounds interleaved rounds of ${round}s, POST Patient; medians"
echo
python3 - "$work/results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, figures = line.rstrip("\n").split("|")
    rps, p50, p99, non2xx = figures.split()
    rows.setdefault(label, []).append((float(rps), float(p50), float(p99), int(non2xx)))
print("| target | creates/s | p50 ms | p99 ms | non-2xx |")
print("|---|---:|---:|---:|---:|")
medians = {}
for label, runs in rows.items():
    m = [statistics.median(r[i] for r in runs) for i in range(3)]
    medians[label] = m
    print(f"| {label} | {m[0]:.0f} | {m[1]:.2f} | {m[2]:.2f} | {sum(r[3] for r in runs)} |")
hfs, sealed = medians["HFS directly"], medians["inkan, every write sealed"]
print()
print(f"sealed / HFS: {sealed[0] / hfs[0]:.2f}x creates/s, p99 {sealed[2] - hfs[2]:+.2f} ms, p50 {sealed[1] - hfs[1]:+.2f} ms")
PY
sleep 1.5
echo
"$inkan" ledger --dir "$work/c/ledger" stats | grep -E "leaves|bytes per leaf"
"$inkan" ledger --dir "$work/c/ledger" fsck | tail -1

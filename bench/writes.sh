#!/usr/bin/env bash
# Write path cost: 16 concurrent writers creating Patients (wrk, POST) against
# (a) Helios FHIR Server directly, (b) inkan in pass-through, (c) inkan with
# every write sealed (`seal_writes = true`: intent journal + the stored version
# from the upstream's answer + durable append).
# One run, same machine.
#
#   bench/writes.sh [seconds per run, default 20] [connections, default 16]
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-20}"; connections="${2:-16}"
source bench/hfs_common.sh

start_inkan() { # dir port upstream seal
  mkdir -p "$1"
  printf 'listen = "127.0.0.1:%s"\nbase_path = "/fhir"\n[log]\nlevel = "warn"\n[upstream]\nurl = "%s"\n[ledger]\ndir = "%s/ledger"\nseal_writes = %s\n' "$2" "$3" "$1" "$4" >"$1/inkan.toml"
  "$inkan" serve --config "$1/inkan.toml" 2>"$1/inkan.log" &
  pids+=($!); wait_ok "http://127.0.0.1:$2/-/readyz"
}
run() { # label url
  wrk -t2 -c"$connections" -d"${duration}s" --latency -s "$work/post.lua" "$2" >"$work/wrk.txt" 2>&1
  read -r rps p50 p99 non2xx <<<"$(python3 bench/wrk_summary.py "$work/wrk.txt")"
  printf '| %s | %s | %.2f | %.2f | %s |\n' "$1" "$rps" "$p50" "$p99" "$non2xx"
}
# A fresh upstream for each target, so each starts from an empty database.
echo "Run: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, wrk -t2 -c$connections -d${duration}s, POST Patient"
echo
echo "| target | creates/s | p50 ms | p99 ms | non-2xx |"
echo "|---|---:|---:|---:|---:|"
p=$(free_port); start_hfs "$work/a" "$p"; run "HFS directly" "http://127.0.0.1:$p/Patient"
p2=$(free_port); start_hfs "$work/b" "$p2"; g=$(free_port); start_inkan "$work/b" "$g" "http://127.0.0.1:$p2" false
run "inkan, pass-through" "http://127.0.0.1:$g/fhir/Patient"
p3=$(free_port); start_hfs "$work/c" "$p3"; g2=$(free_port); start_inkan "$work/c" "$g2" "http://127.0.0.1:$p3" true
run "inkan, every write sealed" "http://127.0.0.1:$g2/fhir/Patient"
sleep 1.5
echo
"$inkan" ledger --dir "$work/c/ledger" stats | grep -E "leaves|bytes per leaf"
"$inkan" ledger --dir "$work/c/ledger" fsck | tail -1

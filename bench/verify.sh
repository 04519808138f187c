#!/usr/bin/env bash
# Read path and audit cost of the seal, one run, same machine:
#  1. fills Helios FHIR Server with Patients written through inkan (sealed);
#  2. read (one Patient) and search (a page of 20) through inkan with
#     verify_reads = "off" and then "annotate", same upstream, same ledger;
#  3. `inkan audit` over the whole Patient history: versions/s and where the
#     time goes (upstream paging vs hashing and comparing).
#
#   bench/verify.sh [seconds per read run, default 15] [seconds of writes, default 20]
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-15}"; fill="${2:-20}"
source bench/hfs_common.sh

hfs_port=$(free_port); start_hfs "$work/hfs" "$hfs_port"

gateway_pid=""
start_inkan() { # verify_reads
  [ -n "$gateway_pid" ] && { kill "$gateway_pid"; wait "$gateway_pid" 2>/dev/null || true; }
  gw_port=$(free_port)
  printf 'listen = "127.0.0.1:%s"\nbase_path = "/fhir"\n[log]\nlevel = "warn"\n[upstream]\nurl = "http://127.0.0.1:%s"\n[ledger]\ndir = "%s/ledger"\nverify_reads = "%s"\n' \
    "$gw_port" "$hfs_port" "$work" "$1" >"$work/inkan.toml"
  "$inkan" serve --config "$work/inkan.toml" 2>>"$work/inkan.log" &
  gateway_pid=$!; pids+=($gateway_pid); wait_ok "http://127.0.0.1:$gw_port/-/readyz"
}
run() { # label connections url
  wrk -t"$(( $2 < 2 ? 1 : 2 ))" -c"$2" -d"${duration}s" --latency "$3" >"$work/wrk.txt" 2>&1
  read -r rps p50 p99 non2xx <<<"$(python3 bench/wrk_summary.py "$work/wrk.txt")"
  printf '| %s | %s | %.2f | %.2f | %s |\n' "$1" "$rps" "$p50" "$p99" "$non2xx"
}

start_inkan annotate
wrk -t2 -c16 -d"${fill}s" -s "$work/post.lua" "http://127.0.0.1:$gw_port/fhir/Patient" >/dev/null
id=$(curl -fsS "http://127.0.0.1:$hfs_port/Patient?_count=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["entry"][0]["resource"]["id"])')
echo "Run: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, wrk -d${duration}s; $("$inkan" ledger --dir "$work/ledger" stats | grep leaves)"
echo
echo "| request | connections | verify_reads | req/s | p50 ms | p99 ms | non-2xx |"
echo "|---|---:|---|---:|---:|---:|---:|"
for mode in off annotate; do
  start_inkan "$mode"
  for c in 1 16; do
    run "read Patient | $c | $mode" "$c" "http://127.0.0.1:$gw_port/fhir/Patient/$id"
    run "search, 20 per page | $c | $mode" "$c" "http://127.0.0.1:$gw_port/fhir/Patient?_count=20"
  done
done
echo
"$inkan" audit --config "$work/inkan.toml" --type Patient --no-progress --report "$work/audit.json" | head -1

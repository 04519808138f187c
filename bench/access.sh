#!/usr/bin/env bash
# The cost of knowing who looked at what, one run, same machine:
#  - reads through inkan with access records off and on ([audit]: one BALP
#    AuditEvent per request, sealed in the ledger before the answer leaves,
#    delivered in the background to sekmet-fhir as the audit repository);
#  - reads with bearer tokens validated by the gateway ([auth] mode = "jwt",
#    RS256 tokens from node-oidc-provider) against the same token passed
#    through unchecked.
# Three gateways in front of one Helios FHIR Server, rounds interleaved
# (off, audit, jwt, off, …), medians.
#
#   bench/access.sh [seconds per row, default 15]
#
# INKAN_BENCH_REPOSITORY=down: the audit repository is a closed port, so
# events stay queued in the ledger — the request path's own cost, without
# the delivery and the repository (a Python server on the same two cores)
# competing for the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-15}"
source bench/hfs_common.sh
sekmet="$(scripts/install-sekmet.sh)"
oidc_dir="$(scripts/install-oidc-provider.sh)"

hfs_port=$(free_port); start_hfs "$work/hfs" "$hfs_port"
sek_port=$(free_port); mkdir -p "$work/sekmet"
printf 'base_url: "http://localhost:%s/fhir"\nhost: 127.0.0.1\nport: %s\ndata_dir: "%s"\ndb_path: "%s"\nsimulator: {enabled: false}\nlog_inbound: false\n' \
  "$sek_port" "$sek_port" "$work/sekmet" "$work/sekmet/sekmet.db" >"$work/sekmet.yaml"
start_bg "$work/sekmet.log" env -u SEKMET_CONFIG -u SEKMET_PORT PYTHONUNBUFFERED=1 "$sekmet" serve --config "$work/sekmet.yaml"
wait_http "http://127.0.0.1:$sek_port/fhir/metadata" 60
resource="https://fhir.bench.test/fhir"
op_port=$(free_port)
start_bg "$work/oidc.log" env INKAN_OIDC_PROVIDER_DIR="$oidc_dir" node scripts/oidc-provider.mjs "$op_port" "$resource"
wait_http "http://127.0.0.1:$op_port/.well-known/openid-configuration" 30
token=$(curl -fsS -u inkan-test:inkan-test-secret -d grant_type=client_credentials -d 'scope=system/*.rs' \
  "http://127.0.0.1:$op_port/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

start_gateway() { # name extra-toml → sets gw_port
  gw_port=$(free_port)
  printf 'listen = "127.0.0.1:%s"\nbase_path = "/fhir"\n[log]\nlevel = "warn"\n[upstream]\nurl = "http://127.0.0.1:%s"\n[ledger]\ndir = "%s/ledger-%s"\nverify_reads = "off"\n%b' \
    "$gw_port" "$hfs_port" "$work" "$1" "$2" >"$work/inkan-$1.toml"
  start_inkan_gw "$work/inkan-$1.toml" "$work/inkan-$1.log" "$gw_port"
}
start_gateway off ""; off_port=$gw_port
repository="http://127.0.0.1:$sek_port/fhir"
[ "${INKAN_BENCH_REPOSITORY:-}" = down ] && repository="http://127.0.0.1:$(free_port)/fhir"
start_gateway audit "[audit]\nenabled = true\nrepository_url = \"$repository\"\n"; audit_port=$gw_port
start_gateway jwt "[auth]\nmode = \"jwt\"\nissuer = \"http://127.0.0.1:$op_port\"\naudience = [\"$resource\"]\n"; jwt_port=$gw_port

# Some Patients to read (through the "off" gateway, sealed in its ledger).
wrk -t2 -c8 -d5s -s "$work/post.lua" "http://127.0.0.1:$off_port/fhir/Patient" >/dev/null
id=$(curl -fsS "http://127.0.0.1:$hfs_port/Patient?_count=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["entry"][0]["resource"]["id"])')

run() { # label connections url: one round, appended to $work/results
  wrk -t"$(( $2 < 2 ? 1 : 2 ))" -c"$2" -d"${round}s" --latency -H "Authorization: Bearer $token" "$3" >"$work/wrk.txt" 2>&1
  echo "$1|$(python3 bench/wrk_summary.py "$work/wrk.txt")" >>"$work/results"
}
rounds=3
round=$(( duration / rounds > 2 ? duration / rounds : 2 ))
for _ in $(seq 1 "$rounds"); do
  for c in 1 16 64; do
    for mode in off audit jwt; do
      port=$off_port
      [ "$mode" = audit ] && port=$audit_port
      [ "$mode" = jwt ] && port=$jwt_port
      run "read one Patient | $c | $mode" "$c" "http://127.0.0.1:$port/fhir/Patient/$id"
      run "search, 20 per page | $c | $mode" "$c" "http://127.0.0.1:$port/fhir/Patient?_count=20"
    done
  done
done
# The access records written above, delivered by now or soon.
sleep 3
backlog=$(curl -fsS "http://127.0.0.1:$sek_port/fhir/AuditEvent?_count=1&_total=accurate" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("total", "?"))')
echo "Run: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $rounds interleaved rounds of ${round}s per row, medians; repository ${INKAN_BENCH_REPOSITORY:-up}, $backlog AuditEvents in it afterwards; $("$inkan" ledger --dir "$work/ledger-audit" stats | grep leaves)"
echo
python3 - "$work/results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    parts = line.rstrip("\n").split("|")
    rps, p50, p99, _ = parts[3].split()
    rows.setdefault(tuple(p.strip() for p in parts[:3]), []).append((float(rps), float(p50), float(p99)))
print("| request | connections | mode | req/s | p50 ms | p99 ms | req/s vs off | p50 vs off |")
print("|---|---:|---|---:|---:|---:|---:|---:|")
for (request, c, mode), runs in rows.items():
    m = [statistics.median(r[i] for r in runs) for i in range(3)]
    off = rows[(request, c, "off")]
    off_rps = statistics.median(r[0] for r in off)
    off_p50 = statistics.median(r[1] for r in off)
    rps_delta = "" if mode == "off" else f"{m[0] / off_rps:.2f}×"
    p50_delta = "" if mode == "off" else f"{m[1] - off_p50:+.2f} ms"
    print(f"| {request} | {c} | {mode} | {m[0]:.0f} | {m[1]:.2f} | {m[2]:.2f} | {rps_delta} | {p50_delta} |")
PY

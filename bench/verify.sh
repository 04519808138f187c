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

start_inkan() { # verify_reads → sets gw_port
  gw_port=$(free_port)
  # One writer per ledger: the "off" gateway opens none (no seals, no
  # verification), the "annotate" one owns it.
  local seal=true
  [[ "$1" == off ]] && seal=false
  printf 'listen = "127.0.0.1:%s"\nbase_path = "/fhir"\n[log]\nlevel = "warn"\n[upstream]\nurl = "http://127.0.0.1:%s"\n[ledger]\ndir = "%s/ledger"\nseal_writes = %s\nverify_reads = "%s"\n' \
    "$gw_port" "$hfs_port" "$work" "$seal" "$1" >"$work/inkan-$1.toml"
  start_inkan_gw "$work/inkan-$1.toml" "$work/inkan-$1.log" "$gw_port"
}
run() { # label connections url [lua] [header]: one round, appended to $work/results
  local script=() header=()
  [ -n "${4:-}" ] && script=(-s "$4")
  [ -n "${5:-}" ] && header=(-H "$5")
  wrk -t"$(( $2 < 2 ? 1 : 2 ))" -c"$2" -d"${round}s" --latency "${script[@]}" "${header[@]}" "$3" >"$work/wrk.txt" 2>&1
  echo "$1|$(python3 bench/wrk_summary.py "$work/wrk.txt")" >>"$work/results"
}

start_inkan annotate; annotate_port=$gw_port
start_inkan off; off_port=$gw_port
wrk -t2 -c16 -d"${fill}s" -s "$work/post.lua" "http://127.0.0.1:$annotate_port/fhir/Patient" >/dev/null
# One Patient read again and again (hits the verified-bytes memo), and a
# different Patient on each read (first reads: the full check).
id=$(curl -fsS "http://127.0.0.1:$hfs_port/Patient?_count=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["entry"][0]["resource"]["id"])')
python3 - "$hfs_port" >"$work/random.lua" <<'PY'
import json, sys, urllib.request
ids, url = [], f"http://127.0.0.1:{sys.argv[1]}/Patient/_history?_count=1000"
while url and len(ids) < 20000:
    page = json.load(urllib.request.urlopen(url))
    ids += [e["resource"]["id"] for e in page.get("entry", []) if "resource" in e]
    url = next((l["url"].replace("http://localhost:8080", f"http://127.0.0.1:{sys.argv[1]}") for l in page["link"] if l["relation"] == "next"), None)
print("ids = {" + ",".join(f'"{i}"' for i in ids) + "}")
print('request = function() return wrk.format("GET", "/fhir/Patient/" .. ids[math.random(#ids)]) end')
PY
rounds=3
round=$(( duration / rounds > 2 ? duration / rounds : 2 ))
for _ in $(seq 1 "$rounds"); do
  for c in 1 16; do
    for mode in off annotate; do
      port=$off_port; [ "$mode" = annotate ] && port=$annotate_port
      run "read one Patient | $c | $mode" "$c" "http://127.0.0.1:$port/fhir/Patient/$id"
      run "read a random Patient | $c | $mode" "$c" "http://127.0.0.1:$port/fhir/Patient/$id" "$work/random.lua"
      run "search, 20 per page | $c | $mode" "$c" "http://127.0.0.1:$port/fhir/Patient?_count=20"
      # As client libraries ask by default: HFS compresses, inkan decodes,
      # verifies and compresses again.
      run "read one Patient, gzip | $c | $mode" "$c" "http://127.0.0.1:$port/fhir/Patient/$id" "" "Accept-Encoding: gzip, deflate"
      run "search, 20 per page, gzip | $c | $mode" "$c" "http://127.0.0.1:$port/fhir/Patient?_count=20" "" "Accept-Encoding: gzip, deflate"
    done
  done
done
echo "Run: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $rounds interleaved rounds of ${round}s per row, medians; $("$inkan" ledger --dir "$work/ledger" stats | grep leaves)"
echo
python3 - "$work/results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, figures = line.rstrip("\n").split("|", 3)[0:3], line.rstrip("\n").split("|")[3]
    rps, p50, p99, non2xx = figures.split()
    rows.setdefault(tuple(p.strip() for p in label), []).append((float(rps), float(p50), float(p99)))
print("| request | connections | verify_reads | req/s | p50 ms | p99 ms | p50 vs off |")
print("|---|---:|---|---:|---:|---:|---:|")
for (request, c, mode), runs in rows.items():
    m = [statistics.median(r[i] for r in runs) for i in range(3)]
    off = rows[(request, c, "off")]
    off_p50 = statistics.median(r[1] for r in off)
    delta = "" if mode == "off" else f"{(m[1] / off_p50 - 1) * 100:+.0f} %"
    print(f"| {request} | {c} | {mode} | {m[0]:.0f} | {m[1]:.2f} | {m[2]:.2f} | {delta} |")
PY
echo
"$inkan" audit --config "$work/inkan-annotate.toml" --type Patient --no-progress --report "$work/audit.json" | head -1

#!/usr/bin/env bash
# Pass-through cost of inkan, measured against nginx as a reverse proxy in
# the same run on the same machine.
#
#   bench/proxy.sh [seconds per run, default 20] [connections, default 64] [rounds, default 1]
#
# With more than one round, the targets take turns round by round and the
# table shows medians (this machine's speed drifts within minutes).
# INKAN_BASELINE_BIN=/path/to/an/older/inkan adds it as a fourth target, to
# tell a regression from drift: same run, same upstream, interleaved.
#
# Upstream: nginx serving a 4 KB FHIR Patient (application/fhir+json) and a
# 4 KB searchset Bundle whose links point at the upstream base (so inkan must
# rewrite them). Targets, each loaded by wrk with the same settings:
#   (a) the upstream directly, (b) nginx proxy_pass with upstream keepalive,
#   (c) inkan (release build).
# Also: inkan's idle RSS and its peak RSS while streaming a 200 MB Binary.
# Needs: nginx and wrk (apt-get install nginx-light wrk), python3, curl.
# Prints a Markdown table for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-20}"
connections="${2:-64}"
rounds="${3:-1}"
baseline="${INKAN_BASELINE_BIN:-}"
threads=2

command -v nginx >/dev/null && command -v wrk >/dev/null || {
  echo "needs nginx and wrk: apt-get install -y nginx-light wrk" >&2; exit 1; }

# Every process started with start_bg is stopped on exit, failure and Ctrl-C.
source scripts/lib/procs.sh
cargo build --release --locked -p inkan >&2
inkan="$(pwd)/target/release/inkan"
work="$(mktemp -d)"
at_exit 'rm -rf "$work"'
chmod 755 "$work"  # nginx workers run as an unprivileged user

up_port="$(free_port)"; proxy_port="$(free_port)"; inkan_port="$(free_port)"
mkdir -p "$work/www/fhir/Patient" "$work/www/fhir/Binary" "$work/logs"

# A 4 KB Patient: padded with a realistic narrative.
python3 - "$work/www/fhir/Patient/bench" "$up_port" <<'PY'
import json, sys
narrative = "<div xmlns=\"http://www.w3.org/1999/xhtml\">" + "<p>山田 太郎 (ヤマダ タロウ) 1970-01-01 東京都新宿区</p>" * 40 + "</div>"
p = {"resourceType": "Patient", "id": "bench", "meta": {"versionId": "1", "lastUpdated": "2026-01-01T00:00:00Z"},
     "text": {"status": "generated", "div": narrative},
     "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.11311234567", "value": "00000010"}],
     "name": [{"family": "山田", "given": ["太郎"], "text": "山田 太郎"}], "gender": "male", "birthDate": "1970-01-01"}
s = json.dumps(p, ensure_ascii=False)
while len(s.encode()) < 4096:
    p["text"]["div"] = p["text"]["div"].replace("</div>", "<p>.</p></div>"); s = json.dumps(p, ensure_ascii=False)
open(sys.argv[1], "w").write(s)
base = "http://127.0.0.1:%s/fhir" % sys.argv[2]
b = {"resourceType": "Bundle", "type": "searchset", "total": 3,
     "link": [{"relation": "self", "url": base + "/Patient?name=x"}, {"relation": "next", "url": base + "/Patient?name=x&_offset=3"}],
     "entry": [{"fullUrl": base + "/Patient/%d" % i, "resource": {"resourceType": "Patient", "id": str(i),
        "managingOrganization": {"reference": base + "/Organization/1"}, "name": [{"family": "山田" * 20}]}} for i in range(12)]}
open(sys.argv[1].replace("Patient/bench", "Patient/search"), "w").write(json.dumps(b, ensure_ascii=False))
PY
head -c $((200 * 1024 * 1024)) /dev/urandom >"$work/www/fhir/Binary/big"

# Two nginx instances, so the proxy under test never shares a worker with
# the upstream: the upstream with one worker, the proxy with one per core
# (its usual production setting).
nginx_conf() { # name workers server-block
  mkdir -p "$work/$1"
  cat >"$work/$1/nginx.conf" <<NGINX
worker_processes $2;
pid $work/$1/nginx.pid;
error_log $work/logs/$1-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  default_type application/fhir+json;
  sendfile on; tcp_nopush on; keepalive_requests 1000000;
  $3
}
NGINX
  # In the foreground (daemon off): its master is the process start_bg
  # records, and its workers are in its process group.
  start_bg "$work/logs/$1-stderr.log" nginx -c "$work/$1/nginx.conf" -p "$work/$1" -g 'daemon off;'
}
# The upstream compresses FHIR JSON for clients that ask (as HFS does).
nginx_conf upstream 1 "gzip on; gzip_types application/fhir+json; gzip_min_length 256; gzip_comp_level 5; gzip_proxied any;
  server { listen 127.0.0.1:$up_port; root $work/www; location /fhir/Binary/ { default_type application/octet-stream; } }"
wait_http "http://127.0.0.1:$up_port/fhir/Patient/bench"
nginx_conf proxy auto "upstream fhir { server 127.0.0.1:$up_port; keepalive 128; }
  server { listen 127.0.0.1:$proxy_port; location / { proxy_pass http://fhir; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
wait_http "http://127.0.0.1:$proxy_port/fhir/Patient/bench"

cat >"$work/inkan.toml" <<TOML
listen = "127.0.0.1:$inkan_port"
base_path = "/fhir"
[log]
level = "warn"
[upstream]
url = "http://127.0.0.1:$up_port/fhir"
xml = "bridge"
[ledger]
seal_writes = false   # the proxy's own cost: no ledger, no verify-on-read
TOML
start_bg "$work/logs/inkan.log" "$inkan" serve --config "$work/inkan.toml"
inkan_pid=$BG_PID
wait_http "http://127.0.0.1:$inkan_port/-/livez"
targets=(up nginx inkan)
declare -A port_of=([up]=$up_port [nginx]=$proxy_port [inkan]=$inkan_port)
declare -A name_of=([up]="upstream direct" [nginx]="nginx proxy_pass" [inkan]="inkan" [base]="inkan (baseline)")
if [[ -n "$baseline" ]]; then
  base_port="$(free_port)"
  sed "s/127.0.0.1:$inkan_port/127.0.0.1:$base_port/" "$work/inkan.toml" >"$work/inkan-base.toml"
  start_bg "$work/logs/inkan-base.log" "$baseline" serve --config "$work/inkan-base.toml"
  wait_http "http://127.0.0.1:$base_port/-/livez"
  targets+=(base)
  port_of[base]=$base_port
fi
rss() { awk "/^$2:/ {print \$2}" "/proc/$1/status"; }
idle_rss_kib="$(rss "$inkan_pid" VmRSS)"

# wrk summary → "req/s p50_ms p99_ms"; $2: the Accept-Encoding to send
run_wrk() {
  local header=()
  [[ "${2:-identity}" == identity ]] || header=(-H "Accept-Encoding: $2")
  wrk -t"$threads" -c"$connections" -d"${duration}s" --latency "${header[@]}" "$1" >"$work/wrk.txt" 2>&1
  read -r rps p50 p99 non2xx <<<"$(python3 bench/wrk_summary.py "$work/wrk.txt")"
  [[ "$non2xx" == 0 ]] || { echo "non-2xx responses: $non2xx" >&2; exit 1; }
  echo "$rps $p50 $p99"
}

# Uncompressed, then as the common client libraries ask (gzip): nginx
# relays the upstream's compressed bytes; inkan decodes, rewrites and
# compresses again.
declare -A runs result
codings=(identity gzip)
for _ in $(seq 1 "$rounds"); do
  for coding in "${codings[@]}"; do
    for path in Patient/bench Patient/search; do
      for target in "${targets[@]}"; do
        runs[$target,$path,$coding]+="$(run_wrk "http://127.0.0.1:${port_of[$target]}/fhir/$path" "$coding");"
      done
    done
  done
done
# The median of each figure over the rounds.
for key in "${!runs[@]}"; do
  result[$key]="$(python3 -c 'import statistics, sys
rows = [r.split() for r in sys.argv[1].split(";") if r]
print(" ".join("%g" % statistics.median(float(r[i]) for r in rows) for i in range(3)))' "${runs[$key]}")"
done

# 200 MB Binary streamed through inkan; VmHWM is the peak RSS since start.
before_hwm="$(rss "$inkan_pid" VmHWM)"
curl -sS -o /dev/null -w '%{size_download}' "http://127.0.0.1:$inkan_port/fhir/Binary/big" >"$work/size"
stream_hwm_kib="$(rss "$inkan_pid" VmHWM)"

echo "Run: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, wrk -t$threads -c$connections -d${duration}s, $rounds interleaved round(s) (medians), nginx $(nginx -v 2>&1 | cut -d/ -f2) (upstream: 1 worker; proxy: worker_processes auto), inkan release build${baseline:+, baseline $baseline}"
echo
echo "| response | Accept-Encoding | target | req/s | p50 ms | p99 ms |"
echo "|---|---|---|---:|---:|---:|"
for coding in "${codings[@]}"; do
  for path in Patient/bench Patient/search; do
    for target in "${targets[@]}"; do
      read -r rps p50 p99 <<<"${result[$target,$path,$coding]}"
      echo "| $path | $coding | ${name_of[$target]} | $rps | $p50 | $p99 |"
    done
  done
done
echo
for coding in "${codings[@]}"; do
  for path in Patient/bench Patient/search; do
    read -r n_rps _ n_p99 <<<"${result[nginx,$path,$coding]}"
    read -r i_rps _ i_p99 <<<"${result[inkan,$path,$coding]}"
    python3 -c "import sys; n,i,np,ip=map(float,sys.argv[1:]); print('%s (%s): inkan/nginx req/s = %.2f×, p99 inkan − nginx = %+.3f ms' % ('$path', '$coding', i/n, ip-np))" "$n_rps" "$i_rps" "$n_p99" "$i_p99"
    if [[ -n "$baseline" ]]; then
      read -r b_rps _ b_p99 <<<"${result[base,$path,$coding]}"
      python3 -c "import sys; b,i=map(float,sys.argv[1:]); print('    inkan/baseline req/s = %.2f×' % (i/b))" "$b_rps" "$i_rps"
    fi
  done
done
echo
echo "inkan idle RSS: $((idle_rss_kib / 1024)) MiB; peak RSS after load: $((before_hwm / 1024)) MiB;" \
  "peak RSS after streaming $(($(cat "$work/size") / 1024 / 1024)) MiB Binary: $((stream_hwm_kib / 1024)) MiB"

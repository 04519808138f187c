#!/usr/bin/env bash
# The main job, end to end on one machine:
#   1. starts a real FHIR server (Helios FHIR Server, SQLite) on 127.0.0.1,
#   2. starts inkan in front of it,
#   3. writes JP Core sample resources through inkan and reads them back
#      (JSON and XML, search with paging links that point at inkan),
#   4. every write is sealed in inkan's Merkle log as the server stored it;
#      a proof bundle is fetched with the FHIR operation $proof and verified
#      offline with `inkan verify` — then verification fails once one
#      character of the record is changed;
#      The proof carries an RFC 3161 time stamp of the checkpoint from a
#      local OpenSSL TSA, checked offline against the TSA's CA;
#   5. a Shift_JIS body with half-width kana is decoded and normalized;
#   6. the record is altered directly in the upstream's SQLite database:
#      the next read through inkan flags it, and `inkan audit` finds it.
# Everything binds to 127.0.0.1. Every process the demo starts is stopped
# when it ends — on success, on failure and on Ctrl-C (scripts/lib/procs.sh).
#
#   scripts/demo.sh [--keep]
#     --keep  after the walkthrough, leave the stack up and print how to use
#             it (base URL, the log's verifier key, curl and Python lines);
#             Ctrl-C stops it all.
#   INKAN_BIN=path              use this inkan binary (no release build)
#   INKAN_HFS_BIN=path          use this Helios FHIR Server binary (no install)
#   INKAN_DEMO_FAIL_AFTER=step  fail on purpose after a step (hfs, tsa, inkan,
#                               audit): the clean-up test's failing run
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
keep=0
for arg in "$@"; do
  case "$arg" in
    --keep) keep=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $arg (try --help)" >&2; exit 2 ;;
  esac
done
source scripts/lib/procs.sh

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
fail_point() { # step: INKAN_DEMO_FAIL_AFTER=step fails here, with the stack up
  if [[ "${INKAN_DEMO_FAIL_AFTER:-}" == "$1" ]]; then
    echo "INKAN_DEMO_FAIL_AFTER=$1: failing on purpose; running: ${PROCS_PIDS[*]}" >&2
    exit 1
  fi
}

say "Building inkan and installing the upstream FHIR server (cached after the first run)"
hfs="$(scripts/install-hfs.sh)"
if [[ -n "${INKAN_BIN:-}" ]]; then
  inkan="$INKAN_BIN"
  echo "using $inkan"
else
  cargo build --release --locked -p inkan 2>&1 | tail -n 1
  inkan="$root/target/release/inkan"
fi

work="$(mktemp -d)"
at_exit 'rm -rf "$work"'

hfs_port="$(free_port)"
gw_port="$(free_port)"
tsa_port="$(free_port)"
# HFS searches only by the SearchParameters in its data directory.
python3 scripts/hfs-search-parameters.py "$work"
say "Starting Helios FHIR Server on 127.0.0.1:$hfs_port (it advertises http://localhost:8080 as its base)"
start_bg -C "$work" "$work/hfs.log" env HFS_DATA_DIR="$work" HFS_LOG_LEVEL=warn \
  "$hfs" --host 127.0.0.1 --port "$hfs_port" --database-url "$work/hfs.sqlite"
wait_http "http://127.0.0.1:$hfs_port/metadata" 60
fail_point hfs

say "Starting a local RFC 3161 time-stamp authority (OpenSSL's TSA behind scripts/tsa-shim.py) on 127.0.0.1:$tsa_port"
python3 scripts/tsa-shim.py init "$work/tsa"
start_bg "$work/tsa.log" python3 scripts/tsa-shim.py serve "$work/tsa" "$tsa_port"
wait_http "http://127.0.0.1:$tsa_port/-/mode"
fail_point tsa

cat >"$work/inkan.toml" <<TOML
listen = "127.0.0.1:$gw_port"
base_path = "/fhir"

[upstream]
url = "http://127.0.0.1:$hfs_port"

[ledger]
dir = "$work/ledger"
origin = "demo.inkan.local/ledger"
seal_writes = true          # the default: every version written through inkan is sealed
verify_reads = "annotate"   # the default: every version read through inkan is checked

[anchors.rfc3161]           # checkpoints (only their hashes) are time-stamped by the TSA
url = "http://127.0.0.1:$tsa_port/tsa"
ca_file = "$work/tsa/ca.pem"
interval_ms = 1000
TOML
say "Starting inkan on 127.0.0.1:$gw_port, FHIR base http://127.0.0.1:$gw_port/fhir"
start_bg "$work/inkan.log" "$inkan" serve --config "$work/inkan.toml"
# Ready when the upstream answers through the gateway (/-/readyz needs
# the admin token).
wait_http "http://127.0.0.1:$gw_port/fhir/metadata"
base="http://127.0.0.1:$gw_port/fhir"
fail_point inkan

fixtures="$root/fixtures/jp-core/json"
patient_file="$fixtures/Patient-jp-patient-example-1.json"
if [[ ! -f "$patient_file" ]]; then
  patient_file="$work/patient.json"
  cat >"$patient_file" <<'JSON'
{"resourceType":"Patient","name":[{"text":"山田 太郎","family":"山田","given":["太郎"]}],"gender":"male","birthDate":"1970-01-01"}
JSON
fi

say "Creating a JP Core Patient (山田 太郎) through inkan"
python3 - "$patient_file" >"$work/patient-new.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
p.pop("id", None)  # let the server assign one
print(json.dumps(p, ensure_ascii=False))
PY
curl -sS -D "$work/h" -o "$work/created.json" -X POST "$base/Patient" \
  -H 'Content-Type: application/fhir+json' -H 'Prefer: return=representation' --data-binary @"$work/patient-new.json"
location="$(grep -i '^location:' "$work/h" | tr -d '\r' | cut -d' ' -f2)"
leaf="$(grep -i '^inkan-leaf-index:' "$work/h" | tr -d '\r' | cut -d' ' -f2)"
id="$(json 'd["id"]' <"$work/created.json")"
version="$(json 'd["meta"]["versionId"]' <"$work/created.json")"
echo "201 Created, Location: $location   (points at inkan, not at the upstream)"
grep -iE '^(inkan-seal|inkan-leaf-index|inkan-commitment|repr-digest):' "$work/h" | tr -d '\r'
echo "(sealed as leaf $leaf of the log before the client heard \"created\")"

say "Creating observations and an organization from the JP Core examples"
for f in Observation-jp-observation-vitalsigns-example-1.json Observation-jp-observation-bodyMeasurement-example-1.json Organization-jp-organization-example-hospital.json; do
  [[ -f "$fixtures/$f" ]] || continue
  python3 - "$fixtures/$f" "$id" >"$work/r.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); r.pop("id", None); r.pop("contained", None)
if "subject" in r: r["subject"] = {"reference": "Patient/" + sys.argv[2]}
for key in ("performer", "encounter", "partOf", "hasMember", "derivedFrom", "specimen", "basedOn"):
    r.pop(key, None)
print(json.dumps(r, ensure_ascii=False))
PY
  kind="${f%%-*}"
  code="$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$base/$kind" -H 'Content-Type: application/fhir+json' --data-binary @"$work/r.json")"
  echo "POST $kind → $code"
done

say "Searching through inkan: every link and fullUrl points at inkan"
curl -sS "$base/Observation?subject=Patient/$id&_count=1" | json '"\n".join(["total entries on page: %d" % len(d.get("entry",[]))] + ["link %-5s %s" % (l["relation"], l["url"]) for l in d["link"]] + ["fullUrl     " + e["fullUrl"] for e in d.get("entry",[])])'

say "Reading the Patient as FHIR XML (the upstream speaks only JSON; inkan bridges)"
# Read whole, then cut: `curl | head` fails under pipefail when head closes first.
patient_xml="$(curl -sS "$base/Patient/$id" -H 'Accept: application/fhir+xml')"
printf '%s' "${patient_xml:0:400}"; echo " …"

say "An error from the gateway itself is a FHIR OperationOutcome (body over the limit → 413)"
head -c 40000000 /dev/zero | tr '\0' ' ' >"$work/big.json"
curl -sS -o "$work/oo.json" -w 'HTTP %{http_code}\n' -X POST "$base/Patient" -H 'Content-Type: application/fhir+json' --data-binary @"$work/big.json"
json 'd["issue"][0]["diagnostics"]' <"$work/oo.json"

say "A legacy system sends Shift_JIS with half-width kana (ﾔﾏﾀﾞ ﾊﾅｺ): inkan decodes and normalizes it"
python3 -c 'import json,sys; sys.stdout.buffer.write(json.dumps({"resourceType":"Patient","name":[{"family":"ﾔﾏﾀﾞ","given":["ﾊﾅｺ"],"text":"ﾔﾏﾀﾞ\u3000ﾊﾅｺ"}],"gender":"female"}, ensure_ascii=False).encode("cp932"))' >"$work/sjis.json"
curl -sS -D "$work/hj" -o "$work/sjis-created.json" -X POST "$base/Patient" \
  -H 'Content-Type: application/fhir+json; charset=Shift_JIS' --data-binary @"$work/sjis.json"
grep -i '^inkan-text:' "$work/hj" | tr -d '\r'
sjis_id="$(json 'd["id"]' <"$work/sjis-created.json")"
echo "stored upstream (read from HFS directly): $(curl -sS "http://127.0.0.1:$hfs_port/Patient/$sjis_id" | json 'd["name"][0]["text"]')"
echo "found by a half-width search: $(curl -sS "$base/Patient?family=ﾔﾏﾀﾞ" | json 'len(d.get("entry", []))') match(es)"

say "Exporting the proof bundle of Patient/$id version $version (sealed at create time)"
curl -sS "$base/Patient/$id/_history/$version" >"$work/stored.json"
ledger() { "$inkan" ledger --config "$work/inkan.toml" "$@"; }
# The checkpointer signs a checkpoint every second when the log grew; the
# TSA stamps the latest one. Wait until the proof carries the stamp.
for _ in $(seq 1 50); do
  curl -fsS "$base/Patient/$id/_history/$version/\$proof" >"$work/proof.json" 2>/dev/null || true
  grep -q '"rfc3161"' "$work/proof.json" 2>/dev/null && break
  sleep 0.2
done
curl -sS "http://127.0.0.1:$gw_port/-/log/checkpoint"
curl -fsS "$base/Patient/$id/_history/$version/\$proof" >"$work/proof.json"   # the FHIR operation
ledger key >"$work/log.pub"
echo "proof bundle: $(wc -c <"$work/proof.json") bytes; verifier key: $(cat "$work/log.pub")"

say "Verifying offline: only the proof bundle, the record and the log's public key"
"$inkan" verify --bundle "$work/proof.json" --resource "$work/stored.json" --log-key "$work/log.pub" \
  --tsa-ca "$work/tsa/ca.pem"
echo "(the RFC 3161 token is checked against the TSA's CA certificate: trusted time without trusting the hospital)"
"$inkan" anchors status --config "$work/inkan.toml"

say "The same record as XML verifies too (the seal does not depend on the wire format)"
curl -sS "$base/Patient/$id/_history/$version" -H 'Accept: application/fhir+xml' >"$work/stored.xml"
"$inkan" verify --bundle "$work/proof.json" --resource "$work/stored.xml" --log-key "$work/log.pub"

say "Changing one character of the record (太郎 → 太朗): verification must fail"
sed 's/太郎/太朗/' "$work/stored.json" >"$work/altered.json"
if "$inkan" verify --bundle "$work/proof.json" --resource "$work/altered.json" --log-key "$work/log.pub"; then
  echo "UNEXPECTED: an altered record verified" >&2
  exit 1
fi

say "Reading through inkan: each version is checked against its seal (Inkan-Verify header)"
curl -sS -D - -o /dev/null "$base/Patient/$id" | grep -i '^inkan-verify:' | tr -d '\r'

say "Someone edits the record directly in the upstream's database (太郎 → 太朗), behind the gateway's back"
python3 - "$work/hfs.sqlite" "$id" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for table in ("resource_history", "resources"):
    for (data,) in db.execute(f"SELECT data FROM {table} WHERE id = ?", (sys.argv[2],)).fetchall():
        db.execute(f"UPDATE {table} SET data = ? WHERE id = ?",
                   (bytes(data).decode().replace("太郎", "太朗").encode(), sys.argv[2]))
db.commit()
print("UPDATE resource_history / resources … done")
PY
echo "The next read through inkan flags it:"
curl -sS -D - -o /dev/null "$base/Patient/$id" | grep -i '^inkan-verify:' | tr -d '\r'

say "inkan audit sweeps the upstream's history and compares every version with the ledger"
set +e
"$inkan" audit --config "$work/inkan.toml" --report "$work/audit.json" --no-progress
audit_exit=$?
set -e
echo "(exit code $audit_exit: 1 means something was tampered or is missing; the JSON report is in audit.json."
echo " The unsealed versions are the SearchParameters HFS loaded at start, never written through inkan;"
echo " 'inkan backfill' would seal them as first seen.)"
[[ $audit_exit == 1 ]] || { echo "UNEXPECTED: the audit did not find the alteration" >&2; exit 1; }
fail_point audit

say "Ledger health"
ledger fsck
echo
echo "Demo complete. Anchoring on an EVM chain (Besu, Ethereum) is configured the same way: docs/anchors.md."
((keep)) || exit 0

say "The stack stays up for your own client (Ctrl-C stops it all and removes $work)"
cat <<TXT
  FHIR base URL (inkan):  $base
  the upstream directly:  http://127.0.0.1:$hfs_port  (HFS; writes made there are not sealed)
  signed checkpoint:      http://127.0.0.1:$gw_port/-/log/checkpoint
  log verifier key:       $(cat "$work/log.pub")
  config, ledger, logs:   $work  (inkan.toml, ledger/, log.pub, *.log)

  Patient/$id is the record altered behind inkan's back: reads flag it (Inkan-Verify).

  curl -sS -i -w '\\n' -X POST '$base/Patient' -H 'Content-Type: application/fhir+json' \\
    -d '{"resourceType":"Patient","name":[{"family":"佐藤","given":["花子"]}]}'
  python3 -c "import json, urllib.request as u; b = json.load(u.urlopen('$base/Patient?_count=10')); print([e['resource']['id'] for e in b.get('entry', [])])"
  python3 -c "from fhirclient import client; from fhirclient.models.patient import Patient; print(Patient.read('$sjis_id', client.FHIRClient(settings={'app_id': 'demo', 'api_base': '$base'}).server).as_json())"   # pip install fhirclient
  $inkan ledger --config $work/inkan.toml proof --type Patient --id $sjis_id --version 1 >proof.json
  $inkan verify --bundle proof.json --resource <(curl -sS '$base/Patient/$sjis_id') --log-key $work/log.pub --tsa-ca $work/tsa/ca.pem
TXT
echo
echo "Stack up; press Ctrl-C to stop it."
# Until Ctrl-C (the traps stop everything) or until a server dies.
while sleep 1; do
  for pid in "${PROCS_PIDS[@]}"; do
    if ! procs_alive "$pid"; then
      echo "$(basename "${PROCS_LOG[$pid]}" .log) (pid $pid) exited unexpectedly; the end of its log:" >&2
      tail -n 20 "${PROCS_LOG[$pid]}" >&2
      exit 1
    fi
  done
done

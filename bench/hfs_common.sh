# shellcheck shell=bash
# Shared set-up for the benchmarks that run Helios FHIR Server and inkan
# (sourced, not run): builds inkan (release), installs HFS, a work dir
# removed on exit, and helpers. Every process started with start_bg
# (scripts/lib/procs.sh) is stopped on exit, failure and Ctrl-C.
command -v wrk >/dev/null || { echo "needs wrk: apt-get install -y wrk" >&2; exit 1; }
source scripts/lib/procs.sh
hfs="$(scripts/install-hfs.sh)"
cargo build --release --locked -p inkan >&2
# INKAN_BIN: measure another build (an older commit) with the same script.
inkan="${INKAN_BIN:-$(pwd)/target/release/inkan}"
work="$(mktemp -d)"
at_exit 'rm -rf "$work"'
start_hfs() { # dir port
  mkdir -p "$1"; python3 scripts/hfs-search-parameters.py "$1"
  start_bg -C "$1" "$1/hfs.log" env HFS_DATA_DIR="$1" HFS_LOG_LEVEL=warn \
    "$hfs" --host 127.0.0.1 --port "$2" --database-url "$1/hfs.sqlite"
  wait_http "http://127.0.0.1:$2/metadata" 60
}
start_inkan_gw() { # config log port: inkan serve, ready when the upstream answers
  start_bg "$2" "$inkan" serve --config "$1"
  wait_http "http://127.0.0.1:$3/fhir/metadata"
}
# wrk's POST body: a small JP Patient.
cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/fhir+json"
wrk.body = '{"resourceType":"Patient","name":[{"family":"山田","given":["太郎"]}],"gender":"male","birthDate":"1970-01-01"}'
LUA

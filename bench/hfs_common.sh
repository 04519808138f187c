# Shared set-up for the benchmarks that run Helios FHIR Server and inkan
# (sourced, not run): builds inkan (release), installs HFS, a work dir
# removed on exit with every started process, and helpers.
command -v wrk >/dev/null || { echo "needs wrk: apt-get install -y wrk" >&2; exit 1; }
hfs="$(scripts/install-hfs.sh)"
cargo build --release --locked -p inkan >&2
inkan="$(pwd)/target/release/inkan"
work="$(mktemp -d)"; pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ok() { for _ in $(seq 1 200); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "timeout: $1" >&2; exit 1; }
start_hfs() { # dir port
  mkdir -p "$1"; python3 scripts/hfs-search-parameters.py "$1"
  (cd "$1" && HFS_DATA_DIR="$1" HFS_LOG_LEVEL=warn "$hfs" --host 127.0.0.1 --port "$2" --database-url "$1/hfs.sqlite" >"$1/hfs.log" 2>&1) &
  pids+=($!); wait_ok "http://127.0.0.1:$2/metadata"
}
# wrk's POST body: a small JP Patient.
cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/fhir+json"
wrk.body = '{"resourceType":"Patient","name":[{"family":"山田","given":["太郎"]}],"gender":"male","birthDate":"1970-01-01"}'
LUA

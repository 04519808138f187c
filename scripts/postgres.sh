#!/usr/bin/env bash
# A throwaway PostgreSQL for the tests and benchmarks of the shared ledger:
# Debian's server (installed when missing, as root), a cluster in a
# directory of the caller's choosing, run by pg_ctl on 127.0.0.1 as an
# unprivileged user (initdb refuses root: as root, the cluster belongs to
# the `postgres` account Debian's package creates).
#
#   scripts/postgres.sh start DIR [PORT]   init DIR if empty, start; prints the URL
#   scripts/postgres.sh stop DIR [fast|immediate]
#                                          stop (immediate: like a crash)
#
# The URL names database `inkan`, user `inkan`, no password (trust on
# loopback only: a test cluster, never a production one).
set -euo pipefail
cd "$(dirname "$0")/.."

command_name="${1:?usage: scripts/postgres.sh start|stop DIR}"
dir="${2:?usage: scripts/postgres.sh start|stop DIR}"

bindir() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [[ -z "$found" ]]; then
    if [[ "$(id -u)" != 0 ]]; then
      echo "PostgreSQL is missing: sudo apt-get install -y postgresql" >&2
      return 1
    fi
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null
    found=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  echo "$found"
}

# Runs a server program as the cluster's owner.
as_owner() {
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

bin="$(bindir)"
case "$command_name" in
start)
  port="${3:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
  mkdir -p "$dir"
  if [[ "$(id -u)" == 0 ]]; then
    chown postgres: "$dir"
    # The owner must reach its directory: a private temporary parent
    # (mode 0700) gets search permission, not read.
    chmod o+x "$(dirname "$dir")"
  fi
  chmod 700 "$dir"
  if [[ ! -f "$dir/PG_VERSION" ]]; then
    as_owner "$bin/initdb" -D "$dir" -U inkan -A trust --no-instructions -E UTF8 --locale C >"$dir.initdb.log" 2>&1 ||
      { cat "$dir.initdb.log" >&2; exit 1; }
  fi
  # Loopback TCP only; the socket lives in the cluster directory, not in
  # /run/postgresql (which may not exist, or belong to the system server).
  as_owner "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=on" >/dev/null ||
    { cat "$dir/server.log" >&2; exit 1; }
  if ! "$bin/psql" -h 127.0.0.1 -p "$port" -U inkan -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = 'inkan'" | grep -q 1; then
    "$bin/psql" -h 127.0.0.1 -p "$port" -U inkan -d postgres -qc 'CREATE DATABASE inkan' >/dev/null
  fi
  echo "postgres://inkan@127.0.0.1:$port/inkan"
  ;;
stop)
  mode="${3:-fast}"
  [[ -f "$dir/postmaster.pid" ]] || exit 0
  as_owner "$bin/pg_ctl" -D "$dir" -m "$mode" -w -t 60 stop >/dev/null
  ;;
*)
  echo "usage: scripts/postgres.sh start|stop DIR" >&2
  exit 2
  ;;
esac

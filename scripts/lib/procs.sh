# shellcheck shell=bash
# Background processes that are stopped when the script ends — on success,
# on failure and on Ctrl-C. Sourced, not run:
#
#   source scripts/lib/procs.sh      # installs the EXIT/INT/TERM/HUP traps
#   at_exit 'rm -rf "$work"'         # more clean-up, run after the processes stopped
#   start_bg [-C DIR] LOG CMD...     # CMD in DIR, output to LOG; its PID in $BG_PID
#   wait_http URL [SECONDS]          # until URL answers 2xx; fails fast if the
#                                    # last started process died (shows its log)
#   procs_alive PID                  # it (or what it spawned) still runs
#   stop_procs PID...                # stop some of them now
#   free_port                        # a loopback port that was free a moment ago
#
# Each process runs in its own session (setsid, exec'd: $BG_PID is the
# server itself, not a wrapping subshell), so what it spawns is stopped with
# it and nothing else is touched. Stopping sends SIGTERM to the process
# group, waits up to PROCS_GRACE seconds (default 3) for every member to
# exit, then sends SIGKILL and waits again. Don't replace the traps:
# register clean-up with at_exit.

PROCS_PIDS=()
PROCS_AT_EXIT=()
declare -A PROCS_LOG=()
BG_PID=

start_bg() { # [-C DIR] LOG CMD...
  local dir=.
  if [[ "$1" == -C ]]; then dir="$2"; shift 2; fi
  local log="$1"; shift
  # The subshell is not a process-group leader, so setsid makes the new
  # session in place and execs CMD: one process, whose PID is $!.
  (cd "$dir" && exec setsid "$@" >"$log" 2>&1 </dev/null) &
  BG_PID=$!
  # Out of the job table: no "Killed" notices; stop_procs waits by polling.
  disown "$BG_PID"
  PROCS_PIDS+=("$BG_PID")
  PROCS_LOG[$BG_PID]="$log"
}

# True while the process $1 or a member of its group is alive. Zombies don't
# count: the group's other members are reaped by init, which takes its time.
procs_alive() {
  kill -0 -- "-$1" 2>/dev/null || kill -0 "$1" 2>/dev/null || return 1
  local f line fields
  for f in /proc/[0-9]*/stat; do
    read -r line 2>/dev/null <"$f" || continue
    # shellcheck disable=SC2206 # numbers and a state letter: split on spaces
    fields=(${line##*) }) # state ppid pgrp …
    [[ "${fields[0]}" != Z ]] && [[ "${fields[2]}" == "$1" || "$f" == "/proc/$1/stat" ]] && return 0
  done
  return 1
}

_procs_signal() { # SIGNAL PID: the whole group, or the process if it has none
  kill -"$1" -- "-$2" 2>/dev/null || kill -"$1" "$2" 2>/dev/null || true
}

_procs_left=()
_procs_poll() { # TENTHS: until every PID in _procs_left is gone, at most TENTHS/10 s
  local tick pid still
  for ((tick = 0; ${#_procs_left[@]} && tick < $1; tick++)); do
    sleep 0.1
    still=()
    for pid in "${_procs_left[@]}"; do procs_alive "$pid" && still+=("$pid"); done
    _procs_left=("${still[@]}")
  done
}

stop_procs() { # PID...: SIGTERM, up to PROCS_GRACE s, SIGKILL; returns when they are gone
  local grace="${PROCS_GRACE:-3}" pid kept=()
  _procs_left=()
  for pid in "$@"; do
    if procs_alive "$pid"; then _procs_signal TERM "$pid"; _procs_left+=("$pid"); fi
  done
  _procs_poll $((grace * 10))
  for pid in "${_procs_left[@]}"; do
    echo "$(cat "/proc/$pid/comm" 2>/dev/null || echo process) (pid $pid) did not stop within $grace s of SIGTERM: killed" >&2
    _procs_signal KILL "$pid"
  done
  _procs_poll 50
  for pid in "${_procs_left[@]}"; do echo "pid $pid (or its group) survives SIGKILL" >&2; done
  for pid in "${PROCS_PIDS[@]}"; do [[ " $* " == *" $pid "* ]] || kept+=("$pid"); done
  PROCS_PIDS=("${kept[@]}")
}

# Every process started here, newest first.
stop_all() {
  local reversed=() i
  for ((i = ${#PROCS_PIDS[@]} - 1; i >= 0; i--)); do reversed+=("${PROCS_PIDS[i]}"); done
  ((${#reversed[@]} == 0)) || stop_procs "${reversed[@]}"
}

at_exit() { PROCS_AT_EXIT+=("$1"); }

# Stops every process whose environment holds NAME=VALUE (a marker a script
# exported before starting things it does not track itself, such as the
# servers a test binary spawns), except this shell.
stop_marked() { # NAME VALUE
  local f pid marked=()
  for f in /proc/[0-9]*/environ; do
    pid="${f#/proc/}"; pid="${pid%/environ}"
    [[ "$pid" == "$$" || "$pid" == "$BASHPID" ]] && continue
    # A process may end between the listing and the read: say nothing.
    { tr '\0' '\n' <"$f"; } 2>/dev/null | grep -qxF "$1=$2" && marked+=("$pid")
  done
  ((${#marked[@]} == 0)) || stop_procs "${marked[@]}"
}

_procs_exit() {
  local status=$? cmd
  set +e
  trap - EXIT
  trap '' INT TERM HUP # clean-up is bounded (a few seconds): let it finish
  stop_all
  for cmd in "${PROCS_AT_EXIT[@]}"; do eval "$cmd"; done
  exit "$status"
}
trap _procs_exit EXIT
# A signal ends the script through its EXIT trap, with the shell's usual status.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() { # URL [SECONDS, default 40]: until URL answers 2xx
  local deadline=$((SECONDS + ${2:-40})) pid="$BG_PID"
  until curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; do
    if [[ -n "$pid" ]] && ! procs_alive "$pid"; then
      echo "the process behind $1 exited; the end of ${PROCS_LOG[$pid]}:" >&2
      tail -n 20 "${PROCS_LOG[$pid]}" >&2
      return 1
    fi
    if ((SECONDS >= deadline)); then
      echo "timed out waiting for $1; the end of ${PROCS_LOG[$pid]:-its log}:" >&2
      [[ -z "$pid" ]] || tail -n 20 "${PROCS_LOG[$pid]}" >&2
      return 1
    fi
    sleep 0.1
  done
}

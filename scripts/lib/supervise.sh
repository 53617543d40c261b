# shellcheck shell=bash
# Process supervision for the scripts that run a real server for the tests
# and the bench (scripts/swift.sh, tests/keystone/keystone.sh,
# bench/peers/glance.sh): start helper commands and the server as children,
# wait until the server answers, serve until standard input ends or a signal
# comes, then stop every process started, by PID, and nothing else. Sourced,
# under `set -euo pipefail`.
#
# Provides:
#   die, fail, usage, show_logs         messages (usage prints the script's
#                                       header comment)
#   free_port PYTHON                    a free loopback TCP port
#   supervise                           from here on, whatever happens, stop
#                                       what was started
#   spawn NAME CMD...                   start a child, logging to
#                                       DIR/logs/NAME.log
#   wait_steps FIRST                    wait for the children from index FIRST
#                                       of PIDS on, which end by themselves
#   answers PORT PATH STATUS...         true when GET PATH has one of STATUS
#   wait_until CHECK...                 poll CHECK until it succeeds
#   serve_until_eof                     serve until stdin ends or a signal
#   stop_children, dead_child, alive_child, children_of, alive_same
#
# Globals:
#   PROG           the script's name, for messages ("keystone.sh")    (caller)
#   SERVICE        the server's name, for messages ("Keystone")       (caller)
#   DIR            the server's directory; logs go to DIR/logs        (caller)
#   START_TIMEOUT  seconds start-up may take                          (caller)
#   STOP_GRACE     seconds the children get to stop after SIGTERM, before
#                  SIGKILL (caller, optional: 8 if unset)
#   PIDS, NAMES    the children started (spawn), their names
#   DEADLINE       end of start-up, in SECONDS (supervise sets it)
#   PDEATHSIG      the prefix that gives a child SIGKILL should the script
#                  die (setpriv --pdeathsig KILL, if there; supervise sets it)
#   DEAD           the child that dead_child found exited
#   STOP           the exit status a signal asked for, while serving

# PIDs of the processes this script started, and their names (for messages).
PIDS=()
NAMES=()
PDEATHSIG=()

die() {
  printf '%s: %s\n' "$PROG" "$*" >&2
  exit 1
}

# Like die, followed by the end of every log.
fail() {
  printf '%s: %s\n' "$PROG" "$*" >&2
  show_logs
  exit 1
}

# Prints the script's header comment (from line 2 to `set -euo`).
usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit 2
}

# Prints a free loopback TCP port (released again, for the server to bind),
# found with the Python interpreter $1.
free_port() {
  "$1" -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
'
}

# True while PID is a live (not zombie) child of this script. Checking the
# parent, not just that the PID exists, means a PID that the system has
# reused for another process after one of ours exited is never signalled.
alive_child() {
  local stat state ppid
  # (read, not $(<file): under set -e, bash exits if the file is gone.)
  IFS= read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  # Fields after the command name, which is in parentheses: state, ppid, ...
  read -r state ppid _ <<<"${stat##*) }"
  [ "$ppid" = "$$" ] && [ "$state" != Z ]
}

# Prints "PID:STARTTIME" for each child of process $1 (a server's workers):
# the start time tells the same process from a later one with its PID.
children_of() {
  local pid stat rest
  local -a fields
  for pid in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    IFS= read -r stat 2>/dev/null <"/proc/$pid/stat" || continue
    rest=${stat##*) }
    read -r -a fields <<<"$rest"
    # starttime is field 22 of stat, the 20th after the command name.
    printf '%s:%s\n' "$pid" "${fields[19]}"
  done
}

# True while the process PID:STARTTIME ($1) exists, not as a zombie.
alive_same() {
  local pid=${1%:*} start=${1#*:} stat rest
  local -a fields
  IFS= read -r stat 2>/dev/null <"/proc/$pid/stat" || return 1
  rest=${stat##*) }
  read -r -a fields <<<"$rest"
  [ "${fields[19]}" = "$start" ] && [ "${fields[0]}" != Z ]
}

# Stops every process this script started: SIGTERM, a grace period of
# STOP_GRACE seconds, 8 unless the caller set it (for the server to finish
# requests under way), then SIGKILL for any still alive, and reaps them all.
# The children of those (a server's workers), which their parent stops (and
# the kernel kills should it die), get SIGKILL too should one outlive it.
stop_children() {
  local pid i alive grand=() left=()
  set +e # clean-up goes on whatever fails
  [ ${#PIDS[@]} -gt 0 ] || return 0
  for pid in "${PIDS[@]}"; do
    alive_child "$pid" && grand+=($(children_of "$pid"))
  done
  for pid in "${PIDS[@]}"; do
    alive_child "$pid" && kill -TERM "$pid" 2>/dev/null
  done
  for ((i = 0; i < ${STOP_GRACE:-8} * 20; i++)); do
    alive=0
    for pid in "${PIDS[@]}"; do
      alive_child "$pid" && alive=1
    done
    [ "$alive" = 0 ] && break
    sleep 0.05
  done
  for pid in "${PIDS[@]}"; do
    alive_child "$pid" && kill -KILL "$pid" 2>/dev/null
  done
  wait "${PIDS[@]}" 2>/dev/null
  PIDS=()
  for ((i = 0; i < 40 && ${#grand[@]} > 0; i++)); do
    left=()
    for pid in "${grand[@]}"; do
      alive_same "$pid" && left+=("$pid")
    done
    grand=("${left[@]}")
    [ ${#grand[@]} -gt 0 ] && sleep 0.05
  done
  for pid in "${grand[@]}"; do
    alive_same "$pid" && kill -KILL "${pid%:*}" 2>/dev/null
  done
}

# Prints the end of every log under DIR/logs to stderr.
show_logs() {
  local log
  for log in "$DIR"/logs/*.log; do
    [ -e "$log" ] || continue
    if [ -s "$log" ]; then
      printf -- '--- %s (last 30 lines)\n' "$log" >&2
      tail -n 30 "$log" >&2
    else
      printf -- '--- %s (empty)\n' "$log" >&2
    fi
  done
}

# From here on, whatever happens, stop what was started (signals during
# start-up interrupt the wait for the step under way); start-up must end
# within START_TIMEOUT seconds. Children started from now on get SIGKILL
# should this script die.
supervise() {
  PDEATHSIG=()
  if [[ $(setpriv --help 2>/dev/null) == *--pdeathsig* ]]; then
    PDEATHSIG=(setpriv --pdeathsig KILL)
  fi
  trap stop_children EXIT
  trap 'exit 143' TERM
  trap 'exit 130' INT
  trap 'exit 129' HUP
  DEADLINE=$((SECONDS + START_TIMEOUT))
}

# Starts a child process in the background, its stdin from /dev/null and its
# output appended to DIR/logs/NAME.log, and records its PID. The child gets
# SIGKILL should this script die (setpriv execs it: same PID).
spawn() {
  local name=$1
  shift
  "${PDEATHSIG[@]}" "$@" </dev/null >>"$DIR/logs/$name.log" 2>&1 &
  PIDS+=("$!")
  NAMES+=("$name")
}

# Waits for the children from index $1 of PIDS on (commands started with
# spawn that end by themselves) and forgets them; fails, with the logs, if
# one of them fails or is still running at DEADLINE. (Background children
# polled, so that a signal stops start-up at once rather than after the
# command under way.) The children before index $1 stay.
wait_steps() {
  local first=$1 i rc
  for ((i = first; i < ${#PIDS[@]}; i++)); do
    while alive_child "${PIDS[$i]}"; do
      ((SECONDS < DEADLINE)) ||
        fail "${NAMES[$i]} did not finish within ${START_TIMEOUT}s of start-up"
      sleep 0.1
    done
    rc=0
    wait "${PIDS[$i]}" || rc=$?
    [ "$rc" = 0 ] || fail "${NAMES[$i]} exited with status $rc"
  done
  PIDS=("${PIDS[@]:0:first}")
  NAMES=("${NAMES[@]:0:first}")
}

# True if a child has exited; DEAD then names the first one.
dead_child() {
  local i
  for i in "${!PIDS[@]}"; do
    if ! alive_child "${PIDS[$i]}"; then
      DEAD="${NAMES[$i]} (pid ${PIDS[$i]})"
      return 0
    fi
  done
  return 1
}

# True when the server at 127.0.0.1:$1 answers GET $2 with one of the status
# codes $3... (bash's /dev/tcp, so no other program is needed).
answers() {
  local port=$1 path=$2
  shift 2
  (
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\nAccept: application/json\r\n\r\n' \
      "$path" "$port" >&3
    IFS= read -r -t 10 status <&3
    for code; do
      [[ $status == "HTTP/1."?" $code"* ]] && exit 0
    done
    exit 1
  ) 2>/dev/null
}

# Runs the check given as arguments every 0.2 s until it succeeds; fails if a
# child exits meanwhile or when DEADLINE (in SECONDS) has passed.
wait_until() {
  until "$@"; do
    if dead_child; then
      fail "$DEAD exited during start-up"
    fi
    if ((SECONDS >= DEADLINE)); then
      fail "$SERVICE did not answer within ${START_TIMEOUT}s of start-up"
    fi
    sleep 0.2
  done
}

# Serves until stdin reaches end of file (exit 0) or a signal comes (exit
# 128+N), checking on the children 4 times a second (exit 1, with the logs,
# if one has exited); stop_children, the EXIT trap, then stops them all. A
# signal now only sets STOP, which the loop sees once `read` times out: the
# clean-up must not run inside the interrupted `read` (bash's own `read` then
# misbehaves in it).
serve_until_eof() {
  local rc
  STOP=
  trap 'STOP=143' TERM
  trap 'STOP=130' INT
  trap 'STOP=129' HUP
  while :; do
    rc=0
    IFS= read -r -t 0.25 _ || rc=$?
    if [ -n "$STOP" ]; then
      exit "$STOP"
    elif ((rc > 0 && rc <= 128)); then
      exit 0 # end of file
    elif dead_child; then
      fail "$DEAD exited"
    fi
  done
}

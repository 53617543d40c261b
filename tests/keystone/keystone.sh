#!/usr/bin/env bash
# Runs a real OpenStack Keystone (keystone 30.0.0 from PyPI, under gunicorn,
# on SQLite) on loopback, for the project's tests.
#
# Usage:
#   tests/keystone/keystone.sh install VENV
#       Installs keystone==30.0.0 and gunicorn into the Python venv VENV
#       (made with `python3 -m venv` if missing), constrained by OpenStack's
#       upper constraints (tests/clients/upper-constraints.txt), as the
#       OpenStack clients that the tests put in the same venv. Idempotent,
#       and quick when they are there already.
#   tests/keystone/keystone.sh serve VENV DIR [--image-url URL]
#       DIR is an empty directory owned by the caller (a temp dir). Everything
#       Keystone needs is written under it: keystone.conf (and an empty
#       keystone.conf.d), the SQLite database, the fernet and credential key
#       repositories and the logs (DIR/logs/*.log); nothing under
#       /etc/keystone (nor ~/.keystone, /etc) is read. Makes the database and
#       keys (keystone-manage db_sync, fernet_setup, credential_setup,
#       bootstrap), starts Keystone under gunicorn on a free loopback port,
#       waits (120 s at most) until it answers, then creates through its API:
#         projects demo, alt and service (domain Default);
#         users demo-admin (admin on demo), demo-member (member on demo),
#           demo-reader (reader on demo), alt-member (member on alt) and
#           glance (service and admin on service, as devstack makes it: the
#           service role lets it validate other users' tokens);
#         the image service (named glance) with public, internal and admin
#           endpoints in region RegionOne at URL (default
#           http://127.0.0.1:9292).
#       Bootstrap's admin user (admin on project admin, and on the system)
#       is there too. Every user, admin included, is in domain Default and
#       has one password, random for each run; the users above have their
#       project as default project (admin has none). Bootstrap's roles imply
#       one another, admin > manager > member > reader, and a token lists the
#       implied roles too: demo-member's has member and reader, in no set
#       order. Then prints exactly one line to stdout:
#
#         ready auth_url=http://127.0.0.1:PORT/v3 password=PASSWORD
#
#       and keeps serving until its standard input reaches end of file (the
#       caller closed it or died) or it gets SIGTERM, SIGINT or SIGHUP. Then it
#       stops the processes it started (gunicorn's master and its worker), by
#       PID, and exits (0 at end of input, 128+N on signal N). Should this
#       script be killed outright, the kernel kills them all (parent death
#       signal). If gunicorn dies while serving, the script exits 1; if
#       start-up fails, it prints the logs' tails to stderr and exits 1. The
#       caller may remove DIR afterwards. Start-up takes 12-25 s on two
#       cores, most of it CPU spent loading Keystone's Python code, once per
#       keystone-manage command and once for the server; stopping, 2-3 s.
#
# The server (tests/keystone/gunicorn.conf.py): one gunicorn worker process
# with 4 threads and Keystone's cache in its memory, every response with
# "Connection: close"; Keystone's app wrapped by
# tests/keystone/keystone_wsgi.py so that SQLite transactions under parallel
# requests queue instead of failing with "database is locked". Tokens are
# fernet tokens, valid for an hour.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CONSTRAINTS=$ROOT/tests/clients/upper-constraints.txt
KEYSTONE_VERSION=30.0.0
REGION=RegionOne
START_TIMEOUT=120

die() {
  printf 'keystone.sh: %s\n' "$*" >&2
  exit 1
}

# Like die, followed by the end of every log.
fail() {
  printf 'keystone.sh: %s\n' "$*" >&2
  show_logs
  exit 1
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit 2
}

# --- install -----------------------------------------------------------------

# True when VENV has Keystone (this version) and gunicorn.
installed() {
  [ -x "$VENV/bin/keystone-manage" ] && [ -x "$VENV/bin/gunicorn" ] &&
    "$VENV/bin/python" - "$KEYSTONE_VERSION" 2>/dev/null <<'EOF'
import sys
from importlib.metadata import version
sys.exit(version("keystone") != sys.argv[1] or not version("gunicorn"))
EOF
}

install() {
  installed && return 0
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  # Without the constraints pip would take the newest SQLAlchemy, oslo.db and
  # so on, which this Keystone may not run on.
  "$VENV/bin/pip" install -q --disable-pip-version-check -c "$CONSTRAINTS" \
    "keystone==$KEYSTONE_VERSION" gunicorn
  installed || die "install: Keystone is still missing from $VENV"
}

# --- serve -------------------------------------------------------------------

# PIDs of the processes this script started, and their names (for messages).
PIDS=()
NAMES=()

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

# Prints "PID:STARTTIME" for each child of process $1 (gunicorn's workers):
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

# Stops every process this script started: SIGTERM, a grace period of 8 s
# (gunicorn gives busy workers 5 s), then SIGKILL for any still alive, and
# reaps them all. gunicorn's workers, which its master stops (and the kernel
# kills should the master die), get SIGKILL too should one outlive it.
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
  for ((i = 0; i < 160; i++)); do
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
# command under way.)
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

# True when Keystone at 127.0.0.1:PORT answers GET /v3 with 200 (bash's
# /dev/tcp, so no other program is needed).
answers() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1"
    printf 'GET /v3 HTTP/1.0\r\nHost: 127.0.0.1:%s\r\nAccept: application/json\r\n\r\n' "$1" >&3
    IFS= read -r -t 10 status <&3
    [[ $status == "HTTP/1."?" 200"* ]]
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
      fail "Keystone did not answer within ${START_TIMEOUT}s of start-up"
    fi
    sleep 0.2
  done
}

# Writes DIR/keystone.conf: every path that defaults to /etc/keystone points
# into DIR instead, whether this setup uses it or not.
write_config() {
  mkdir -p "$DIR/logs" "$DIR/keystone.conf.d"
  cat >"$DIR/keystone.conf" <<EOF
[DEFAULT]
log_dir = $DIR/logs
log_file = keystone.log
use_stderr = false
use_syslog = false
debug = false

[database]
connection = sqlite:///$DIR/keystone.db

# Keystone's cache, in the one server process (see gunicorn.conf.py): an
# authenticated request takes some 20 ms instead of 300 (some 200 queries).
[cache]
enabled = true
backend = oslo_cache.dict

[token]
provider = fernet
expiration = 3600

[fernet_tokens]
key_repository = $DIR/fernet-keys
max_active_keys = 3

[fernet_receipts]
key_repository = $DIR/fernet-keys

[credential]
key_repository = $DIR/credential-keys

[identity]
# bcrypt's fewest rounds: hashing a password takes about a millisecond.
password_hash_rounds = 4
domain_config_dir = $DIR/domains

[jwt_tokens]
jws_public_key_repository = $DIR/jws-keys/public
jws_private_key_repository = $DIR/jws-keys/private

[oslo_policy]
# Keystone's built-in policy: no such file, and no policy.d directories.
policy_file = $DIR/policy.yaml
policy_dirs =

[saml]
certfile = $DIR/saml/cert.pem
keyfile = $DIR/saml/key.pem
idp_metadata_path = $DIR/saml/idp_metadata.xml

[federation]
sso_callback_template = $DIR/sso_callback_template.html
EOF
}

serve() {
  [ -d "$1" ] || die "serve: no such directory: $1"
  DIR=$(cd "$1" && pwd)
  installed || die "Keystone is not installed in $VENV: run '$0 install $VENV' first"

  # A free loopback port (released again for gunicorn to bind).
  PORT=$("$VENV/bin/python" -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
')
  local auth_url=http://127.0.0.1:$PORT/v3
  local password
  password=secret-$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
  write_config

  PDEATHSIG=()
  if [[ $(setpriv --help 2>/dev/null) == *--pdeathsig* ]]; then
    PDEATHSIG=(setpriv --pdeathsig KILL)
  fi
  # No bytecode files written next to keystone_wsgi.py and gunicorn.conf.py.
  export PYTHONDONTWRITEBYTECODE=1

  # From here on, whatever happens, stop what was started (signals during
  # start-up interrupt the wait for the step under way).
  trap stop_children EXIT
  trap 'exit 143' TERM
  trap 'exit 130' INT
  trap 'exit 129' HUP

  DEADLINE=$((SECONDS + START_TIMEOUT))

  # The database and the keys, at once: most of each keystone-manage
  # command's time is loading Keystone. (keystone-manage reads the
  # configuration from the same two places as the server, and logs to a file
  # of its own.)
  local manage=("$VENV/bin/keystone-manage" --config-file "$DIR/keystone.conf"
    --config-dir "$DIR/keystone.conf.d" --log-file "$DIR/logs/keystone-manage.log")
  local owner=(--keystone-user "$(id -un)" --keystone-group "$(id -gn)")
  spawn db_sync "${manage[@]}" db_sync
  spawn fernet_setup "${manage[@]}" fernet_setup "${owner[@]}"
  spawn credential_setup "${manage[@]}" credential_setup "${owner[@]}"
  wait_steps 0

  # The server, loading while bootstrap makes the admin user, the roles and
  # the identity endpoints. (Loading reads nothing from the database.)
  KEYSTONE_SH_DIR=$DIR KEYSTONE_SH_PORT=$PORT spawn gunicorn \
    "$VENV/bin/gunicorn" -c "$HERE/gunicorn.conf.py" --pythonpath "$HERE" \
    keystone_wsgi:application
  spawn bootstrap "${manage[@]}" bootstrap \
    --bootstrap-username admin \
    --bootstrap-password "$password" \
    --bootstrap-project-name admin \
    --bootstrap-region-id "$REGION" \
    --bootstrap-admin-url "$auth_url" \
    --bootstrap-internal-url "$auth_url" \
    --bootstrap-public-url "$auth_url"
  wait_steps 1
  wait_until answers "$PORT"

  # The tests' projects, users and the image service.
  local image_url=${IMAGE_URL:-http://127.0.0.1:9292}
  spawn setup "$VENV/bin/python" "$HERE/setup_accounts.py" "$auth_url" "$password" "$image_url"
  wait_steps 1

  printf 'ready auth_url=%s password=%s\n' "$auth_url" "$password"

  # Serve until stdin reaches end of file or a signal comes, checking on the
  # server 4 times a second. A signal now only sets STOP, which the loop
  # sees once `read` times out: the clean-up must not run inside the
  # interrupted `read` (bash's own `read` then misbehaves in it).
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

case ${1:-} in
  install)
    [ $# = 2 ] || usage
    VENV=$(realpath -m "$2")
    install
    ;;
  serve)
    shift
    args=()
    IMAGE_URL=
    while [ $# -gt 0 ]; do
      case $1 in
        --image-url)
          [ $# -ge 2 ] || usage
          IMAGE_URL=$2
          shift 2
          ;;
        --image-url=*)
          IMAGE_URL=${1#*=}
          shift
          ;;
        -*) usage ;;
        *)
          args+=("$1")
          shift
          ;;
      esac
    done
    [ ${#args[@]} = 2 ] || usage
    VENV=$(realpath -m "${args[0]}")
    serve "${args[1]}"
    ;;
  *) usage ;;
esac

#!/usr/bin/env bash
# Runs a real OpenStack Glance (glance 33.0.0 from PyPI, under uWSGI, on
# SQLite, without Keystone) on loopback, as glance-bench's peer.
#
# Usage:
#   bench/peers/glance.sh install VENV
#       Installs glance==33.0.0 and uWSGI 2.0.31 into the Python venv VENV
#       (made with `python3 -m venv` if missing), constrained by OpenStack's
#       upper constraints (tests/clients/upper-constraints.txt). Idempotent,
#       and quick when they are there already. uWSGI is built from source: it
#       needs a C compiler and the Python headers (on Debian: gcc and
#       python3-dev, or the headers of the Python that made VENV).
#   bench/peers/glance.sh serve VENV DIR [--workers N] [--keepalive]
#       DIR is an empty directory owned by the caller (a temp dir). Everything
#       Glance needs is written under it: glance-api.conf (and an empty
#       glance-api.conf.d), glance-api-paste.ini (the installed one, see
#       below), schema-image.json (no custom properties), glance-uwsgi.ini,
#       the SQLite database glance.sqlite, the file store DIR/images, the
#       staging and tasks stores (DIR/staging, DIR/tasks) and the logs
#       (DIR/logs/*.log); nothing under /etc/glance (nor ~/.glance, /etc) is
#       read. Makes the database (glance-manage db_sync) while uWSGI starts N
#       worker processes (default 2) on a free loopback port, waits (120 s at
#       most) until every worker has loaded Glance and GET /versions answers,
#       then prints exactly one line to stdout:
#
#         ready url=http://127.0.0.1:PORT
#
#       and keeps serving until its standard input reaches end of file (the
#       caller closed it or died) or it gets SIGTERM, SIGINT or SIGHUP. Then it
#       stops the processes it started (uWSGI's master, which stops its
#       workers), by PID, and exits (0 at end of input, 128+N on signal N).
#       Should this script be killed outright, the kernel kills them all
#       (parent death signal). If uWSGI dies while serving, the script exits
#       1; if start-up fails, it prints the logs' tails to stderr and exits 1.
#       The caller may remove DIR afterwards. uWSGI's processes stay
#       descendants of this script (no daemon), so that their CPU time can be
#       summed over its process tree. Start-up takes 5-10 s on two cores,
#       most of it each worker loading Glance; stopping, about 3 s.
#
# Glance: the paste pipeline that runs behind Keystone, without the image
# cache, Keystone's auth_token filter replaced by a fixed identity
# (bench/peers/glance/glance_wsgi.py): every request, whatever headers it
# has, is from user bench-user with roles admin, member and reader on project
# bench-project (which owns the images it makes). Requests need no token nor
# other header. (Glance's pipeline without Keystone instead makes a new
# policy enforcer for every request, which triples the CPU time of a small
# request.) One file store, images hashed with sha512 (os_hash_value) and
# md5 (checksum) as they are uploaded.
#
# The server: uWSGI as devstack runs Glance (lib/apache,
# write_local_uwsgi_http_config): master, N worker processes of one thread,
# lazy-apps, thunder-lock, 64 KiB buffers, the workers speaking HTTP
# themselves (http-socket) and every response with "Connection: close"
# (uWSGI's http-socket has no keep-alive). With
# --keepalive, uWSGI's HTTP router (one more process) holds the clients'
# keep-alive connections instead and passes each request to a free worker
# over a UNIX socket in DIR (an idle connection takes no worker): the
# router's copying halves the download throughput on two cores.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CONSTRAINTS=$ROOT/tests/clients/upper-constraints.txt
GLANCE_VERSION=33.0.0
# Not in the upper constraints; the newest release when this was written.
UWSGI_VERSION=2.0.31
START_TIMEOUT=120
# Keystone's auth_token middleware's stand-in (bench/peers/glance/glance_wsgi.py).
AUTH_FILTER=glance_wsgi:identity_filter_factory
PROG=glance.sh
SERVICE=Glance

# die, fail, usage, spawn, wait_steps, wait_until, serve_until_eof and the
# rest of the process supervision.
# shellcheck source-path=SCRIPTDIR source=../../scripts/lib/supervise.sh
. "$ROOT/scripts/lib/supervise.sh"

# --- install -----------------------------------------------------------------

# True when VENV has Glance (this version) and uWSGI (this version).
installed() {
  [ -x "$VENV/bin/glance-manage" ] && [ -x "$VENV/bin/uwsgi" ] &&
    "$VENV/bin/python" - "$GLANCE_VERSION" "$UWSGI_VERSION" 2>/dev/null <<'EOF'
import sys
from importlib.metadata import version
sys.exit(version("glance") != sys.argv[1] or version("uwsgi") != sys.argv[2])
EOF
}

install() {
  installed && return 0
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  # Without the constraints pip would take the newest SQLAlchemy, oslo.db and
  # so on, which this Glance may not run on.
  "$VENV/bin/pip" install -q --disable-pip-version-check -c "$CONSTRAINTS" \
    "glance==$GLANCE_VERSION" "uwsgi==$UWSGI_VERSION"
  installed || die "install: Glance is still missing from $VENV"
}

# --- serve -------------------------------------------------------------------

# Writes DIR's configuration: every path that defaults to /etc/glance or
# /var/lib/glance points into DIR instead, whether this setup uses it or not.
write_config() {
  mkdir -p "$DIR/logs" "$DIR/glance-api.conf.d" "$DIR/images" "$DIR/staging" \
    "$DIR/tasks" "$DIR/locks"
  cat >"$DIR/glance-api.conf" <<EOF
[DEFAULT]
log_dir = $DIR/logs
log_file = glance-api.log
use_stderr = false
use_syslog = false
debug = false
# One file store (and no image cache: no image_cache_dir, and the paste
# pipeline without "cache").
enabled_backends = fs:file
# As devstack sets it: the URL of this API worker.
worker_self_reference_url = http://127.0.0.1:$PORT
# For glance-manage db_load_metadefs (not run here).
metadata_source_path = $DIR/metadefs/

[glance_store]
default_backend = fs

[fs]
filesystem_store_datadir = $DIR/images/

[os_glance_staging_store]
filesystem_store_datadir = $DIR/staging/

[os_glance_tasks_store]
filesystem_store_datadir = $DIR/tasks/

[database]
connection = sqlite:///$DIR/glance.sqlite

[oslo_concurrency]
lock_path = $DIR/locks

[paste_deploy]
config_file = $DIR/glance-api-paste.ini
# The pipeline behind Keystone (its "authtoken" filter replaced, see
# below), without the image cache.
flavor = keystone

[oslo_policy]
# Glance's built-in policy: no such file, nor such directory. (An empty
# policy_dirs would be [""], which oslo.policy resolves to the first
# configuration directory, DIR, and reads every file in it as policy.)
policy_file = $DIR/policy.yaml
policy_dirs = $DIR/policy.d

[wsgi]
# The interpreter for import tasks (uWSGI's binary otherwise), as devstack.
python_interpreter = $VENV/bin/python
EOF
  # No custom image properties (found here before /etc/glance).
  printf '{}\n' >"$DIR/schema-image.json"
  # The installed paste configuration, with its one /etc/glance path moved
  # and Keystone's auth_token replaced by a fixed identity.
  local to
  to=$(printf '%s/' "$DIR" | sed 's/[&|\\]/\\&/g')
  sed -e "s|/etc/glance/|$to|g" \
    -e "s|^\(paste.filter_factory *= *\)keystonemiddleware.auth_token:filter_factory\$|\1$AUTH_FILTER|" \
    "$VENV/etc/glance/glance-api-paste.ini" >"$DIR/glance-api-paste.ini"
  grep -q "= *$AUTH_FILTER\$" "$DIR/glance-api-paste.ini" ||
    die "no auth_token filter to replace in $VENV/etc/glance/glance-api-paste.ini"

  # uWSGI, as devstack writes it (lib/apache, write_local_uwsgi_http_config).
  # strict: an unknown option is an error.
  cat >"$DIR/glance-uwsgi.ini" <<EOF
[uwsgi]
strict = true
home = $VENV
pythonpath = $HERE/glance
pythonpath = $ROOT/scripts/lib
env = GLANCE_SH_DIR=$DIR
module = glance_wsgi:application
need-app = true
procname-prefix-spaced = glance-api
master = true
processes = $WORKERS
enable-threads = true
lazy-apps = true
thunder-lock = true
buffer-size = 65535
socket-timeout = 30
# SIGTERM stops uWSGI at once (devstack's hook-master-start
# "unix_signal:15 gracefully_kill_them_all" would let requests under way
# finish, but takes 3-4 s when idle, and never ends while a worker is still
# loading Glance).
die-on-term = true
exit-on-reload = false
# Workers die with the master.
no-orphans = true
vacuum = true
EOF
  if [ -z "$KEEPALIVE" ]; then
    cat >>"$DIR/glance-uwsgi.ini" <<EOF
# The workers speak HTTP to the clients themselves; every response closes
# its connection.
http-socket = 127.0.0.1:$PORT
add-header = Connection: close
EOF
  else
    cat >>"$DIR/glance-uwsgi.ini" <<EOF
# uWSGI's HTTP router holds the clients' connections and passes each
# request to a free worker over the workers' socket.
socket = $DIR/uwsgi.sock
http = 127.0.0.1:$PORT
http-keepalive = 1
# "Expect: 100-continue" answered at once, not after the client's wait
# (curl's: 1 s).
http-manage-expect = 1
# A chunked upload goes to the worker as it came (Glance decodes it with
# uwsgi.chunked_read), on a connection then closed after the response.
# (Not devstack's http-raw-body, which does that to every request, and so
# turns keep-alive off.)
http-chunked-input = true
# A response without Content-Length is sent chunked rather than closing its
# connection (Glance's responses have one).
http-auto-chunked = true
# The router's buffer: with the default (4 KiB) it spends some 3.5 s of CPU
# per GiB downloaded, with 64 KiB 0.75 s.
http-buffer-size = 65535
EOF
  fi
}

# True when every uWSGI worker has loaded Glance (lazy-apps: each loads its
# own, after the fork).
workers_loaded() {
  local n
  n=$(grep -c "^WSGI app 0 (mountpoint='') ready in " "$DIR/logs/uwsgi.log" 2>/dev/null) || true
  [ "${n:-0}" -ge "$WORKERS" ]
}

serve() {
  [ -d "$1" ] || die "serve: no such directory: $1"
  DIR=$(cd "$1" && pwd)
  installed || die "Glance is not installed in $VENV: run '$0 install $VENV' first"
  [ -f "$VENV/etc/glance/glance-api-paste.ini" ] ||
    die "no glance-api-paste.ini in $VENV/etc/glance"

  # A free loopback port (released again for uWSGI to bind).
  PORT=$(free_port "$VENV/bin/python")
  write_config

  # No bytecode files written next to glance_wsgi.py and sqlite_immediate.py.
  export PYTHONDONTWRITEBYTECODE=1

  # From here on, whatever happens, stop what was started.
  supervise

  # The server, loading Glance while glance-manage makes the database.
  # (Loading reads nothing from the database; glance-manage reads the same
  # configuration, and logs to a file of its own.)
  spawn uwsgi "$VENV/bin/uwsgi" --ini "$DIR/glance-uwsgi.ini"
  spawn db_sync "$VENV/bin/glance-manage" --config-file "$DIR/glance-api.conf" \
    --config-dir "$DIR/glance-api.conf.d" --log-file "$DIR/logs/glance-manage.log" \
    db_sync
  wait_steps 1
  wait_until workers_loaded
  wait_until answers "$PORT" /versions 200 300

  printf 'ready url=http://127.0.0.1:%s\n' "$PORT"

  # Serve until stdin reaches end of file or a signal comes, checking on
  # uWSGI's master 4 times a second.
  serve_until_eof
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
    WORKERS=2
    KEEPALIVE=
    while [ $# -gt 0 ]; do
      case $1 in
        --workers)
          [ $# -ge 2 ] || usage
          WORKERS=$2
          shift 2
          ;;
        --workers=*)
          WORKERS=${1#*=}
          shift
          ;;
        --keepalive)
          KEEPALIVE=1
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
    [[ $WORKERS =~ ^[1-9][0-9]*$ ]] || die "--workers: not a positive number: $WORKERS"
    VENV=$(realpath -m "${args[0]}")
    serve "${args[1]}"
    ;;
  *) usage ;;
esac

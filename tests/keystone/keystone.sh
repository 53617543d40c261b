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
PROG=keystone.sh
SERVICE=Keystone

# die, fail, usage, spawn, wait_steps, wait_until, serve_until_eof and the
# rest of the process supervision.
# shellcheck source-path=SCRIPTDIR source=../../scripts/lib/supervise.sh
. "$ROOT/scripts/lib/supervise.sh"

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
  PORT=$(free_port "$VENV/bin/python")
  local auth_url=http://127.0.0.1:$PORT/v3
  local password
  password=secret-$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
  write_config

  # No bytecode files written next to keystone_wsgi.py, gunicorn.conf.py and
  # sqlite_immediate.py.
  export PYTHONDONTWRITEBYTECODE=1

  # From here on, whatever happens, stop what was started.
  supervise

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
    "$VENV/bin/gunicorn" -c "$HERE/gunicorn.conf.py" \
    --pythonpath "$HERE,$ROOT/scripts/lib" keystone_wsgi:application
  spawn bootstrap "${manage[@]}" bootstrap \
    --bootstrap-username admin \
    --bootstrap-password "$password" \
    --bootstrap-project-name admin \
    --bootstrap-region-id "$REGION" \
    --bootstrap-admin-url "$auth_url" \
    --bootstrap-internal-url "$auth_url" \
    --bootstrap-public-url "$auth_url"
  wait_steps 1
  wait_until answers "$PORT" /v3 200

  # The tests' projects, users and the image service.
  local image_url=${IMAGE_URL:-http://127.0.0.1:9292}
  spawn setup "$VENV/bin/python" "$HERE/setup_accounts.py" "$auth_url" "$password" "$image_url"
  wait_steps 1

  printf 'ready auth_url=%s password=%s\n' "$auth_url" "$password"

  # Serve until stdin reaches end of file or a signal comes, checking on the
  # server 4 times a second.
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

#!/usr/bin/env bash
# Runs OpenStack's own API tests of the Image service (tempest, from PyPI)
# against glance-api in keystone mode, with one store.
#
# Usage:
#   tests/tempest/tempest.sh install VENV
#       Installs tempest into the Python venv VENV (the one with Keystone and
#       the clients), constrained by OpenStack's upper constraints. Quick
#       when it is there already.
#   tests/tempest/tempest.sh run VENV BIN_DIR DIR [REGEX]
#       DIR is an empty directory owned by the caller. Starts a real Keystone
#       (tests/keystone/keystone.sh serve) whose catalog names glance-api as
#       the image service, then `BIN_DIR/glance-api quickstart` in keystone
#       mode (one file store, one stream node) and a local HTTP server for
#       the web-download tests (glance-api allows its address), writes a tempest workspace in
#       DIR/tempest whose admin is Keystone's bootstrap admin (tempest makes
#       a project and users of its own for each test class), and runs
#       `tempest run --regex REGEX` (default `^tempest\.api\.image\.v2\.`,
#       two workers). Prints tempest's summary and writes the result of
#       every test, one per line as `STATUS TEST_ID` (STATUS is ok, fail or
#       skip), to DIR/results. With EXTRA_STORES="id ..." in the
#       environment, glance-api has these file stores beside the default one
#       (quickstart --extra-file-store), for the multi-store tests. Stops
#       everything it started, then exits 0
#       whatever the tests' outcome (the caller reads DIR/results), or 1
#       when something could not start.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CONSTRAINTS=$ROOT/tests/clients/upper-constraints.txt
TEMPEST_VERSION=47.0.0

die() { echo "tempest.sh: $*" >&2; exit 1; }

install() {
  local venv=$1
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  if ! "$venv/bin/python" -c "import tempest" 2>/dev/null; then
    "$venv/bin/pip" install -q --disable-pip-version-check -c "$CONSTRAINTS" \
      "tempest==$TEMPEST_VERSION"
  fi
}

# Stops what `run` started: the quickstart (Ctrl-C stops its stream node
# too), then Keystone (end of its input).
stop() {
  if [ -n "${WEB_PID:-}" ]; then kill "$WEB_PID" 2>/dev/null || true; wait "$WEB_PID" || true; fi
  if [ -n "${QS_PID:-}" ]; then kill -INT "$QS_PID" 2>/dev/null || true; wait "$QS_PID" || true; fi
  if [ -n "${KEEP:-}" ]; then exec {KEEP}>&-; fi
  if [ -n "${KEYSTONE_PID:-}" ]; then wait "$KEYSTONE_PID" || true; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

run() {
  local venv=$1 bin=$2 dir=$3 regex=${4:-'^tempest\.api\.image\.v2\.'}
  [ -d "$dir" ] || die "run: no such directory: $dir"
  local port stream_port
  port=$(free_port)
  stream_port=$(free_port)
  local endpoint="http://127.0.0.1:$port"

  mkdir -p "$dir/keystone"
  # Keystone keeps serving until its standard input closes: a fifo held
  # open by this script.
  mkfifo "$dir/keystone.in"
  "$ROOT/tests/keystone/keystone.sh" serve "$venv" "$dir/keystone" \
    --image-url "$endpoint" <"$dir/keystone.in" >"$dir/keystone.out" 2>"$dir/keystone.err" &
  local keystone_pid=$!
  exec {keep}>"$dir/keystone.in"
  QS_PID="" KEYSTONE_PID=$keystone_pid KEEP=$keep
  trap stop EXIT

  local i ready=""
  for i in $(seq 1 240); do
    ready=$(head -n1 "$dir/keystone.out" 2>/dev/null || true)
    [ -n "$ready" ] && break
    kill -0 "$keystone_pid" 2>/dev/null || break
    sleep 0.5
  done
  case $ready in
    ready\ *) ;;
    *) cat "$dir/keystone.err" >&2; die "Keystone did not start" ;;
  esac
  local auth_url password
  auth_url=$(sed -n 's/.*auth_url=\([^ ]*\).*/\1/p' <<<"$ready")
  password=$(sed -n 's/.*password=\([^ ]*\).*/\1/p' <<<"$ready")

  # The web-download tests fetch an image from this local server, which
  # glance-api is told to allow (loopback is refused otherwise).
  local web_port
  web_port=$(free_port)
  mkdir -p "$dir/web"
  head -c 65536 /dev/urandom >"$dir/web/cirros.img"
  python3 -m http.server --bind 127.0.0.1 --directory "$dir/web" "$web_port" \
    >"$dir/web.log" 2>&1 &
  WEB_PID=$!
  local image_url="http://127.0.0.1:$web_port/cirros.img"

  "$bin/glance-api" quickstart --dir "$dir/var" --port "$port" --stream-port "$stream_port" \
    --keystone-url "$auth_url" --keystone-user glance --keystone-password "$password" \
    --keystone-project service --web-download-allow "127.0.0.1:$web_port" \
    $(for s in ${EXTRA_STORES:-}; do printf -- '--extra-file-store %s ' "$s"; done) \
    >"$dir/quickstart.out" 2>"$dir/quickstart.log" &
  qs_pid=$!
  QS_PID=$qs_pid
  for i in $(seq 1 120); do
    grep -q '^Press Ctrl-C' "$dir/quickstart.out" 2>/dev/null && break
    kill -0 "$qs_pid" 2>/dev/null || { cat "$dir/quickstart.log" >&2; die "the quickstart exited"; }
    sleep 0.5
  done

  mkdir -p "$dir/tempest/etc"
  cat >"$dir/tempest/etc/tempest.conf" <<EOF
[DEFAULT]
log_file = $dir/tempest/tempest.log

[auth]
admin_username = admin
admin_password = $password
admin_project_name = admin
admin_domain_name = Default
use_dynamic_credentials = true
create_isolated_networks = false

[identity]
uri_v3 = $auth_url
auth_version = v3
region = RegionOne

[identity-feature-enabled]
api_v2 = false

[service_available]
glance = true
nova = false
neutron = false
cinder = false
swift = false

[image]
region = RegionOne
build_timeout = 60
# The cache API of glance-api fans out to the stream nodes.
image_caching_enabled = true
http_image = $image_url
http_qcow2_image = $image_url

[image-feature-enabled]
import_image = true
os_glance_reserved = true
# glance-api stores what it is given: it does not inspect disk formats.
image_format_enforcement = false
EOF
  (cd "$dir/tempest" && "$venv/bin/stestr" init >/dev/null)
  cat >"$dir/tempest/.stestr.conf" <<EOF
[DEFAULT]
test_path=$("$venv/bin/python" -c 'import tempest.test_discover, os; print(os.path.dirname(tempest.test_discover.__file__))')
top_dir=$("$venv/bin/python" -c 'import tempest, os; print(os.path.dirname(os.path.dirname(tempest.__file__)))')
group_regex=([^\.]*\.)*
EOF
  (
    cd "$dir/tempest"
    export TEMPEST_CONFIG_DIR="$dir/tempest/etc"
    "$venv/bin/stestr" run --concurrency 2 "$regex" >"$dir/tempest.out" 2>&1 || true
    "$venv/bin/stestr" last --subunit | "$venv/bin/subunit2csv" 2>/dev/null >"$dir/results.csv" || true
  )
  "$venv/bin/python" - "$dir/results.csv" >"$dir/results" <<'EOF'
import csv, sys
statuses = {"success": "ok", "failure": "fail", "fail": "fail", "skip": "skip"}
with open(sys.argv[1]) as f:
    for row in csv.DictReader(f):
        test = row["test"].split("[")[0].strip()
        # A class whose set-up failed or skipped is one row for all its tests.
        if test.startswith("setUpClass ("):
            test = test[len("setUpClass ("):].rstrip(")") + ".setUpClass"
        print(statuses.get(row["status"], row["status"]), test)
EOF
  tail -n 12 "$dir/tempest.out"
}

case ${1:-} in
  install) shift; [ $# -eq 1 ] || die "usage: install VENV"; install "$@" ;;
  run) shift; [ $# -ge 3 ] || die "usage: run VENV BIN_DIR DIR [REGEX]"; run "$@" ;;
  *) die "usage: $0 install VENV | run VENV BIN_DIR DIR [REGEX]" ;;
esac

#!/usr/bin/env bash
# Runs a real OpenStack Swift (Debian's packages) as a one-replica object
# store on loopback, for the project's tests: its own API (tempauth, with
# TempURLs and Static Large Objects) and its S3 API.
#
# Usage:
#   scripts/swift.sh install
#       Installs Debian's Swift and memcached packages unless their programs
#       are already there. Idempotent; needs root (apt-get).
#   scripts/swift.sh serve DIR [--keystone AUTH_URL USER PASSWORD PROJECT]
#       DIR is an empty directory owned by the caller (a temp dir). Everything
#       Swift needs is written under it: swift.conf, server configs, rings,
#       the one storage device (DIR/srv/node/d1) and the logs (DIR/logs/*.log);
#       nothing under /etc/swift is used. Starts memcached and the account,
#       container, object and proxy servers on free loopback ports, waits
#       (90 s at most) until all of them answer, then prints exactly one line
#       to stdout:
#
#         ready endpoint=http://127.0.0.1:PORT region=us-east-1 access_key_id=test:tester secret=testing auth_url=http://127.0.0.1:PORT/auth/v1.0 user=test:tester key=testing memcached=127.0.0.1:PORT
#
#       and keeps serving until its standard input reaches end of file (the
#       caller closed it or died) or it gets SIGTERM, SIGINT or SIGHUP. Then it
#       stops the processes it started, by PID, and exits (0 at end of input,
#       128+N on signal N). Those are memcached and one Python process that
#       forks the four servers and stops them when stopped itself; should this
#       script be killed outright, the kernel kills them all (parent death
#       signal). If a server dies while serving, the script stops the rest and
#       exits 1; if start-up fails, it prints the logs' tails to stderr and
#       exits 1. The caller may remove DIR afterwards.
#
# The S3 API (Swift's s3api middleware over tempauth) takes path-style
# requests (http://127.0.0.1:PORT/BUCKET/KEY) signed with AWS Signature V4,
# in an Authorization header or as a presigned URL (X-Amz-* query
# parameters), for the region us-east-1. The access key id is test:tester
# (tempauth's account "test", user "tester") and the secret is testing.
#
# The Swift API authenticates at auth_url (tempauth v1: X-Auth-User
# test:tester, X-Auth-Key testing; the user is the account's admin, so it
# may set Temp-URL-Key metadata). The tempurl middleware checks TempURLs
# (HMAC-SHA1, SHA256 or SHA512). Tokens live in the memcached named, so
# `flush_all` there revokes every token (tests of re-authentication use it).
#
# With --keystone, Keystone (AUTH_URL, its v3 URL) replaces tempauth and the
# S3 API: keystonemiddleware's auth_token validates tokens as USER of
# PROJECT (domain Default; the user needs the service or admin role to
# validate tokens) and keystoneauth authorizes them, with accounts
# AUTH_<project id>; the roles admin and member own their project's
# account. The ready line is then just "ready endpoint=...": the caller
# registers http://127.0.0.1:PORT/v1/AUTH_$(project_id)s as Keystone's
# object-store endpoint.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# Debian's Swift is a library of the system's Python 3 (not of any other
# python3 that PATH may find first).
PY=/usr/bin/python3
REGION=us-east-1
ACCESS_KEY_ID=test:tester
SECRET=testing
START_TIMEOUT=90
# Seconds memcached and the Swift runner get to stop after SIGTERM, before
# SIGKILL (the runner gives its servers 3).
STOP_GRACE=5
PROG=swift.sh
SERVICE=Swift

# die, fail, usage, spawn, wait_until, answers, serve_until_eof and the rest
# of the process supervision.
# shellcheck source-path=SCRIPTDIR source=lib/supervise.sh
. "$HERE/lib/supervise.sh"

# --- install -----------------------------------------------------------------

# True when the programs of every package are there.
installed() {
  local bin
  for bin in swift-proxy-server swift-account-server swift-container-server \
    swift-object-server memcached; do
    [ -x "/usr/bin/$bin" ] || return 1
  done
  "$PY" -c 'import keystonemiddleware.auth_token' 2>/dev/null
}

install() {
  installed && return 0
  local pkgs=(swift swift-proxy swift-account swift-container swift-object memcached
    python3-keystonemiddleware)
  export DEBIAN_FRONTEND=noninteractive
  # The package lists may be missing or stale on a fresh machine: update them
  # only if installing without doing so fails.
  if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1; then
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null
  fi
  # The packages' own services are not used (nor started where systemd does
  # not run): `serve` starts the servers itself, with its own configuration.
}

# --- serve -------------------------------------------------------------------

# True when memcached at 127.0.0.1:PORT answers its "version" command.
memcached_up() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1"
    printf 'version\r\n' >&3
    IFS= read -r -t 5 reply <&3
    [[ $reply == VERSION* ]]
  ) 2>/dev/null
}

# Writes DIR/run-swift.py, which runs the four Swift servers.
#
# Why a program of our own rather than /usr/bin/swift-*-server:
# - Debian's Swift (2.30) servers read swift.conf from a fixed path,
#   /etc/swift/swift.conf (swift.common.utils.SWIFT_CONF_FILE: their swift_dir
#   option only locates the rings, and no environment variable changes it):
#   the program switches Swift to DIR/swift.conf before the modules that read
#   it load.
# - Start-up time: each server process spends 1.5 s of CPU or so loading
#   Swift and applying eventlet's monkey patching (which runs gc.collect()
#   once per lock). One process does that once, then forks a child per server,
#   each of which does what /usr/bin/swift-*-server would. On two cores this
#   halves the time to ready (about 2 s instead of 4).
write_runner() {
  cat >"$DIR/run-swift.py" <<'EOF'
"""Runs Swift's account, container, object and proxy servers.

  SWIFT_DIR=DIR SWIFT_SH_PID=PID run-swift.py ACCOUNT_PORT CONTAINER_PORT OBJECT_PORT

Builds the rings for storage servers on those loopback ports, then runs each
server (configured by DIR/NAME.conf) in a child process of its own, its
output into DIR/logs/NAME.log. Stops them all and exits 0 on SIGTERM, SIGINT
or SIGHUP; stops the others and exits 1 if one of them exits. This process
and the servers get SIGKILL from the kernel when their parent dies.
"""
import ctypes
import logging
import os
import signal
import sys
import time
import traceback

SERVERS = ('account-server', 'container-server', 'object-server',
           'proxy-server')
PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1
LIBC = ctypes.CDLL(None, use_errno=True)


def die_with(parent):
    """SIGKILL this process when PARENT exits (even if killed)."""
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it was gone already
        os._exit(1)


die_with(int(os.environ['SWIFT_SH_PID']))
SWIFT_DIR = os.environ['SWIFT_DIR']

# swift.conf comes from SWIFT_DIR. Importing swift.common.utils reads the hash
# path prefix and suffix from /etc/swift/swift.conf if there is such a file
# (and ignores its absence); set_swift_dir points SWIFT_CONF_FILE at ours and
# reloads them from it, before the storage-policy and constraints modules,
# imported later, read that file.
from swift.common import utils  # noqa: E402

utils.set_swift_dir(SWIFT_DIR)

# Log to stderr (the servers run with verbose=True) and nowhere else: Swift
# always adds a syslog handler too, which without /dev/log sends each line
# as UDP to localhost:514. Replace it with one that drops them.
utils.ThreadSafeSysLogHandler = lambda *args, **kwargs: logging.NullHandler()

# What every server would do first, done once for all before forking.
utils.eventlet_monkey_patch()
from swift.common.ring import RingBuilder  # noqa: E402
from swift.common.wsgi import run_wsgi  # noqa: E402
from swift.obj import server as object_server  # noqa: E402
import swift.account.server  # noqa: E402,F401
import swift.container.server  # noqa: E402,F401
import swift.proxy.server  # noqa: E402,F401


def build_rings(ports):
    """One ring per server kind: 2^10 partitions, 1 replica, 1 device."""
    for kind, port in zip(('account', 'container', 'object'), ports):
        builder = RingBuilder(10, 1, 1)
        builder.add_dev({'region': 1, 'zone': 1, 'ip': '127.0.0.1',
                         'port': int(port), 'device': 'd1', 'weight': 100,
                         'meta': ''})
        builder.rebalance()
        builder.save(os.path.join(SWIFT_DIR, kind + '.builder'))
        builder.get_ring().save(os.path.join(SWIFT_DIR, kind + '.ring.gz'))


def serve(name):
    """Runs server NAME in this (child) process until it is stopped."""
    log = os.open(os.path.join(SWIFT_DIR, 'logs', name + '.log'),
                  os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    kwargs = {'verbose': True}
    if name == 'object-server':
        kwargs['global_conf_callback'] = object_server.global_conf_callback
    return run_wsgi(os.path.join(SWIFT_DIR, name + '.conf'), name, **kwargs)


def stop(children):
    """SIGTERM to every child, SIGKILL to those still there after 3 s."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    while children and time.monotonic() < deadline:
        for pid in list(children):
            if os.waitpid(pid, os.WNOHANG)[0]:
                del children[pid]
        time.sleep(0.02)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def main(ports):
    build_rings(ports)
    me = os.getpid()
    children = {}
    for name in SERVERS:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                die_with(me)
                # The server's name in ps -o comm, top, etc.
                LIBC.prctl(PR_SET_NAME, name.encode())
                code = serve(name)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code or 0)
        children[pid] = name

    def on_signal(signum, frame):
        raise SystemExit(0)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        pid, status = os.wait()
        print('%s exited (wait status %d)' % (children.pop(pid), status),
              file=sys.stderr)
        return 1
    finally:
        stop(children)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:4]))
EOF
}

# Prints the [DEFAULT] section every server's config shares: loopback and its
# own port (PORT), one process per server (workers = 0: the server forks no
# workers of its own), everything under DIR, logs named NAME.
conf_defaults() {
  cat <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $1
workers = 0
user = $(id -un)
swift_dir = $DIR
devices = $DIR/srv/node
mount_check = false
disable_fallocate = true
fallocate_reserve = 0
recon_cache_path = $DIR/cache
log_name = $2
log_level = INFO
EOF
}

# Writes DIR/swift.conf and the four servers' configs.
write_configs() {
  cat >"$DIR/swift.conf" <<EOF
[swift-hash]
swift_hash_path_suffix = $(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
swift_hash_path_prefix = $(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')

[storage-policy:0]
name = Policy-0
default = yes
EOF

  # The storage servers: only their app behind a health check.
  local kind port
  for kind in account:$ACCOUNT_PORT container:$CONTAINER_PORT object:$OBJECT_PORT; do
    port=${kind#*:}
    kind=${kind%:*}
    {
      conf_defaults "$port" "$kind-server"
      cat <<EOF

[pipeline:main]
pipeline = healthcheck $kind-server

[app:$kind-server]
use = egg:swift#$kind

[filter:healthcheck]
use = egg:swift#healthcheck
EOF
    } >"$DIR/$kind-server.conf"
  done

  # The proxy: s3api turns S3 requests into Swift ones and leaves checking
  # their signature to tempauth, after it in the pipeline, which knows the
  # user's key. The accounts are made on first use (account_autocreate).
  {
    conf_defaults "$PROXY_PORT" proxy-server
    cat <<EOF

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats tempurl $AUTH_FILTERS copy slo dlo versioned_writes proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
allow_account_management = true
account_autocreate = true

[filter:s3api]
use = egg:swift#s3api
location = $REGION

[filter:tempurl]
use = egg:swift#tempurl

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = $SECRET .admin

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = ${KS_AUTH_URL:-}
auth_url = ${KS_AUTH_URL:-}
auth_type = password
username = ${KS_USER:-}
password = ${KS_PASSWORD:-}
project_name = ${KS_PROJECT:-}
user_domain_name = Default
project_domain_name = Default
delay_auth_decision = true

[filter:keystoneauth]
use = egg:swift#keystoneauth
operator_roles = admin, member

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$MEMCACHED_PORT

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo

[filter:dlo]
use = egg:swift#dlo

[filter:versioned_writes]
use = egg:swift#versioned_writes
EOF
  } >"$DIR/proxy-server.conf"
}

serve() {
  [ -d "$1" ] || die "serve: no such directory: $1"
  DIR=$(cd "$1" && pwd)
  installed || die "Swift is not installed: run '$0 install' first"
  mkdir -p "$DIR/srv/node/d1" "$DIR/logs" "$DIR/cache"

  # Swift keeps object metadata in extended attributes: fail clearly if the
  # file system under DIR has none (e.g. tmpfs before Linux 6.6).
  "$PY" -c 'import os, sys; os.setxattr(sys.argv[1], "user.swift.probe", b"1")' \
    "$DIR/srv/node/d1" 2>/dev/null ||
    die "the file system under $DIR has no user extended attributes, which Swift needs"

  # Free loopback ports: bind all five at once (so they differ), then release
  # them for the servers.
  read -r PROXY_PORT ACCOUNT_PORT CONTAINER_PORT OBJECT_PORT MEMCACHED_PORT < <(
    "$PY" -c '
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
')

  write_runner
  write_configs
  export SWIFT_DIR=$DIR SWIFT_SH_PID=$$

  # From here on, whatever happens, stop what was started. (spawn starts
  # memcached, and the runner too, under setpriv, if there, so that they get
  # SIGKILL should this script be killed; the runner sees to that itself as
  # well, and for its servers.)
  supervise

  # memcached (tempauth and the proxy's caches), on loopback only.
  local memcached=(/usr/bin/memcached -l 127.0.0.1 -p "$MEMCACHED_PORT" -U 0 -m 64 -t 2)
  [ "$(id -u)" = 0 ] && memcached+=(-u root)
  spawn memcached "${memcached[@]}"

  # The four Swift servers, in one process tree (see write_runner).
  spawn swift "$PY" "$DIR/run-swift.py" "$ACCOUNT_PORT" "$CONTAINER_PORT" "$OBJECT_PORT"

  # Wait until memcached and every server answer.
  wait_until memcached_up "$MEMCACHED_PORT"
  local port
  for port in "$ACCOUNT_PORT" "$CONTAINER_PORT" "$OBJECT_PORT" "$PROXY_PORT"; do
    wait_until answers "$port" /healthcheck 200
  done

  if [ -n "${KS_AUTH_URL:-}" ]; then
    printf 'ready endpoint=http://127.0.0.1:%s\n' "$PROXY_PORT"
  else
    printf 'ready endpoint=http://127.0.0.1:%s region=%s access_key_id=%s secret=%s' \
      "$PROXY_PORT" "$REGION" "$ACCESS_KEY_ID" "$SECRET"
    printf ' auth_url=http://127.0.0.1:%s/auth/v1.0 user=%s key=%s memcached=127.0.0.1:%s\n' \
      "$PROXY_PORT" "$ACCESS_KEY_ID" "$SECRET" "$MEMCACHED_PORT"
  fi

  # Serve until stdin reaches end of file or a signal comes, checking on
  # memcached and the runner (which exits should a server exit) 4 times a
  # second.
  serve_until_eof
}

case ${1:-} in
  install)
    [ $# = 1 ] || usage
    install
    ;;
  serve)
    if [ $# = 7 ] && [ "$3" = --keystone ]; then
      KS_AUTH_URL=$4 KS_USER=$5 KS_PASSWORD=$6 KS_PROJECT=$7
      AUTH_FILTERS="authtoken keystoneauth"
    else
      [ $# = 2 ] || usage
      AUTH_FILTERS="s3api tempauth"
    fi
    serve "$2"
    ;;
  *) usage ;;
esac

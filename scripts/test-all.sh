#!/usr/bin/env bash
# Runs every check and test of the project on a fresh machine: installs what
# the tests need (curl, nginx, OpenStack Swift as a real S3 server, qemu and a
# Debian kernel for the kernel-TLS tests, a Python venv with the OpenStack
# clients), then
# formatting, lints, docs, unit and end-to-end tests, the real-client tests and
# a short run of each fuzz target. `.ci/run` calls exactly this.
#
# Environment knobs (all optional):
#   FUZZ_SECONDS   seconds per fuzz target (default 15; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-15}
step() { printf '\n== %s\n' "$*"; }

step "toolchain and system packages"
cargo --version
rustc --version
# Debian packages the tests drive: curl (the operator's client in
# proxy/tests/curl.rs) and nginx (a real HTTP origin in proxy/tests/origin.rs).
need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
# OpenStack Swift with memcached and keystonemiddleware: the Swift store of
# proxy/tests/swift.rs and tests/*/test_swift_*.py, and the S3 server of
# proxy/tests/s3.rs, all started through `scripts/swift.sh serve`.
scripts/swift.sh install
# PostgreSQL and MariaDB: the SQL metadata databases of control/tests/sql.rs
# and of the API tests run on each (started below, on loopback).
scripts/sql.sh install
# qemu, busybox and Debian's cloud kernel (which has TLS offload, unlike this
# machine's): the VM in which proxy/tests/kernel_tls.rs runs.
scripts/kernel-tls-vm.sh install

step "format"
cargo fmt --all --check
(cd fuzz && cargo fmt --check)

step "lint"
cargo clippy --workspace --all-targets --profile ci -- -D warnings

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --profile ci --quiet

step "tests"
# One profile (ci: optimised, with overflow checks) builds everything the tests run.
cargo test --workspace --profile ci

step "SQL metadata: the API tests on PostgreSQL and on MariaDB, and control/tests/sql.rs"
sqldir=$(mktemp -d)
trap 'scripts/sql.sh stop "$sqldir"; rm -rf "$sqldir"' EXIT
scripts/sql.sh start "$sqldir" >"$sqldir/env"
. "$sqldir/env"
# --workspace throughout: the same features as the run above, so nothing
# is built again.
for backend in postgres mariadb; do
  GLANCE_TEST_METADATA=$backend cargo test --workspace --profile ci --test api --test metadefs --test import
done
cargo test --workspace --profile ci --test sql -- --include-ignored

step "kernel TLS: proxy/tests/kernel_tls.rs in a VM booting Debian's kernel (this one has no TLS offload)"
scripts/kernel-tls-vm.sh run

step "end-to-end, real OpenStack clients (python-openstackclient, python-glanceclient, openstacksdk), a real Keystone and tempest's image API tests"
# A venv of the project's own, pinned by OpenStack's upper constraints.
venv=.venv
if [ ! -x "$venv/bin/openstack" ] || [ ! -x "$venv/bin/pytest" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    -c tests/clients/upper-constraints.txt \
    python-openstackclient python-glanceclient openstacksdk pytest
fi
# A real Keystone (PyPI keystone, under gunicorn) in the same venv: the tests
# in tests/keystone start it through tests/keystone/keystone.sh serve.
tests/keystone/keystone.sh install "$venv"
# tempest, whose image API tests tests/tempest/test_tempest.py runs.
tests/tempest/tempest.sh install "$venv"
GLANCE_BIN_DIR="$PWD/target/ci" "$venv/bin/pytest" -q -p no:cacheprovider tests

if [ "$FUZZ_SECONDS" -gt 0 ]; then
  step "fuzz (${FUZZ_SECONDS}s per target)"
  # The targets are one-line calls into the libraries, which the lint step
  # above checks; `cargo fmt --check` covers their text.
  scripts/fuzz.sh "$FUZZ_SECONDS"
fi

step "all checks passed"

#!/usr/bin/env bash
# Throw-away PostgreSQL and MariaDB servers for glance-api's SQL metadata
# tests: Debian's packages, each server in a directory of its own, listening
# on 127.0.0.1 on a free port, with a user that may create databases.
#
#   scripts/sql.sh install      # Debian's postgresql and mariadb-server-core
#   scripts/sql.sh start DIR    # start both; prints `export` lines with their admin URLs
#   scripts/sql.sh stop DIR     # stop both (only the servers started in DIR)
#
# The URLs printed: GLANCE_TEST_POSTGRES_URL and GLANCE_TEST_MARIADB_URL,
# each naming the server's maintenance database, for tests that create a
# database of their own per test.
#
# The servers skip flushing commits to disk (fsync=off,
# innodb_flush_log_at_trx_commit=2): throw-away data, faster tests. With
# SQL_DURABLE=1 they flush every commit, as production servers do (what
# glance-bench metadata measures against).
set -euo pipefail

PASSWORD=glance-test-password
if [ "${SQL_DURABLE:-0}" = 1 ]; then
  PG_FLUSH="-c fsync=on -c synchronous_commit=on"
  MARIADB_FLUSH="--innodb-flush-log-at-trx-commit=1 --sync-binlog=1"
else
  PG_FLUSH="-c fsync=off"
  MARIADB_FLUSH="--innodb-flush-log-at-trx-commit=2"
fi

pg_bin() {
  local initdb
  initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$initdb" ]; then
    echo "sql.sh: no PostgreSQL server (run: scripts/sql.sh install)" >&2
    exit 1
  fi
  dirname "$initdb"
}

free_port() {
  python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

install() {
  local need=()
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  command -v mariadbd >/dev/null 2>&1 || need+=(mariadb-server-core)
  command -v mariadb >/dev/null 2>&1 || need+=(mariadb-client-core)
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
  fi
}

start_postgres() {
  local dir=$1/postgres bin port
  bin=$(pg_bin)
  port=$(free_port)
  mkdir -p "$dir"
  # PostgreSQL refuses to run as root: its own user owns the directory.
  chown postgres:postgres "$dir"
  echo "$PASSWORD" >"$dir/pwfile"
  chown postgres:postgres "$dir/pwfile"
  runuser -u postgres -- "$bin/initdb" -D "$dir/data" -U postgres -E UTF8 --no-locale \
    --auth-local=trust --auth-host=scram-sha-256 --pwfile="$dir/pwfile" >"$dir/initdb.log"
  runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=300 $PG_FLUSH" \
    start >/dev/null
  echo "$port" >"$1/postgres.port"
  echo "export GLANCE_TEST_POSTGRES_URL=postgresql://postgres:$PASSWORD@127.0.0.1:$port/postgres"
}

start_mariadb() {
  local dir=$1/mariadb port
  port=$(free_port)
  mkdir -p "$dir"
  mariadb-install-db --no-defaults --datadir="$dir/data" --user=root \
    --auth-root-authentication-method=normal >"$dir/install.log" 2>&1
  mariadbd --no-defaults --datadir="$dir/data" --user=root --bind-address=127.0.0.1 \
    --port="$port" --socket="$dir/sock" --pid-file="$dir/pid" --log-error="$dir/error.log" \
    --skip-name-resolve --max-connections=300 $MARIADB_FLUSH \
    </dev/null >/dev/null 2>&1 &
  local i
  for i in $(seq 1 300); do
    if mariadb --no-defaults -S "$dir/sock" -uroot -e 'SELECT 1' >/dev/null 2>&1; then
      break
    fi
    if [ "$i" -eq 300 ]; then
      echo "sql.sh: MariaDB did not start; see $dir/error.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  mariadb --no-defaults -S "$dir/sock" -uroot -e \
    "CREATE USER 'glance'@'127.0.0.1' IDENTIFIED BY '$PASSWORD';
     GRANT ALL ON *.* TO 'glance'@'127.0.0.1';"
  echo "$port" >"$1/mariadb.port"
  echo "export GLANCE_TEST_MARIADB_URL=mysql://glance:$PASSWORD@127.0.0.1:$port/mysql"
}

stop() {
  local dir=$1
  if [ -d "$dir/postgres/data" ]; then
    runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$dir/postgres/data" -m fast -w stop \
      >/dev/null 2>&1 || true
  fi
  if [ -f "$dir/mariadb/pid" ]; then
    local pid i
    pid=$(cat "$dir/mariadb/pid")
    kill "$pid" 2>/dev/null || true
    # Its data directory may be removed next: wait for it to exit.
    for i in $(seq 1 300); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
}

case "${1:-}" in
  install) install ;;
  start)
    [ -n "${2:-}" ] || { echo "usage: $0 start DIR" >&2; exit 2; }
    mkdir -p "$2"
    # PostgreSQL's user must reach its directory inside.
    chmod 755 "$2"
    start_postgres "$2"
    start_mariadb "$2"
    ;;
  stop)
    [ -n "${2:-}" ] || { echo "usage: $0 stop DIR" >&2; exit 2; }
    stop "$2"
    ;;
  *) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2 ;;
esac

"""Keystone's WSGI application, for gunicorn, made safe for SQLite under
parallel requests (used by tests/keystone/keystone.sh).

  KEYSTONE_SH_DIR=DIR gunicorn -c tests/keystone/gunicorn.conf.py keystone_wsgi:application

Keystone reads its configuration from DIR/keystone.conf and from the (empty)
directory DIR/keystone.conf.d, nothing else: without a --config-dir of its
own oslo.config would also read /etc/keystone/keystone.conf.d and the like
if they existed.

Why the SQLite change: oslo.db opens SQLite transactions with a plain
(deferred) BEGIN, which takes the write lock only at the first write. Two
transactions that both read and then both want to write deadlock, and SQLite
then fails one of them at once with "database is locked" (the busy timeout
does not apply to that case, and WAL mode does not avoid it). Starting every
transaction with BEGIN IMMEDIATE takes the write lock up front: concurrent
transactions then queue on the busy timeout instead of failing.
"""

import os
import sqlite3
import sys

import sqlalchemy
from sqlalchemy.engine import Engine

DIR = os.environ["KEYSTONE_SH_DIR"]

# Milliseconds a transaction waits for another one's lock before failing.
BUSY_TIMEOUT_MS = 60000


def _on_connect(dbapi_con, con_record):
    if not isinstance(dbapi_con, sqlite3.Connection):
        return
    # No implicit BEGIN from Python's sqlite3 module: _on_begin emits it
    # (oslo.db's own connect listener does the same).
    dbapi_con.isolation_level = None
    dbapi_con.execute("PRAGMA busy_timeout = %d" % BUSY_TIMEOUT_MS)


def _on_begin(conn):
    if conn.dialect.name != "sqlite":
        return
    # oslo.db's "begin" listener, which runs after this one (listeners on the
    # Engine class come before those on an engine), emits a deferred BEGIN
    # unless its marker says a transaction is under way already; its
    # commit and rollback listeners clear that marker.
    if "in_transaction" not in conn.info:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        conn.info["in_transaction"] = True


sqlalchemy.event.listen(Engine, "connect", _on_connect)
sqlalchemy.event.listen(Engine, "begin", _on_begin)

# oslo.config parses sys.argv, which here is gunicorn's command line: give it
# the configuration's locations instead, and nothing else.
sys.argv = [
    "keystone",
    "--config-file", os.path.join(DIR, "keystone.conf"),
    "--config-dir", os.path.join(DIR, "keystone.conf.d"),
]

from keystone.wsgi.api import application  # noqa: E402,F401

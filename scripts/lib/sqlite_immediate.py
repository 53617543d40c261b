"""SQLite made safe for an OpenStack service (oslo.db) under parallel
requests: importing this module is enough, before the service makes its
database engine (used by tests/keystone/keystone_wsgi.py and
bench/peers/glance/glance_wsgi.py).

oslo.db opens SQLite transactions with a plain (deferred) BEGIN, which takes
the write lock only at the first write. Two transactions that both read and
then both want to write deadlock, and SQLite then fails one of them at once
with "database is locked" (the busy timeout does not apply to that case, and
WAL mode does not avoid it). Starting every transaction with BEGIN IMMEDIATE
takes the write lock up front: concurrent transactions, in threads or in
processes, then queue on the busy timeout instead of failing.
"""

import sqlite3

import sqlalchemy
from sqlalchemy.engine import Engine

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

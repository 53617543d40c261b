"""Keystone's WSGI application, for gunicorn, made safe for SQLite under
parallel requests (used by tests/keystone/keystone.sh).

  KEYSTONE_SH_DIR=DIR gunicorn -c tests/keystone/gunicorn.conf.py \
      --pythonpath tests/keystone,scripts/lib keystone_wsgi:application

Keystone reads its configuration from DIR/keystone.conf and from the (empty)
directory DIR/keystone.conf.d, nothing else: without a --config-dir of its
own oslo.config would also read /etc/keystone/keystone.conf.d and the like
if they existed.

SQLite: see scripts/lib/sqlite_immediate.py (on the Python path too):
SQLite transactions under parallel requests queue instead of failing with
"database is locked".
"""

import os
import sys

import sqlite_immediate  # noqa: F401

DIR = os.environ["KEYSTONE_SH_DIR"]

# oslo.config parses sys.argv, which here is gunicorn's command line: give it
# the configuration's locations instead, and nothing else.
sys.argv = [
    "keystone",
    "--config-file", os.path.join(DIR, "keystone.conf"),
    "--config-dir", os.path.join(DIR, "keystone.conf.d"),
]

from keystone.wsgi.api import application  # noqa: E402,F401

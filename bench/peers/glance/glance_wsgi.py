"""Glance's WSGI application for uWSGI, configured from one directory only,
its SQLite transactions queueing instead of failing (used by
bench/peers/glance.sh, whose uWSGI configuration loads it, with
bench/peers/glance and scripts/lib on the Python path):

  GLANCE_SH_DIR=DIR uwsgi ... --module glance_wsgi:application

Glance's own entry point, glance.wsgi.api, parses its configuration with no
command line: glance-api.conf (and glance-image-import.conf, if there) from
$OS_GLANCE_CONFIG_DIR, by default /etc/glance, and, as oslo.config does when
given no --config-dir, every *.conf in the directories glance.conf.d and
glance-api.conf.d under ~/.glance, ~, /etc/glance and /etc, wherever they
exist. Here it reads DIR/glance-api.conf and the (empty) directory
DIR/glance-api.conf.d, nothing else; the files it looks up next to its
configuration (glance-api-paste.ini, policy.yaml, schema-image.json) are
then found in DIR first.

SQLite: see scripts/lib/sqlite_immediate.py. Without it, parallel image
creates, uploads and deletes in two worker processes fail with "database is
locked" (500). Otherwise this is glance.wsgi.api unchanged.
"""

import os

from oslo_config import cfg

import sqlite_immediate  # noqa: F401

DIR = os.environ["GLANCE_SH_DIR"]

os.environ["OS_GLANCE_CONFIG_DIR"] = DIR


def _config_dirs(project=None, prog=None, extension=".conf.d"):
    return [os.path.join(DIR, "glance-api.conf.d")]


# oslo.config looks this function up when it is given no config dirs.
cfg.find_config_dirs = _config_dirs

from glance.wsgi.api import application  # noqa: E402,F401

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

It also holds identity_filter_factory, the stand-in for Keystone's
auth_token middleware in Glance's paste pipeline (see glance.sh).
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


# What keystonemiddleware's auth_token passes on for a valid token of user
# bench-user, with roles admin, member and reader on project bench-project.
IDENTITY = {
    "HTTP_X_IDENTITY_STATUS": "Confirmed",
    "HTTP_X_USER_ID": "bench-user",
    "HTTP_X_USER_NAME": "bench-user",
    "HTTP_X_USER_DOMAIN_ID": "default",
    "HTTP_X_PROJECT_ID": "bench-project",
    "HTTP_X_PROJECT_NAME": "bench-project",
    "HTTP_X_PROJECT_DOMAIN_ID": "default",
    "HTTP_X_ROLES": "admin,member,reader",
}


def identity_filter_factory(global_conf, **local_conf):
    """Paste filter in auth_token's place: every request carries IDENTITY
    (replacing any such headers the client sent, as auth_token does), from
    which Glance's own context middleware makes the request's context, with
    its one policy enforcer, as behind Keystone. (Glance's pipeline without
    Keystone, unauthenticated-context, makes a new policy enforcer for every
    request instead: some 9 ms of CPU each.)"""

    def _filter(app):
        def _app(environ, start_response):
            environ.update(IDENTITY)
            return app(environ, start_response)

        return _app

    return _filter


# (Last: loading the application loads the paste pipeline, and so
# identity_filter_factory.)
from glance.wsgi.api import application  # noqa: E402,F401

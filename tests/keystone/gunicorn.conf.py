"""gunicorn's configuration for Keystone (used by tests/keystone/keystone.sh).

  KEYSTONE_SH_DIR=DIR KEYSTONE_SH_PORT=PORT \
      gunicorn -c tests/keystone/gunicorn.conf.py \
      --pythonpath tests/keystone,scripts/lib keystone_wsgi:application
"""

import ctypes
import os
import signal

_dir = os.environ["KEYSTONE_SH_DIR"]

bind = ["127.0.0.1:" + os.environ["KEYSTONE_SH_PORT"]]

# One worker process with threads, so that Keystone's in-memory cache (see
# keystone.sh) is the only one and never stale. (The work is CPU-bound
# Python: a second process would gain little on two cores, and it would need
# a shared cache.) No keep-alive: every response says "Connection: close", so
# a client never sends a request on a pooled connection that the server has
# closed meanwhile.
worker_class = "gthread"
workers = 1
threads = 4
keepalive = 0

# Load Keystone in the master, before forking the worker: a worker that
# gunicorn restarts (after a timeout) is serving again at once. (No database
# connection is open then; oslo.db would not let a worker reuse one of its
# parent's anyway.)
preload_app = True

# Well above SQLite's busy timeout (60 s, scripts/lib/sqlite_immediate.py), so that a worker
# waiting on an SQLite lock is not killed for it.
timeout = 120
# On SIGTERM, requests under way get this long to finish.
graceful_timeout = 3

# gunicorn's control socket would go to ~/.gunicorn/gunicorn.ctl, one path
# for all the instances that tests may run at once.
control_socket_disable = True

errorlog = os.path.join(_dir, "logs", "gunicorn.log")
accesslog = os.path.join(_dir, "logs", "access.log")
loglevel = "info"
proc_name = "keystone"
worker_tmp_dir = _dir


def post_fork(server, worker):
    """A worker gets SIGKILL from the kernel when the master dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != server.pid:  # the master was gone already
        os._exit(1)

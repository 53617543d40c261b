"""The quickstart on a SQL database (`quickstart --metadata-url URL`), on
PostgreSQL and on MariaDB (servers started by `scripts/sql.sh`, their URLs
in GLANCE_TEST_POSTGRES_URL and GLANCE_TEST_MARIADB_URL): the openstack CLI
uploads and downloads through the 307 with the bytes checked by hash; the
records live in the database, not in a redb file, and a second start on the
same database still has them."""

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import urllib.parse
import uuid

import pytest

from conftest import image_bytes, quickstart_running

VENV_BIN = pathlib.Path(sys.executable).parent


def fresh_database(kind):
    """A new, empty database on the test server of `kind`: its URL."""
    var = {"postgres": "GLANCE_TEST_POSTGRES_URL", "mariadb": "GLANCE_TEST_MARIADB_URL"}[kind]
    admin = os.environ.get(var)
    assert admin, f"{var} is not set: start the servers with `scripts/sql.sh start DIR`"
    url = urllib.parse.urlsplit(admin)
    name = "glance_" + uuid.uuid4().hex
    env = dict(os.environ)
    if kind == "postgres":
        env["PGPASSWORD"] = url.password
        cmd = ["psql", "-h", url.hostname, "-p", str(url.port), "-U", url.username,
               "-d", url.path.lstrip("/"), "-c", f"CREATE DATABASE {name}"]
    else:
        cmd = ["mariadb", "--no-defaults", "-h", url.hostname, "-P", str(url.port),
               "-u", url.username, f"-p{url.password}", "-e", f"CREATE DATABASE {name}"]
    subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=60)
    scheme = "postgresql" if kind == "postgres" else "mariadb"
    return f"{scheme}://{url.username}:{url.password}@{url.hostname}:{url.port}/{name}"


def osc(qs, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(qs["env"][qs["admin"]])
    return subprocess.run([str(VENV_BIN / "openstack"), *args], capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.mark.parametrize("kind", ["postgres", "mariadb"])
def test_quickstart_on_a_sql_database_keeps_images_across_restarts(kind, tmp_path):
    url = fresh_database(kind)
    work = tmp_path / "qs"
    data = image_bytes(3 * 1024 * 1024 + 7, f"sql-{kind}")
    src = tmp_path / "disk.img"
    src.write_bytes(data)

    with quickstart_running(work, 1, "--metadata-url", url) as qs:
        # The password never appears in what the quickstart printed.
        assert urllib.parse.urlsplit(url).password not in qs["banner"]
        done = osc(qs, "image", "create", "--file", str(src), "--disk-format", "raw",
                   "--container-format", "bare", f"sql-{kind}", "-f", "json")
        assert done.returncode == 0, done.stderr
        image_id = json.loads(done.stdout)["id"]
    # Records went to the database, not to a file.
    assert not (work / "var" / "glance.redb").exists()

    with quickstart_running(work, 1, "--metadata-url", url) as qs:
        done = osc(qs, "image", "show", image_id, "-f", "json")
        assert done.returncode == 0, done.stderr
        shown = json.loads(done.stdout)
        assert shown["status"] == "active" and shown["name"] == f"sql-{kind}"
        out = tmp_path / "saved.img"
        done = osc(qs, "image", "save", "--file", str(out), image_id)
        assert done.returncode == 0, done.stderr
        assert hashlib.sha512(out.read_bytes()).digest() == hashlib.sha512(data).digest()

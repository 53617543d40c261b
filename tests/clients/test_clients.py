"""Real OpenStack clients against the quickstart: the openstack CLI
(python-openstackclient), python-glanceclient and openstacksdk, each
uploading, listing, showing and downloading through the 307 redirect, with the
bytes checked by hash, and the policy refusals they must report."""

import hashlib
import io
import json
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import image_bytes

VENV_BIN = pathlib.Path(sys.executable).parent


def osc(qs, token, *args):
    """Runs `openstack ...` as a user who sourced the quickstart's openrc."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(qs["env"][token])
    cmd = [str(VENV_BIN / "openstack"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_openstack_cli_create_list_show_save(quickstart, tmp_path):
    data = image_bytes(5 * 1024 * 1024 + 3, "cli")
    src = tmp_path / "disk.img"
    src.write_bytes(data)
    done = osc(quickstart, quickstart["admin"], "image", "create", "--file", str(src),
               "--disk-format", "raw", "--container-format", "bare", "cli-image", "-f", "json")
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    image_id = created["id"]

    done = osc(quickstart, quickstart["admin"], "image", "show", image_id, "-f", "json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["status"] == "active"
    assert shown["checksum"] == hashlib.md5(data).hexdigest()
    assert shown["size"] == len(data)

    done = osc(quickstart, quickstart["admin"], "image", "list", "-f", "json")
    assert done.returncode == 0, done.stderr
    assert image_id in [row["ID"] for row in json.loads(done.stdout)]

    out = tmp_path / "saved.img"
    done = osc(quickstart, quickstart["admin"], "image", "save", "--file", str(out), image_id)
    assert done.returncode == 0, done.stderr
    assert hashlib.sha512(out.read_bytes()).hexdigest() == hashlib.sha512(data).hexdigest()


def test_openstack_cli_reports_policy_refusals(quickstart, tmp_path):
    src = tmp_path / "private.img"
    src.write_bytes(image_bytes(4096, "private"))
    done = osc(quickstart, quickstart["admin"], "image", "create", "--file", str(src),
               "--private", "--disk-format", "raw", "--container-format", "bare",
               "admin-only", "-f", "json")
    assert done.returncode == 0, done.stderr
    image_id = json.loads(done.stdout)["id"]
    # Another project's member can neither see nor download it.
    done = osc(quickstart, quickstart["member"], "image", "show", image_id)
    assert done.returncode != 0
    assert "No Image found" in done.stderr or "404" in done.stderr or "Not Found" in done.stderr, done.stderr
    done = osc(quickstart, quickstart["member"], "image", "save", "--file", str(tmp_path / "x"), image_id)
    assert done.returncode != 0
    # And may not publish images.
    done = osc(quickstart, quickstart["member"], "image", "create", "--public", "nope")
    assert done.returncode != 0
    assert "403" in done.stderr or "Forbidden" in done.stderr or "not permitted" in done.stderr, done.stderr


def test_glanceclient_upload_and_download_with_checksum(quickstart):
    from glanceclient import Client

    env = quickstart["env"][quickstart["admin"]]
    client = Client("2", endpoint=env["OS_IMAGE_URL"], token=env["OS_TOKEN"])
    data = image_bytes(3 * 1024 * 1024 + 1, "glanceclient")
    image = client.images.create(name="gc-image", disk_format="qcow2", container_format="bare",
                                 os_distro="cirros")
    assert image["status"] == "queued"
    client.images.upload(image["id"], io.BytesIO(data))
    got = client.images.get(image["id"])
    assert got["status"] == "active"
    assert got["os_hash_algo"] == "sha512"
    assert got["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert got["os_distro"] == "cirros"
    # data() follows the 307 and checks Content-MD5 itself while iterating.
    body = b"".join(client.images.data(image["id"]))
    assert hashlib.sha512(body).digest() == hashlib.sha512(data).digest()
    ids = [img["id"] for img in client.images.list()]
    assert image["id"] in ids
    client.images.update(image["id"], name="gc-renamed")
    assert client.images.get(image["id"])["name"] == "gc-renamed"
    client.images.delete(image["id"])
    assert image["id"] not in [img["id"] for img in client.images.list()]


def test_openstacksdk_create_download_and_verify(quickstart, tmp_path):
    import openstack

    conn = openstack.connect(
        auth_type="admin_token",
        auth={"endpoint": quickstart["env"][quickstart["admin"]]["OS_ENDPOINT"],
              "token": quickstart["admin"]},
        load_envvars=False, load_yaml_config=False)
    data = image_bytes(2 * 1024 * 1024 + 7, "sdk")
    src = tmp_path / "sdk.img"
    src.write_bytes(data)
    image = conn.image.create_image(name="sdk-image", filename=str(src), disk_format="raw",
                                    container_format="bare", wait=True)
    fetched = conn.image.get_image(image.id)
    assert fetched.status == "active"
    assert fetched.checksum == hashlib.md5(data).hexdigest()
    out = tmp_path / "sdk-out.img"
    conn.image.download_image(fetched, output=str(out))
    assert hashlib.sha512(out.read_bytes()).digest() == hashlib.sha512(data).digest()
    names = [img.name for img in conn.image.images()]
    assert "sdk-image" in names


def glance(qs, token, *args):
    """Runs the `glance` CLI against the quickstart's endpoint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    cmd = [str(VENV_BIN / "glance"), "--os-image-url", qs["endpoint"],
           "--os-auth-token", token, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_cache_commands_of_glanceclient_and_the_openstack_cli(quickstart, tmp_path):
    import time

    admin = quickstart["admin"]
    src = tmp_path / "cache.img"
    data = image_bytes(3 * 1024 * 1024 + 1, "cache")
    src.write_bytes(data)
    done = osc(quickstart, admin, "image", "create", "--file", str(src), "--disk-format",
               "raw", "--container-format", "bare", "cache-image", "-f", "json")
    assert done.returncode == 0, done.stderr
    image_id = json.loads(done.stdout)["id"]

    done = glance(quickstart, admin, "cache-queue", image_id)
    assert done.returncode == 0, done.stderr
    deadline = time.time() + 60
    while True:
        done = osc(quickstart, admin, "cached", "image", "list", "-f", "json")
        assert done.returncode == 0, done.stderr
        rows = {r["ID"]: r for r in json.loads(done.stdout)}
        if rows.get(image_id, {}).get("State") == "cached":
            break
        assert time.time() < deadline, rows
        time.sleep(0.2)
    assert rows[image_id]["Size"] == len(data)
    done = glance(quickstart, admin, "cache-list")
    assert done.returncode == 0, done.stderr
    assert image_id in done.stdout and "cached" in done.stdout

    # Members may not see or change the cache.
    done = osc(quickstart, quickstart["member"], "cached", "image", "list")
    assert done.returncode != 0
    assert "403" in done.stderr or "Forbidden" in done.stderr or "denied" in done.stderr, done.stderr

    done = osc(quickstart, admin, "cached", "image", "delete", image_id)
    assert done.returncode == 0, done.stderr
    done = osc(quickstart, admin, "cached", "image", "list", "-f", "json")
    assert image_id not in [r["ID"] for r in json.loads(done.stdout)]
    done = glance(quickstart, admin, "cache-clear", "--target", "cache")
    assert done.returncode == 0, done.stderr

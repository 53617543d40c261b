"""The quickstart on OpenStack Swift (`quickstart --swift-auth-url URL
--swift-user USER --swift-key KEY`), against a real Swift started by
`scripts/swift.sh serve` (tempauth, tempurl and SLO in its proxy): the
openstack CLI uploads 300 MiB, which lands as a Static Large Object, and
downloads it through glance-stream; an admin's direct link is a Swift
TempURL that opens the object without a token, and a tampered one is
refused by Swift."""

import hashlib
import json
import os
import pathlib
import subprocess
import sys

import pytest
import requests

from conftest import ROOT, check_temp_url, quickstart_running

VENV_BIN = pathlib.Path(sys.executable).parent
MIB = 1 << 20


@pytest.fixture(scope="module")
def swift(tmp_path_factory):
    """A running Swift: the fields of its ready line."""
    work = tmp_path_factory.mktemp("swift")
    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "swift.sh"), "serve", str(work)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("ready "), f"Swift did not start: {line!r}"
    fields = dict(f.split("=", 1) for f in line.split()[1:])
    yield fields
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


def swift_call(swift, method, path):
    """`method` on `path` under the account's storage URL, with a token."""
    login = requests.get(swift["auth_url"], timeout=30,
                         headers={"X-Auth-User": swift["user"], "X-Auth-Key": swift["key"]})
    assert login.status_code == 200
    return requests.request(method, login.headers["X-Storage-Url"] + path, timeout=60,
                            headers={"X-Auth-Token": login.headers["X-Auth-Token"]})


def osc(qs, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(qs["env"][qs["admin"]])
    return subprocess.run([str(VENV_BIN / "openstack"), *args], capture_output=True,
                          text=True, timeout=600, env=env)


def test_quickstart_on_swift_stores_a_large_image_and_hands_out_temp_urls(swift, tmp_path):
    data = os.urandom(300 * MIB + 4097)
    want = hashlib.sha512(data).hexdigest()
    src = tmp_path / "disk.img"
    src.write_bytes(data)

    with quickstart_running(tmp_path / "qs", 1, "--swift-auth-url", swift["auth_url"],
                            "--swift-user", swift["user"], "--swift-key", swift["key"]) as qs:
        assert "# a Swift TempURL" in qs["banner"], qs["banner"]
        done = osc(qs, "image", "create", "--file", str(src), "--disk-format", "raw",
                   "--container-format", "bare", "--public", "on-swift", "-f", "json")
        assert done.returncode == 0, done.stderr
        image_id = json.loads(done.stdout)["id"]
        # Nothing went to the quickstart's directory of images.
        assert list((qs["work"] / "var" / "images").iterdir()) == []
        # In Swift: a Static Large Object of two segments in the `glance` container.
        manifest = swift_call(swift, "GET", f"/glance/{image_id}?multipart-manifest=get")
        assert manifest.status_code == 200
        sizes = [s["bytes"] for s in manifest.json()]
        assert sizes == [200 * MIB, 100 * MIB + 4097]

        shown = json.loads(osc(qs, "image", "show", image_id, "-f", "json").stdout)
        assert shown["status"] == "active"
        assert shown["checksum"] == hashlib.md5(data).hexdigest()
        out = tmp_path / "saved.img"
        done = osc(qs, "image", "save", "--file", str(out), image_id)
        assert done.returncode == 0, done.stderr
        assert hashlib.sha512(out.read_bytes()).hexdigest() == want

        # A member may download the public image, but direct links are the
        # admin's and the service's.
        links = f"{qs['endpoint']}/v2/images/{image_id}/links"
        member = requests.post(links, json={"kind": "direct"}, timeout=30,
                               headers={"X-Auth-Token": qs["member"]})
        assert member.status_code == 403, member.text
        direct = requests.post(links, json={"kind": "direct"}, timeout=30,
                               headers={"X-Auth-Token": qs["admin"]})
        assert direct.status_code == 200, direct.text
        body = direct.json()
        assert body["kind"] == "direct"
        url = body["url"]
        assert url.startswith(swift["endpoint"] + "/v1/AUTH_test/glance/" + image_id + "?"), url
        assert "temp_url_sig=" in url and "temp_url_expires=" in url
        check_temp_url(url, want)

        # An image without data whose upload died with glance-api (segments
        # written, no manifest): deleting it removes what was left.
        cut = requests.post(f"{qs['endpoint']}/v2/images", timeout=30,
                            headers={"X-Auth-Token": qs["admin"]},
                            json={"name": "cut-short", "disk_format": "raw",
                                  "container_format": "bare"}).json()["id"]
        leftover = f"/glance/{cut}.segments/0123456789abcdef/00001"
        assert swift_call(swift, "PUT", leftover).status_code == 201
        done = osc(qs, "image", "delete", cut)
        assert done.returncode == 0, done.stderr
        assert swift_call(swift, "HEAD", leftover).status_code == 404

        # Deleting the image deletes the object and its segments.
        done = osc(qs, "image", "delete", image_id)
        assert done.returncode == 0, done.stderr
        assert swift_call(swift, "HEAD", f"/glance/{image_id}").status_code == 404
        listing = swift_call(swift, "GET", f"/glance?format=json&prefix={image_id}")
        assert listing.status_code in (200, 204)
        assert listing.status_code == 204 or listing.json() == []

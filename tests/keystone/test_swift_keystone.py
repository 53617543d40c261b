"""The Swift store authenticating with Keystone: a real Keystone
(tests/keystone/keystone.sh) and a real Swift that validates its tokens
(`scripts/swift.sh serve DIR --keystone ...`: keystonemiddleware's
auth_token and Swift's keystoneauth), with Swift registered in Keystone's
catalog. The quickstart (`--swift-auth-url KEYSTONE/v3 --swift-user glance
--swift-project service`) finds its storage URL in the catalog on both
planes, uploads a segmented image, serves it through glance-stream, and
hands out TempURLs that Swift honours."""

import hashlib
import os
import pathlib
import subprocess
import sys

import pytest
import requests

from conftest import ROOT, check_temp_url, quickstart_running
from setup_accounts import Keystone

HERE = pathlib.Path(__file__).resolve().parent
MIB = 1 << 20


@pytest.fixture(scope="module")
def keystone_swift(tmp_path_factory):
    """Keystone, then Swift checking its tokens, registered in its catalog."""
    work = tmp_path_factory.mktemp("ks-swift")
    (work / "keystone").mkdir()
    (work / "swift").mkdir()
    keystone = subprocess.Popen(
        ["bash", str(HERE / "keystone.sh"), "serve", sys.prefix, str(work / "keystone")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    swift = None
    try:
        ready = keystone.stdout.readline()
        assert ready.startswith("ready "), f"Keystone did not start: {ready!r}"
        fields = dict(f.split("=", 1) for f in ready.split()[1:])
        auth_url, password = fields["auth_url"], fields["password"]
        swift = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "swift.sh"), "serve", str(work / "swift"),
             "--keystone", auth_url, "glance", password, "service"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = swift.stdout.readline()
        assert ready.startswith("ready "), f"Swift did not start: {ready!r}"
        endpoint = ready.split("endpoint=", 1)[1].strip()
        # Swift in the catalog, as an operator registers it.
        ks = Keystone(auth_url)
        ks.login(password)
        service = ks.call("POST", "/services", {"service": {
            "type": "object-store", "name": "swift", "enabled": True}})[1]["service"]["id"]
        for interface in ("public", "internal"):
            ks.call("POST", "/endpoints", {"endpoint": {
                "service_id": service, "interface": interface, "region_id": "RegionOne",
                "url": endpoint + "/v1/AUTH_$(project_id)s", "enabled": True}})
        yield {"auth_url": auth_url, "password": password, "endpoint": endpoint}
    finally:
        for proc in (swift, keystone):
            if proc is not None:
                proc.stdin.close()
        for proc in (swift, keystone):
            if proc is not None:
                assert proc.wait(timeout=60) == 0


def test_quickstart_on_swift_with_keystone_uploads_serves_and_signs_temp_urls(
        keystone_swift, tmp_path):
    cloud = keystone_swift
    data = os.urandom(40 * MIB + 3)
    want = hashlib.sha512(data).hexdigest()
    with quickstart_running(tmp_path / "qs", 1, "--swift-auth-url", cloud["auth_url"],
                            "--swift-user", "glance", "--swift-key", cloud["password"],
                            "--swift-project", "service") as qs:
        headers = {"X-Auth-Token": qs["admin"]}
        api = qs["endpoint"]
        image = requests.post(f"{api}/v2/images", json={
            "name": "via-keystone", "disk_format": "raw", "container_format": "bare"},
            headers=headers, timeout=30).json()
        put = requests.put(f"{api}/v2/images/{image['id']}/file", data=data, timeout=300,
                           headers={**headers, "Content-Type": "application/octet-stream"})
        assert put.status_code == 204, put.text
        # Through glance-stream: the 307, then the node's own Keystone token.
        got = requests.get(f"{api}/v2/images/{image['id']}/file", headers=headers, timeout=300)
        assert got.status_code == 200
        assert hashlib.sha512(got.content).hexdigest() == want

        direct = requests.post(f"{api}/v2/images/{image['id']}/links", json={"kind": "direct"},
                               headers=headers, timeout=30)
        assert direct.status_code == 200, direct.text
        url = direct.json()["url"]
        # The catalog's storage URL: the service project's account.
        project = requests.post(f"{cloud['auth_url']}/auth/tokens", timeout=30, json={"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "glance", "domain": {"name": "Default"}, "password": cloud["password"]}}},
            "scope": {"project": {"name": "service", "domain": {"name": "Default"}}}}}
        ).json()["token"]["project"]["id"]
        assert url.startswith(f"{cloud['endpoint']}/v1/AUTH_{project}/glance/{image['id']}?"), url
        check_temp_url(url, want)

"""The quickstart on HTTPS (`quickstart --tls`): the openstack CLI,
python-glanceclient and openstacksdk trust the throw-away CA through
OS_CACERT, upload to glance-api over TLS and follow its 307 to glance-stream
over TLS, with the bytes checked by hash; without the CA they refuse, and a
plaintext request on either TLS port gets a readable 400."""

import hashlib
import io
import json
import os
import pathlib
import socket
import subprocess
import sys
import urllib.parse

import pytest

from conftest import image_bytes

VENV_BIN = pathlib.Path(sys.executable).parent


def openrc(qs):
    return qs["env"][qs["admin"]]


def test_the_openrc_names_https_urls_and_the_ca(quickstart_tls):
    env = openrc(quickstart_tls)
    assert env["OS_IMAGE_URL"].startswith("https://"), env
    assert env["OS_ENDPOINT"].startswith("https://"), env
    ca = pathlib.Path(env["OS_CACERT"])
    assert ca.is_absolute() and ca == quickstart_tls["work"] / "var" / "ca.pem"
    assert ca.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert "curl --cacert $OS_CACERT" in quickstart_tls["banner"]
    # glance-api reaches its https node through the CA: health checked, the
    # keyring pushed.
    import time
    import requests
    deadline = time.time() + 30
    while True:
        r = requests.get(f"{env['OS_IMAGE_URL']}/admin/nodes", verify=env["OS_CACERT"],
                         headers={"X-Auth-Token": env["OS_TOKEN"]}, timeout=10)
        assert r.status_code == 200, r.text
        nodes = r.json()["nodes"]
        if all(n["health"] == "up" and n["keyring"] == "current" for n in nodes):
            break
        assert time.time() < deadline, nodes
        time.sleep(0.2)
    assert [n["public_url"] for n in nodes] == [
        f"https://127.0.0.1:{quickstart_tls['stream_ports'][0]}"]
    # The CA's key was never written anywhere: the only private keys on disk
    # are the API's and the node's, each of mode 0600.
    var = quickstart_tls["work"] / "var"
    keys = sorted(str(p.relative_to(var)) for p in var.rglob("*")
                  if p.is_file() and b"PRIVATE KEY" in p.read_bytes())
    assert keys == ["api-key.pem", "stream-1/tls-key.pem"], keys
    for key in keys:
        assert (var / key).stat().st_mode & 0o077 == 0, key


def test_openstack_cli_over_https_with_os_cacert(quickstart_tls, tmp_path):
    data = image_bytes(6 * 1024 * 1024 + 5, "tls-cli")
    src = tmp_path / "disk.img"
    src.write_bytes(data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(openrc(quickstart_tls))

    def osc(*args):
        return subprocess.run([str(VENV_BIN / "openstack"), *args], capture_output=True,
                              text=True, timeout=300, env=env)

    done = osc("image", "create", "--file", str(src), "--disk-format", "raw",
               "--container-format", "bare", "tls-cli", "-f", "json")
    assert done.returncode == 0, done.stderr
    image_id = json.loads(done.stdout)["id"]
    out = tmp_path / "saved.img"
    done = osc("image", "save", "--file", str(out), image_id)
    assert done.returncode == 0, done.stderr
    assert hashlib.sha512(out.read_bytes()).digest() == hashlib.sha512(data).digest()
    # Without the CA the CLI refuses the server's certificate.
    del env["OS_CACERT"]
    done = osc("image", "list")
    assert done.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr or "SSL" in done.stderr, done.stderr


def test_glanceclient_follows_the_redirect_to_an_https_stream_node(quickstart_tls, monkeypatch):
    from glanceclient import Client

    # requests lets these variables override a session's own CA file (the
    # one glanceclient sets from `cacert`): a machine-wide bundle would hide
    # the quickstart's CA.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)

    env = openrc(quickstart_tls)
    client = Client("2", endpoint=env["OS_IMAGE_URL"], token=env["OS_TOKEN"],
                    cacert=env["OS_CACERT"])
    data = image_bytes(9 * 1024 * 1024 + 3, "tls-glanceclient")
    image = client.images.create(name="tls-gc", disk_format="raw", container_format="bare")
    client.images.upload(image["id"], io.BytesIO(data))
    assert client.images.get(image["id"])["os_hash_value"] == hashlib.sha512(data).hexdigest()
    # Twice: a miss filled through the cache, then a hit from the mapped file.
    for _ in range(2):
        body = b"".join(client.images.data(image["id"]))
        assert hashlib.sha512(body).digest() == hashlib.sha512(data).digest()
    # The 307 points at the stream node's https URL.
    import requests
    r = requests.get(f"{env['OS_IMAGE_URL']}/v2/images/{image['id']}/file",
                     headers={"X-Auth-Token": env["OS_TOKEN"]}, verify=env["OS_CACERT"],
                     allow_redirects=False, timeout=30)
    assert r.status_code == 307
    location = urllib.parse.urlsplit(r.headers["Location"])
    assert location.scheme == "https"
    assert location.port == quickstart_tls["stream_ports"][0]
    # Without the CA, the download is refused before a byte moves.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(r.headers["Location"], timeout=30)


def test_openstacksdk_over_https_with_the_ca(quickstart_tls, tmp_path):
    import openstack

    env = openrc(quickstart_tls)
    conn = openstack.connect(
        auth_type="admin_token",
        auth={"endpoint": env["OS_ENDPOINT"], "token": env["OS_TOKEN"]},
        cacert=env["OS_CACERT"], load_envvars=False, load_yaml_config=False)
    data = image_bytes(3 * 1024 * 1024 + 11, "tls-sdk")
    src = tmp_path / "sdk.img"
    src.write_bytes(data)
    image = conn.image.create_image(name="tls-sdk", filename=str(src), disk_format="raw",
                                    container_format="bare", wait=True)
    out = tmp_path / "sdk-out.img"
    conn.image.download_image(conn.image.get_image(image.id), output=str(out))
    assert hashlib.sha512(out.read_bytes()).digest() == hashlib.sha512(data).digest()


@pytest.mark.parametrize("plane", ["api", "stream"])
def test_plaintext_http_on_a_tls_port_gets_a_readable_400(quickstart_tls, plane):
    port = (urllib.parse.urlsplit(quickstart_tls["endpoint"]).port if plane == "api"
            else quickstart_tls["stream_ports"][0])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
    assert answer.endswith(b"\r\n\r\nthis port speaks HTTPS: send the request over TLS\n"), answer

"""glance-api in keystone mode against a real Keystone (PyPI `keystone`,
started by tests/keystone/keystone.sh), driven by the real clients:
keystoneauth sessions, python-glanceclient, and the service-token path Nova
takes. Bytes are compared by sha512; refusals by the clients' exceptions."""

import hashlib
import io
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests
from glanceclient import exc as glance_exc
from glanceclient.v2 import client as glance_client
from keystoneauth1 import service_token
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from conftest import BIN_DIR, free_port, image_bytes

HERE = pathlib.Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    """Keystone, then the quickstart in keystone mode as its `glance` user."""
    work = tmp_path_factory.mktemp("ks")
    # The Image API's port goes into Keystone's catalog before it listens.
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    (work / "keystone").mkdir()
    keystone = subprocess.Popen(
        ["bash", str(HERE / "keystone.sh"), "serve", sys.prefix, str(work / "keystone"),
         "--image-url", endpoint],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ready = keystone.stdout.readline()
    assert ready.startswith("ready "), f"Keystone did not start: {ready!r}"
    fields = dict(f.split("=", 1) for f in ready.split()[1:])
    auth_url, password = fields["auth_url"], fields["password"]
    stream_port = free_port()
    log = open(work / "quickstart.log", "w")
    qs = subprocess.Popen(
        [str(BIN_DIR / "glance-api"), "quickstart", "--dir", str(work / "var"),
         "--port", str(port), "--stream-port", str(stream_port),
         "--keystone-url", auth_url, "--keystone-user", "glance",
         "--keystone-password", password, "--keystone-project", "service"],
        stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        for line in qs.stdout:
            if line.startswith("Press Ctrl-C"):
                break
        else:
            raise AssertionError("quickstart exited early: " + (work / "quickstart.log").read_text())
        yield {"auth_url": auth_url, "password": password, "endpoint": endpoint,
               "log": work / "quickstart.log",
               "keystone_access_log": work / "keystone" / "logs" / "access.log"}
    finally:
        # Ctrl-C stops the quickstart and its stream node; closing stdin, Keystone.
        qs.send_signal(signal.SIGINT)
        stopped = qs.wait(timeout=30)
        log.close()
        keystone.stdin.close()
        assert keystone.wait(timeout=60) == 0
    assert stopped == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", stream_port), timeout=2).close()


def session(cloud, user, project):
    auth = v3.Password(auth_url=cloud["auth_url"], username=user, password=cloud["password"],
                       project_name=project, user_domain_name="Default",
                       project_domain_name="Default")
    return ks_session.Session(auth=auth)


def glance(cloud, user, project):
    return glance_client.Client(session=session(cloud, user, project),
                                endpoint_override=cloud["endpoint"])


def upload(client, name, data, visibility="private"):
    image = client.images.create(name=name, disk_format="raw", container_format="bare",
                                 visibility=visibility)
    client.images.upload(image["id"], io.BytesIO(data))
    return client.images.get(image["id"])


def test_a_member_uploads_and_downloads_with_keystone_tokens(cloud):
    demo = glance(cloud, "demo-member", "demo")
    data = image_bytes(3 * 1024 * 1024 + 11, "ks-demo")
    image = upload(demo, "ks-demo", data)
    assert image["status"] == "active"
    assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()
    # glanceclient follows the 307 and checks os_hash_value itself.
    got = b"".join(demo.images.data(image["id"]))
    assert hashlib.sha512(got).digest() == hashlib.sha512(data).digest()
    assert image["id"] in [i["id"] for i in demo.images.list()]


def test_policy_refusals_with_keystone_roles(cloud):
    demo = glance(cloud, "demo-member", "demo")
    image = upload(demo, "ks-private", image_bytes(4096, "ks-private"))
    reader = glance(cloud, "demo-reader", "demo")
    assert reader.images.get(image["id"])["id"] == image["id"], "a reader sees"
    with pytest.raises(glance_exc.HTTPForbidden):
        b"".join(reader.images.data(image["id"]))
    alt = glance(cloud, "alt-member", "alt")
    with pytest.raises(glance_exc.HTTPNotFound):
        alt.images.get(image["id"])


def test_a_shared_image_is_listed_after_accept_only(cloud):
    demo = glance(cloud, "demo-member", "demo")
    alt_session = session(cloud, "alt-member", "alt")
    alt = glance_client.Client(session=alt_session, endpoint_override=cloud["endpoint"])
    alt_project = alt_session.get_project_id()
    data = image_bytes(70000, "ks-shared")
    image = upload(demo, "ks-shared", data, visibility="shared")
    member = demo.image_members.create(image["id"], alt_project)
    assert member["status"] == "pending"
    assert image["id"] not in [i["id"] for i in alt.images.list()]
    alt.image_members.update(image["id"], alt_project, "accepted")
    assert image["id"] in [i["id"] for i in alt.images.list()]
    got = b"".join(alt.images.data(image["id"]))
    assert hashlib.sha512(got).digest() == hashlib.sha512(data).digest()


def test_novas_path_user_and_service_tokens_follow_the_redirect(cloud):
    demo = glance(cloud, "demo-member", "demo")
    data = image_bytes(1024 * 1024, "ks-nova")
    image = upload(demo, "ks-nova", data)
    url = f"{cloud['endpoint']}/v2/images/{image['id']}/file"

    def auth(user, project):
        return v3.Password(auth_url=cloud["auth_url"], username=user, password=cloud["password"],
                           project_name=project, user_domain_name="Default",
                           project_domain_name="Default")

    # As Nova does: the user's token plus the service's own, by keystoneauth.
    nova = ks_session.Session(auth=service_token.ServiceTokenAuthWrapper(
        user_auth=auth("demo-member", "demo"), service_auth=auth("glance", "service")))
    r = nova.get(url, raise_exc=False)
    assert r.status_code == 200 and r.history and r.history[0].status_code == 307
    assert hashlib.sha512(r.content).digest() == hashlib.sha512(data).digest()
    user_token = session(cloud, "demo-member", "demo").get_token()
    service = session(cloud, "glance", "service").get_token()
    # A bad service token fails the request, as keystonemiddleware does.
    r = requests.get(url, headers={"X-Auth-Token": user_token, "X-Service-Token": "bogus"},
                     timeout=60, allow_redirects=False)
    assert r.status_code == 401
    # Tokens never reach the stream node's (or the API's) log.
    log = cloud["log"].read_text()
    assert user_token not in log and service not in log
    assert nova.get_token() not in log


def test_missing_or_invalid_tokens_get_a_keystone_challenge(cloud):
    for headers in ({}, {"X-Auth-Token": "not-a-token"}):
        r = requests.get(f"{cloud['endpoint']}/v2/images", headers=headers, timeout=30)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Keystone uri=")


def test_update_tag_and_deactivate_with_keystone_roles(cloud):
    demo = glance(cloud, "demo-member", "demo")
    data = image_bytes(200000, "ks-update")
    image = upload(demo, "ks-update", data)
    demo.images.update(image["id"], name="ks-renamed", os_distro="cirros")
    demo.image_tags.update(image["id"], "golden")
    shown = demo.images.get(image["id"])
    assert (shown["name"], shown["os_distro"], shown["tags"]) == ("ks-renamed", "cirros", ["golden"])
    # The owner's members (or admins) deactivate, but not another project's
    # or a reader; then members may not download, admins may.
    with pytest.raises(glance_exc.HTTPForbidden):
        glance(cloud, "demo-reader", "demo").images.deactivate(image["id"])
    demo.images.deactivate(image["id"])
    admin = glance(cloud, "demo-admin", "demo")
    with pytest.raises(glance_exc.HTTPForbidden):
        b"".join(demo.images.data(image["id"]))
    got = b"".join(admin.images.data(image["id"]))
    assert hashlib.sha512(got).digest() == hashlib.sha512(data).digest()
    admin.images.reactivate(image["id"])
    assert hashlib.sha512(b"".join(demo.images.data(image["id"]))).digest() == \
        hashlib.sha512(data).digest()


def test_openstacksdk_and_the_openstack_cli_through_keystones_catalog(cloud, tmp_path):
    import openstack

    conn = openstack.connect(auth_url=cloud["auth_url"], username="demo-member",
                             password=cloud["password"], project_name="demo",
                             user_domain_name="Default", project_domain_name="Default")
    data = image_bytes(2 * 1024 * 1024 + 5, "ks-sdk")
    src = tmp_path / "sdk.img"
    src.write_bytes(data)
    image = conn.image.create_image(name="ks-sdk", filename=str(src), disk_format="raw",
                                    container_format="bare", wait=True)
    got = conn.image.download_image(image)
    body = got.content if hasattr(got, "content") else got
    assert hashlib.sha512(body).digest() == hashlib.sha512(data).digest()

    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(OS_AUTH_URL=cloud["auth_url"], OS_USERNAME="demo-member",
               OS_PASSWORD=cloud["password"], OS_PROJECT_NAME="demo",
               OS_USER_DOMAIN_NAME="Default", OS_PROJECT_DOMAIN_NAME="Default",
               OS_IDENTITY_API_VERSION="3")
    out = tmp_path / "saved.img"
    done = subprocess.run([str(pathlib.Path(sys.executable).parent / "openstack"), "image", "save",
                           "--file", str(out), image.id],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert hashlib.sha512(out.read_bytes()).digest() == hashlib.sha512(data).digest()


def test_a_storm_of_one_token_costs_keystone_one_validation(cloud):
    from concurrent.futures import ThreadPoolExecutor

    token = session(cloud, "demo-member", "demo").get_token()
    log = cloud["keystone_access_log"]

    def validations():
        return sum(1 for line in log.read_text().splitlines() if '"GET /v3/auth/tokens' in line)

    def images(_):
        r = requests.get(f"{cloud['endpoint']}/v2/images", headers={"X-Auth-Token": token},
                         timeout=30)
        return r.status_code

    def token_cache(kind):
        text = requests.get(f"{cloud['endpoint']}/metrics", timeout=30).text
        line = f'glance_api_token_cache_total{{kind="{kind}"}} '
        return next((int(l[len(line):]) for l in text.splitlines() if l.startswith(line)), 0)

    before = validations()
    hits, misses = token_cache("hit"), token_cache("miss")
    # A boot storm: 50 requests with one new token, 25 at a time.
    with ThreadPoolExecutor(max_workers=25) as pool:
        assert set(pool.map(images, range(50))) == {200}
    time.sleep(0.5)
    assert validations() - before == 1, "each request asked Keystone again"
    # glance-api's metrics say the same: one miss, the rest from the cache.
    assert token_cache("miss") - misses == 1
    assert token_cache("hit") - hits == 49

"""The whole image lifecycle against the quickstart, driven with curl as a
user would: create, upload 32 MiB, show (hashes checked), download through
the 307 (whole and a range), pagination, PATCH, tags, deactivation, delete."""

import hashlib
import json
import subprocess

from conftest import image_bytes


def curl(*args):
    """Runs curl; returns (status code, body bytes)."""
    done = subprocess.run(["curl", "-sS", "--max-time", "60", "-w", "\n%{http_code}", *args],
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    body, _, status = done.stdout.rpartition(b"\n")
    return int(status), body


def api(qs, token, method, path, body=None, ctype="application/json"):
    # Errors come as JSON when asked for, else as Glance's HTML page.
    args = ["-X", method, "-H", f"X-Auth-Token: {token}", "-H", "Accept: application/json",
            qs["endpoint"] + path]
    if body is not None:
        args += ["-H", f"Content-Type: {ctype}", "--data-binary", body]
    status, raw = curl(*args)
    return status, (json.loads(raw) if raw.strip() else None)


def test_image_lifecycle_through_the_redirect(quickstart, tmp_path):
    admin, member = quickstart["admin"], quickstart["member"]
    status, versions = api(quickstart, admin, "GET", "/versions")
    assert status == 200
    assert [v for v in versions["versions"] if v["status"] == "CURRENT"]

    status, img = api(quickstart, admin, "POST", "/v2/images", json.dumps(
        {"name": "e2e", "disk_format": "raw", "container_format": "bare", "visibility": "public"}))
    assert status == 201, img
    image_id = img["id"]
    data = image_bytes(32 * 1024 * 1024, "e2e")
    src = tmp_path / "disk.img"
    src.write_bytes(data)
    file_url = f"{quickstart['endpoint']}/v2/images/{image_id}/file"
    status, body = curl("-X", "PUT", "-H", f"X-Auth-Token: {admin}",
                        "-H", "Content-Type: application/octet-stream", "-T", str(src), file_url)
    assert status == 204, body
    status, shown = api(quickstart, admin, "GET", f"/v2/images/{image_id}")
    assert shown["status"] == "active"
    assert shown["size"] == len(data)
    assert shown["checksum"] == hashlib.md5(data).hexdigest()
    assert shown["os_hash_algo"] == "sha512"
    assert shown["os_hash_value"] == hashlib.sha512(data).hexdigest()

    for token in (admin, member):
        status, got = curl("-L", "-H", f"X-Auth-Token: {token}", file_url)
        assert status == 200
        assert hashlib.sha512(got).digest() == hashlib.sha512(data).digest()
        status, part = curl("-L", "-r", "1000-1999", "-H", f"X-Auth-Token: {token}", file_url)
        assert status == 206
        assert part == data[1000:2000]
    status, _ = curl("-H", f"X-Auth-Token: {admin}", file_url)
    assert status == 307

    for i in range(5):
        assert api(quickstart, admin, "POST", "/v2/images", json.dumps({"name": f"page-{i}"}))[0] == 201
    path, seen, pages = "/v2/images?limit=2&sort_key=name&sort_dir=asc", [], 0
    while path:
        status, page = api(quickstart, admin, "GET", path)
        assert status == 200
        pages += 1
        seen += [i["name"] for i in page["images"]]
        path = page.get("next")
    assert pages >= 3
    assert [n for n in seen if n.startswith("page-")] == [f"page-{i}" for i in range(5)]
    assert len(seen) == len(set(seen))

    patch = json.dumps([{"op": "add", "path": "/os_distro", "value": "cirros"},
                        {"op": "replace", "path": "/name", "value": "e2e-2"}])
    status, patched = api(quickstart, admin, "PATCH", f"/v2/images/{image_id}", patch,
                          "application/openstack-images-v2.1-json-patch")
    assert status == 200
    assert (patched["name"], patched["os_distro"]) == ("e2e-2", "cirros")
    status, _ = api(quickstart, admin, "PATCH", f"/v2/images/{image_id}", "[]", "application/json")
    assert status == 415
    assert api(quickstart, admin, "PUT", f"/v2/images/{image_id}/tags/fast")[0] == 204
    assert api(quickstart, admin, "GET", f"/v2/images/{image_id}")[1]["tags"] == ["fast"]

    assert api(quickstart, admin, "POST", f"/v2/images/{image_id}/actions/deactivate")[0] == 204
    assert curl("-L", "-H", f"X-Auth-Token: {member}", file_url)[0] == 403
    assert curl("-H", f"X-Auth-Token: {admin}", file_url)[0] == 307
    assert api(quickstart, admin, "POST", f"/v2/images/{image_id}/actions/reactivate")[0] == 204

    assert api(quickstart, admin, "DELETE", f"/v2/images/{image_id}")[0] == 204
    assert api(quickstart, admin, "GET", f"/v2/images/{image_id}")[0] == 404
    assert not (quickstart["work"] / "var" / "images" / image_id).exists()


def test_the_quickstart_fleet_spreads_images_and_drains(quickstart):
    """`--stream-nodes 3`: three glance-stream processes registered as the
    fleet, healthy, each given the keyring; images spread over them and a
    drained node gets no new downloads."""
    import time

    admin = quickstart["admin"]
    deadline = time.time() + 30
    while True:
        status, nodes = api(quickstart, admin, "GET", "/admin/nodes")
        assert status == 200, nodes
        if all(n["health"] == "up" and n["keyring"] == "current" for n in nodes["nodes"]):
            break
        assert time.time() < deadline, nodes
        time.sleep(0.2)
    assert [n["name"] for n in nodes["nodes"]] == ["stream-1", "stream-2", "stream-3"]
    ports = {f"http://127.0.0.1:{p}" for p in quickstart["stream_ports"]}
    assert {n["public_url"] for n in nodes["nodes"]} == ports
    assert api(quickstart, quickstart["member"], "GET", "/admin/nodes")[0] == 403

    placed = {}
    for i in range(12):
        status, img = api(quickstart, admin, "POST", "/v2/images", json.dumps(
            {"name": f"fleet-{i}", "disk_format": "raw", "container_format": "bare"}))
        url = f"{quickstart['endpoint']}/v2/images/{img['id']}/file"
        assert curl("-X", "PUT", "-H", f"X-Auth-Token: {admin}", "-H",
                    "Content-Type: application/octet-stream", "--data-binary",
                    f"image {i}", url)[0] == 204
        out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{redirect_url}",
                              "-H", f"X-Auth-Token: {admin}", url],
                             capture_output=True, text=True, timeout=60)
        placed[img["id"]] = out.stdout.split("/v1/")[0]
    assert len(set(placed.values())) >= 2, placed
    busiest = max(set(placed.values()), key=list(placed.values()).count)
    name = next(n["name"] for n in nodes["nodes"] if n["public_url"] == busiest)
    assert api(quickstart, admin, "POST", f"/admin/nodes/{name}/drain")[0] == 200
    for image_id, was in placed.items():
        url = f"{quickstart['endpoint']}/v2/images/{image_id}/file"
        out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{redirect_url}",
                              "-H", f"X-Auth-Token: {admin}", url],
                             capture_output=True, text=True, timeout=60)
        now = out.stdout.split("/v1/")[0]
        assert now != busiest
        if was != busiest:
            assert now == was
    assert api(quickstart, admin, "POST", f"/admin/nodes/{name}/undrain")[0] == 200

"""Several stores on the quickstart (`--extra-file-store archive`), driven
with curl: an upload to the store `X-Image-Meta-Store` names, served by
glance-stream from that store; copy-image into the default store; the data
removed from one store and then served from the other; bytes compared by
sha512 at every step."""

import hashlib
import json
import time

from conftest import image_bytes, quickstart_running
from test_quickstart import api, curl


def download(qs, token, image_id, tmp_path, query=""):
    out = tmp_path / "download"
    status, _ = curl("-L", "-o", str(out), "-H", f"X-Auth-Token: {token}",
                     f"{qs['endpoint']}/v2/images/{image_id}/file{query}")
    assert status == 200
    return hashlib.sha512(out.read_bytes()).hexdigest()


def test_an_image_moves_between_stores_and_stays_served(tmp_path):
    with quickstart_running(tmp_path, 1, "--extra-file-store", "archive") as qs:
        admin = qs["admin"]
        status, stores = api(qs, admin, "GET", "/v2/info/stores")
        assert status == 200
        assert [s["id"] for s in stores["stores"]] == ["local", "archive"]
        data = image_bytes(6 << 20, "stores")
        digest = hashlib.sha512(data).hexdigest()
        status, img = api(qs, admin, "POST", "/v2/images", json.dumps(
            {"name": "stores", "disk_format": "raw", "container_format": "bare"}))
        assert status == 201
        image_id = img["id"]
        src = tmp_path / "image.raw"
        src.write_bytes(data)
        status, _ = curl("-X", "PUT", "-H", f"X-Auth-Token: {admin}",
                         "-H", "Content-Type: application/octet-stream",
                         "-H", "X-Image-Meta-Store: archive", "--data-binary", f"@{src}",
                         f"{qs['endpoint']}/v2/images/{image_id}/file")
        assert status == 204
        assert (tmp_path / "var" / "images-archive" / image_id).read_bytes() == data
        assert download(qs, admin, image_id, tmp_path) == digest

        status, _ = api(qs, admin, "POST", f"/v2/images/{image_id}/import", json.dumps(
            {"method": {"name": "copy-image"}, "stores": ["local"]}))
        assert status == 202
        deadline = time.time() + 30
        while api(qs, admin, "GET", f"/v2/images/{image_id}")[1]["stores"] != "archive,local":
            assert time.time() < deadline, "copy-image did not finish"
            time.sleep(0.2)
        assert (tmp_path / "var" / "images" / image_id).read_bytes() == data
        assert download(qs, admin, image_id, tmp_path, "?prefer=local") == digest

        status, _ = api(qs, admin, "DELETE", f"/v2/stores/archive/{image_id}")
        assert status == 204
        assert not (tmp_path / "var" / "images-archive" / image_id).exists()
        assert download(qs, admin, image_id, tmp_path) == digest
        status, _ = api(qs, admin, "DELETE", f"/v2/stores/local/{image_id}")
        assert status == 403

"""OpenStack's own API tests of the Image service: tempest's
`tempest.api.image.v2`, run by tests/tempest/tempest.sh against glance-api in
keystone mode (a real Keystone, one file store, one stream node). Every test
tempest runs must pass, at least 70 of them, and each one listed in
expected-passes.txt among them (a test that starts skipping is a
regression too)."""

import pathlib
import subprocess
import sys

from conftest import BIN_DIR

HERE = pathlib.Path(__file__).resolve().parent


def test_tempest_image_v2_api_passes(tmp_path):
    run = subprocess.run(
        ["bash", str(HERE / "tempest.sh"), "run", sys.prefix, str(BIN_DIR), str(tmp_path)],
        capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout + run.stderr
    results = {}
    for line in (tmp_path / "results").read_text().splitlines():
        status, test = line.split(" ", 1)
        results[test] = status
    failed = sorted(t for t, s in results.items() if s not in ("ok", "skip"))
    passed = {t for t, s in results.items() if s == "ok"}
    tail = (tmp_path / "tempest.out").read_text()[-20000:]
    assert not failed, f"{failed}\n{tail}"
    expected = set((HERE / "expected-passes.txt").read_text().split())
    assert not expected - passed, f"no longer passing: {sorted(expected - passed)}\n{tail}"
    assert len(passed) >= 70, f"only {len(passed)} passed\n{tail}"

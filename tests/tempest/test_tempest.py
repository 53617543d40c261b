"""OpenStack's own API tests of the Image service: tempest's
`tempest.api.image.v2`, run by tests/tempest/tempest.sh against glance-api in
keystone mode (a real Keystone, file stores, one stream node).

With one store every test tempest runs must pass, at least 70 of them, and
each one listed in expected-passes.txt among them (a test that starts
skipping is a regression too). With a second store, the tests that need
several (imports to all or chosen stores, copy-image, deleting from one
store) must pass too."""

import os
import pathlib
import subprocess
import sys

from conftest import BIN_DIR

HERE = pathlib.Path(__file__).resolve().parent

# The classes that need more than one store, and the import tests whose
# waits read the stores.
MULTI_STORE = r"^tempest\.api\.image\.v2\..*(MultiStores|ImportCopy|ImportImagesTest)"


def run_tempest(work, regex=None, extra_stores=""):
    """Runs tempest.sh; returns {test id: ok|skip|fail} and tempest's output's tail."""
    env = dict(os.environ, EXTRA_STORES=extra_stores)
    args = ["bash", str(HERE / "tempest.sh"), "run", sys.prefix, str(BIN_DIR), str(work)]
    run = subprocess.run(args + ([regex] if regex else []), env=env,
                         capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout + run.stderr
    results = {}
    for line in (work / "results").read_text().splitlines():
        status, test = line.split(" ", 1)
        results[test] = status
    return results, (work / "tempest.out").read_text()[-20000:]


def check(results, tail, expected_file):
    failed = sorted(t for t, s in results.items() if s not in ("ok", "skip"))
    passed = {t for t, s in results.items() if s == "ok"}
    assert not failed, f"{failed}\n{tail}"
    expected = set((HERE / expected_file).read_text().split())
    assert not expected - passed, f"no longer passing: {sorted(expected - passed)}\n{tail}"
    return passed


def test_tempest_image_v2_api_passes_with_one_store(tmp_path):
    results, tail = run_tempest(tmp_path)
    passed = check(results, tail, "expected-passes.txt")
    assert len(passed) >= 70, f"only {len(passed)} passed\n{tail}"


def test_tempest_multi_store_tests_pass_with_two_stores(tmp_path):
    results, tail = run_tempest(tmp_path, MULTI_STORE, extra_stores="archive")
    check(results, tail, "expected-passes-multistore.txt")

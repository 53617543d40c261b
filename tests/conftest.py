"""Shared fixtures: the quickstart, started from the built binaries on free
ports in a temporary directory, and the credentials its openrc files export."""

import contextlib
import hashlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIN_DIR = pathlib.Path(os.environ.get("GLANCE_BIN_DIR", ROOT / "target" / "ci"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(count):
    """A first port with the `count - 1` ports after it free too."""
    for _ in range(50):
        first = free_port()
        if first + count > 65535:
            continue
        try:
            for p in range(first, first + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return first
        except OSError:
            continue
    raise AssertionError(f"no {count} consecutive free ports")


STREAM_NODES = 3


def read_openrc(path):
    """The variables an openrc file exports."""
    assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, value = line[len("export "):].split("=", 1)
            env[key] = value
    assert {"OS_AUTH_TYPE", "OS_TOKEN", "OS_ENDPOINT", "OS_IMAGE_URL"} <= env.keys(), env
    return env


def run_quickstart(work, stream_nodes, *extra):
    """Starts `glance-api quickstart` in `work/var`; yields what tests need
    (endpoint, tokens, the openrc variables by token), then stops it with
    Ctrl-C and checks every process went away. Stopped also when the
    generator is closed or an error is thrown into it (see `quickstart_running`)."""
    port, stream_port = free_port(), free_ports(stream_nodes)
    proc = subprocess.Popen(
        [str(BIN_DIR / "glance-api"), "quickstart", "--dir", str(work / "var"),
         "--port", str(port), "--stream-port", str(stream_port),
         "--stream-nodes", str(stream_nodes), *extra],
        stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        banner = ""
        for line in proc.stdout:
            banner += line
            if line.startswith("Press Ctrl-C"):
                break
            assert time.time() < deadline, "quickstart did not start"
        else:
            raise AssertionError("quickstart exited early")
        assert "openstack image create" in banner and "curl" in banner, banner
        admin = read_openrc(work / "var" / "openrc")
        member = read_openrc(work / "var" / "openrc-member")
        scheme = "https" if "--tls" in extra else "http"
        info = {
            "endpoint": f"{scheme}://127.0.0.1:{port}",
            "admin": admin["OS_TOKEN"],
            "member": member["OS_TOKEN"],
            "env": {admin["OS_TOKEN"]: admin, member["OS_TOKEN"]: member},
            "work": work,
            "banner": banner,
            "stream_ports": list(range(stream_port, stream_port + stream_nodes)),
        }
        yield info
    finally:
        # Ctrl-C stops every process, whatever the test did.
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0
    for p in info["stream_ports"]:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", p), timeout=2).close()


def quickstart_running(work, stream_nodes, *extra):
    """`run_quickstart` as a context manager: a failing test still stops it."""
    return contextlib.contextmanager(run_quickstart)(work, stream_nodes, *extra)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    yield from run_quickstart(tmp_path_factory.mktemp("qs"), STREAM_NODES)


@pytest.fixture(scope="module")
def quickstart_tls(tmp_path_factory):
    """The quickstart on HTTPS (`--tls`), one stream node."""
    yield from run_quickstart(tmp_path_factory.mktemp("qs-tls"), 1, "--tls")


def check_temp_url(url, sha512_hex):
    """A Swift TempURL opens the object (its sha512 checked) with no token,
    and with one hex digit of its signature changed, Swift refuses it (401)."""
    import requests
    opened = requests.get(url, timeout=300)
    assert opened.status_code == 200, opened.text[:200]
    assert hashlib.sha512(opened.content).hexdigest() == sha512_hex
    at = url.index("temp_url_sig=") + len("temp_url_sig=")
    tampered = url[:at] + ("1" if url[at] == "0" else "0") + url[at + 1:]
    assert requests.get(tampered, timeout=30).status_code == 401


def image_bytes(size, seed):
    out = bytearray()
    block = hashlib.sha512(seed.encode()).digest()
    while len(out) < size:
        block = hashlib.sha512(block).digest()
        out += block
    return bytes(out[:size])



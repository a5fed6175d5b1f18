"""Nothing hangs: idle and stalled connections are closed, they never starve the health probe, SIGTERM always ends
the process (in-flight requests get 503 after --shutdown-timeout), WebSocket upgrades get a 4xx, and tokens from the
environment or a file work despite surrounding whitespace."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import numpy as np
import pytest

from ..serve.conftest import infer_body, write_bundle  # noqa: TID252

X = np.zeros((1, 10), np.int64)


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits") / "releases"
    write_bundle(root, 0, 1, latest=True)
    return root


@pytest.fixture(scope="module")
def tight(releases, start_server):
    """Short head/body timeouts, few connections and one request in flight at a time."""
    return start_server(
        [
            "--releases",
            str(releases),
            "--header-timeout",
            "1",
            "--body-timeout",
            "1.5",
            "--max-connections",
            "40",
            "--max-inflight",
            "2",
        ]
    )


def _connect(server, timeout: float = 10.0) -> socket.socket:
    host, port = server.hostport.split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _probe(server) -> float:
    start = time.monotonic()
    status, _, _ = server.request("GET", "/v2/health/ready")
    assert status == 200
    return time.monotonic() - start


def test_stalled_request_head_gets_408_and_is_closed(tight):
    sock = _connect(tight)
    sock.sendall(b"POST /v2/models/deeplog/infer HTTP/1.1\r\nHost: x\r\nContent-")  # then nothing
    start = time.monotonic()
    raw = _read_all(sock)
    assert raw.startswith(b"HTTP/1.1 408"), raw[:200]
    assert time.monotonic() - start < 8
    sock.close()


def test_connection_that_never_sends_is_closed(tight):
    sock = _connect(tight)
    start = time.monotonic()
    assert _read_all(sock) == b""  # closed by the server, not by our timeout
    assert time.monotonic() - start < 8
    sock.close()


def test_stalled_body_gets_408(tight):
    sock = _connect(tight)
    sock.sendall(
        b"POST /v2/models/deeplog/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"inputs": ['
    )
    start = time.monotonic()
    raw = _read_all(sock)
    assert raw.startswith(b"HTTP/1.1 408") and b"did not arrive" in raw, raw[:300]
    assert time.monotonic() - start < 8
    sock.close()
    _probe(tight)


def test_idle_connections_never_starve_the_probe(tight):
    """300 idle connections against a server that holds at most 40: the probe is answered at once."""
    socks = []
    try:
        for _ in range(300):
            socks.append(_connect(tight))
        for _ in range(3):
            assert _probe(tight) < 2.0
        status, doc = tight.json("POST", "/v2/models/deeplog/infer", infer_body(X))
        assert status == 200, doc
    finally:
        for s in socks:
            s.close()


def test_inflight_cap_spares_the_probe(tight):
    """Two stalled uploads fill --max-inflight 2: a third request gets 503, the probe still 200."""
    socks = []
    try:
        for _ in range(2):
            s = _connect(tight)
            s.sendall(b"POST /v2/models/deeplog/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{")
            socks.append(s)
        time.sleep(0.3)
        status, doc = tight.json("POST", "/v2/models/deeplog/infer", infer_body(X))
        assert status == 503 and "--max-inflight" in doc["error"], doc
        _probe(tight)
    finally:
        for s in socks:
            s.close()
    time.sleep(0.3)
    assert tight.json("POST", "/v2/models/deeplog/infer", infer_body(X))[0] == 200


@pytest.mark.parametrize(
    "headers",
    [
        {
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
        {
            "Connection": "Upgrade, HTTP2-Settings",
            "Upgrade": "h2c",
            "HTTP2-Settings": "AAMAAABkAAQCAAAAAAIAAAAA",
        },
    ],
)
def test_protocol_upgrade_gets_4xx(tight, headers):
    sock = _connect(tight)
    head = "GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()
    )
    sock.sendall(head.encode() + b"\r\n")
    sock.settimeout(5)
    raw = sock.recv(65536)
    sock.close()
    status = int(raw.split(b" ", 2)[1])
    assert 400 <= status < 500, raw[:300]
    _probe(tight)


def _stalled_upload(server) -> socket.socket:
    sock = _connect(server, timeout=20)
    sock.sendall(b"POST /v2/models/deeplog/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{")
    return sock


def test_sigterm_with_a_stalled_upload_answers_503_and_exits(releases, start_server):
    """Default flags: the stalled upload (body timeout 60 s) is answered 503 after the 5 s shutdown timeout."""
    server = start_server(["--releases", str(releases)])
    upload = _stalled_upload(server)
    idle = _connect(server)
    time.sleep(0.3)
    start = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    raw = _read_all(upload)
    server.proc.wait(timeout=15)
    assert time.monotonic() - start < 9
    assert raw.startswith(b"HTTP/1.1 503") and b"shutting down" in raw, raw[:300]
    assert server.proc.returncode == 0, server.output()
    upload.close()
    idle.close()


def test_second_sigterm_exits_at_once(releases, start_server):
    server = start_server(["--releases", str(releases), "--shutdown-timeout", "300", "--body-timeout", "300"])
    upload = _stalled_upload(server)
    time.sleep(0.3)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert server.proc.poll() is None  # still draining the upload
    start = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(timeout=15)
    assert time.monotonic() - start < 10
    upload.close()


@pytest.mark.parametrize("where", ["env", "dotenv", "file"])
def test_token_whitespace_is_stripped_and_auth_is_announced(releases, start_server, tmp_path, where):
    token = "tok-limits-0123"
    env, args = {}, ["--releases", str(releases)]
    if where == "env":
        env["ONNXSHIP_TOKEN"] = f"  {token}\n"
    elif where == "dotenv":
        (tmp_path / ".env").write_text(f'ONNXSHIP_TOKEN="{token}\\n"\n')
    else:
        (tmp_path / "token").write_text(token + "\r\n")
        args += ["--token-file", str(tmp_path / "token")]
    server = start_server(args, env=env, cwd=tmp_path)
    ok = {"Authorization": f"Bearer {token}"}
    status, doc = server.json("POST", "/v2/models/deeplog/infer", infer_body(X), ok)
    assert status == 200, doc
    assert server.request("POST", "/v2/models/deeplog/infer", json.dumps(infer_body(X)).encode())[0] == 401
    out = server.output()
    assert "auth is on" in out and "auth=bearer" in out
    assert token not in out


def test_limit_flags_are_validated(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from onnxship.cli import app

    monkeypatch.chdir(tmp_path)
    for args, needle in (
        (["--header-timeout", "0"], "header_timeout_s"),
        (["--max-inflight", "0"], "max_inflight"),
        (["--token", "two words"], "token"),
    ):
        result = CliRunner().invoke(app, ["serve", *args])
        assert result.exit_code == 2 and needle in result.output, result.output


def test_health_probe_under_stalled_threads(tight):
    """Ten stalled uploads on threads while the probe runs: it keeps answering."""
    stop = threading.Event()
    errors: list[str] = []

    def stall() -> None:
        try:
            s = _stalled_upload(tight)
            stop.wait(3)
            s.close()
        except OSError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=stall) for _ in range(10)]
    for t in threads:
        t.start()
    try:
        for _ in range(5):
            assert _probe(tight) < 2.0
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors


def test_idle_connections_past_the_open_file_limit_never_starve_the_probe(releases, tmp_path):
    """Under a low open-file limit (200), 300 idle connections would exhaust the descriptors and accept() would
    refuse the probe: the server keeps its connection count below the limit by closing the oldest idle ones."""
    import os
    import re
    import resource
    import subprocess
    import urllib.request

    from ..serve.conftest import ONNXSHIP  # noqa: TID252

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))

    out = tmp_path / "out.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_PATH", "ONNXSHIP_TOKEN")}
    with open(out, "wb") as fh:
        proc = subprocess.Popen(
            [ONNXSHIP, "serve", "--port", "0", "--releases", str(releases)],
            cwd=tmp_path,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            preexec_fn=low_limit,  # noqa: PLW1509  (only sets a resource limit in the child)
        )
    socks = []
    try:
        deadline = time.monotonic() + 60
        while not (m := re.search(r"http://127\.0\.0\.1:(\d+)", out.read_text(errors="replace"))):
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.05)
        port = int(m.group(1))
        for _ in range(300):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        for _ in range(3):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5) as r:
                assert r.status == 200
    finally:
        for s in socks:
            s.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def test_env_file_is_read_through_the_gate(tmp_path):
    """A .env symlink leading out of its folder is refused (exit 2); a `.env/` folder (a virtualenv) is ignored."""
    from typer.testing import CliRunner

    from onnxship.cli import app
    from onnxship.serve._config import read_env_file

    (tmp_path / "venv-like").mkdir()
    (tmp_path / "venv-like" / ".env").mkdir()
    assert read_env_file(tmp_path / "venv-like" / ".env") == {}
    secret = tmp_path / "secret.txt"
    secret.write_text("MODEL_PATH=/somewhere\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / ".env").symlink_to(secret)
    result = CliRunner().invoke(app, ["serve", "--env-file", str(work / ".env")])
    assert result.exit_code == 2 and "outside its folder" in result.output, result.output

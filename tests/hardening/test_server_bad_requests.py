"""Bad requests against a real `onnxship serve`: each gets a 4xx with a JSON error, and the server stays ready.

One table of malformed infer requests (names, dtypes, ranks, shapes outside the verified range or too large to
allocate, ids outside the verified range, non-JSON, huge bodies, broken binary framing), one of malformed HTTP, and
one of `/reload` paths outside the model root (`..`, absolute paths, symlinks that leave the root). No response is
a 5xx or shows an absolute filesystem path; after every case /v2/health/ready is 200 and a good request still
answers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from ..serve.conftest import infer_body, write_bundle  # noqa: TID252  (the serve tests own these helpers)

X = np.random.default_rng(0).integers(0, 30, size=(2, 12)).astype(np.int64)
INFER = "/v2/models/deeplog/infer"
LIMIT = 32768


@pytest.fixture(scope="module")
def served(tmp_path_factory, start_server):
    """One server on a release (batch 1..64, seq 10..32); a valid bundle also lies OUTSIDE its model root."""
    base = tmp_path_factory.mktemp("hard-serve")
    root = base / "releases"
    bundle = write_bundle(root, 0, 1, latest=True)
    outside = base / "outside"
    shutil.copytree(bundle, outside / bundle.name, symlinks=True)
    (root / "deeplog" / "leave").symlink_to(outside / bundle.name)  # a symlink in the root that leaves it
    (root / "deeplog" / "up").symlink_to(base)
    server = start_server(
        ["--releases", str(root), "--model-root", str(root), "--max-body-bytes", str(LIMIT)]
    )
    return server, root, outside / bundle.name


BIG = 9223372036854775807  # int64 max


def _no_leak(raw: bytes, *roots: Path) -> None:
    """No absolute filesystem path of this machine in a response body."""
    text = raw.decode("utf-8", "replace")
    for secret in (*(str(r) for r in roots), str(Path.home()), sys.prefix, os.getcwd(), "/tmp/", "/etc/"):
        assert secret not in text, text[:500]
    assert not re.search(r"(?<![\w.:/])/(?:tmp|home|root|etc|usr|var|work|proc)/", text), text[:500]


def _binary(shape: list[int], payload: bytes, datatype: str = "INT64") -> tuple[bytes, dict[str, str]]:
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "input_sequence",
                    "shape": shape,
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(payload)},
                }
            ]
        }
    ).encode()
    return head + payload, {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
    }


def _tensor(**changes):
    t = infer_body(X)["inputs"][0]
    t.update(changes)
    return {"inputs": [t]}


def _raw(obj) -> bytes:
    return json.dumps(obj).encode()


BAD_INFER = {
    "unknown-input-name": (_tensor(name="tokens"), 400, "unknown input"),
    "missing-input": (
        {"inputs": [{"name": "other", "shape": [1], "datatype": "INT64", "data": [1]}]},
        400,
        "input",
    ),
    "input-twice": ({"inputs": [infer_body(X)["inputs"][0]] * 2}, 400, "given twice"),
    "wrong-datatype": (_tensor(datatype="FP32", data=X.astype(float).reshape(-1).tolist()), 400, "FP32"),
    "unknown-datatype": (_tensor(datatype="COMPLEX64"), 400, "COMPLEX64"),
    "bytes-datatype": (_tensor(datatype="BYTES"), 400, "BYTES is not supported"),
    "rank-1": (_tensor(shape=[24]), 400, "rank"),
    "rank-3": (_tensor(shape=[2, 12, 1]), 400, "rank"),
    "seq-above-range": (infer_body(np.zeros((1, 33), np.int64)), 400, "outside the verified range"),
    "zero-seq": (infer_body(np.zeros((1, 0), np.int64)), 400, "outside the verified range"),
    "batch-above-range": (infer_body(np.zeros((65, 10), np.int64)), 400, "outside the verified range"),
    "zero-batch": (infer_body(np.zeros((0, 10), np.int64)), 400, "outside the verified range"),
    "negative-dim": (_tensor(shape=[-2, 12]), 400, "shape"),
    "shape-data-mismatch": (_tensor(shape=[3, 12]), 400, "needs 36"),
    "float-data-for-int": (_tensor(data=[0.5] * 24), 400, "floating-point"),
    "string-data": (_tensor(data=["a"] * 24), 400, "string"),
    "int64-overflow": (_tensor(data=[2**70] * 24), 400, "data"),
    "ragged-data": (_tensor(data=[[1, 2], [3]]), 400, "ragged"),
    "no-data": (
        {"inputs": [{"name": "input_sequence", "shape": [2, 12], "datatype": "INT64"}]},
        400,
        "neither 'data'",
    ),
    "empty-inputs": ({"inputs": []}, 400, "non-empty 'inputs'"),
    "inputs-not-list": ({"inputs": {"input_sequence": [1]}}, 400, "non-empty 'inputs'"),
    "body-a-list": ([1, 2, 3], 400, "JSON object"),
    "unknown-output": ({**infer_body(X), "outputs": [{"name": "logits"}]}, 400, "do not exist"),
    "not-json": (b"{not json", 400, "not valid JSON"),
    "empty-body": (b"", 400, "JSON"),
    "binary-garbage": (bytes(range(256)), 400, "JSON"),
    "huge-body": (b"[" + b"1," * LIMIT + b"1]", 413, "exceeds the limit"),
    "huge-declared-shape": (_tensor(shape=[10**12, 10**12]), 400, "input"),
    "zero-times-int64-max": (_tensor(shape=[0, BIG], data=[]), 400, "input 'input_sequence'"),
    "int64-max-times-zero": (_tensor(shape=[BIG, 0], data=[]), 400, "input 'input_sequence'"),
    "int64-max-dims": (_tensor(shape=[BIG, BIG], data=[]), 400, "input 'input_sequence'"),
    "dim-above-int64": (_tensor(shape=[2**64, 1], data=[]), 400, "input 'input_sequence'"),
    "negative-id": (
        infer_body(np.array([[-1] + [0] * 11], np.int64)),
        400,
        "input 'input_sequence' holds ids from -1 to 0, outside the verified id range 0..29",
    ),
    "id-equal-to-vocab": (
        infer_body(np.full((1, 12), 30, np.int64)),
        400,
        "outside the verified id range 0..29",
    ),
    "id-far-above-vocab": (
        infer_body(np.full((1, 12), 2**62, np.int64)),
        400,
        "outside the verified id range 0..29",
    ),
}


def _still_healthy(server):
    assert server.request("GET", "/v2/health/ready")[0] == 200
    status, doc = server.json("POST", INFER, infer_body(X))
    assert status == 200 and doc["outputs"][0]["shape"] == [2, 30], doc


@pytest.mark.parametrize("case", list(BAD_INFER))
def test_bad_infer_request(served, case):
    server, _, _ = served
    body, status, needle = BAD_INFER[case]
    got, headers, raw = server.request(
        "POST", INFER, body if isinstance(body, bytes) else _raw(body), {"Content-Type": "application/json"}
    )
    assert got == status, raw[:300]
    assert headers.get("content-type", headers.get("Content-Type", "")).startswith("application/json")
    doc = json.loads(raw)
    assert needle in doc["error"], doc
    _no_leak(raw, served[1])
    _still_healthy(server)


@pytest.mark.parametrize(
    ("shape", "payload"),
    [
        ([0, BIG], b""),
        ([BIG, 0], b""),
        ([BIG, BIG], b""),
        ([1, 10], b"\x00" * 80 + b"\xff" * 8),  # binary_data_size does not match the shape
        ([2**40, 2**40], b"\x00" * 16),
    ],
)
def test_binary_shapes_that_cannot_be_allocated(served, shape, payload):
    server, root, _ = served
    body, headers = _binary(shape, payload)
    got, _, raw = server.request("POST", INFER, body, headers)
    assert got == 400 and "input 'input_sequence'" in json.loads(raw)["error"], raw[:300]
    _no_leak(raw, root)
    _still_healthy(server)


def test_binary_negative_ids(served):
    server, root, _ = served
    x = np.zeros((1, 12), np.int64)
    x[0, 3] = -5
    body, headers = _binary([1, 12], x.astype("<i8").tobytes())
    got, _, raw = server.request("POST", INFER, body, headers)
    assert got == 400 and "outside the verified id range 0..29" in json.loads(raw)["error"], raw[:300]
    _still_healthy(server)


def _raw_http(server, request: bytes) -> bytes:
    host, port = server.hostport.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
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


RAW_HTTP = {
    "negative-content-length": b"POST /v2/models/deeplog/infer HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "two-content-lengths": (
        b"POST /v2/models/deeplog/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 9\r\n\r\n{}"
    ),
    "bad-chunk-size": (
        b"POST /v2/models/deeplog/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    ),
    "huge-content-length": (
        b"POST /v2/models/deeplog/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n"
    ),
    "gzip-body": (
        b"POST /v2/models/deeplog/infer HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    ),
    "nul-in-path": b"GET /v2/models/deep%00log HTTP/1.1\r\nHost: x\r\n\r\n",
    "dotdot-path": b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    "long-url": b"GET /" + b"a" * 60000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "many-headers": b"GET /v2 HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n",
    "odd-method": b"BREW /v2/models/deeplog/infer HTTP/1.1\r\nHost: x\r\n\r\n",
    "http-0.9": b"GET /v2\r\n\r\n",
    "not-http": bytes(range(256)) * 4,
    "websocket": (
        b"GET /v2/models/deeplog/infer HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    ),
}


@pytest.mark.parametrize("case", list(RAW_HTTP))
def test_malformed_http_never_gets_5xx(served, case):
    server, root, _ = served
    raw = _raw_http(server, RAW_HTTP[case])
    if raw:  # a refusal to parse may just close the connection
        status = int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.") else 400
        assert status < 500, raw[:300]
        assert status >= 400 or case in ("many-headers", "http-0.9"), raw[:300]
        _no_leak(raw, root)
    _still_healthy(server)


@pytest.mark.parametrize(
    ("header", "tail", "needle"),
    [
        ("999999", b"", "Inference-Header-Content-Length is 999999"),
        ("abc", b"", "is not a number"),
        (None, b"\x01" * 7, "binary"),  # binary_data_size says 8 bytes per element x 24, the body holds 7
    ],
)
def test_bad_binary_framing(served, header, tail, needle):
    server, _, _ = served
    head = _raw(
        {
            "inputs": [
                {
                    "name": "input_sequence",
                    "shape": [2, 12],
                    "datatype": "INT64",
                    "parameters": {"binary_data_size": 192},
                }
            ]
        }
    )
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": header if header is not None else str(len(head)),
    }
    got, _, raw = server.request("POST", INFER, head + tail, headers)
    assert got == 400 and needle in json.loads(raw)["error"], raw[:300]
    _no_leak(raw, served[1])
    _still_healthy(server)


@pytest.mark.parametrize(
    ("path", "status", "needle"),
    [
        ("../", 403, "outside the model root"),
        ("deeplog/../../outside", 403, "outside the model root"),
        ("OUTSIDE", 403, "outside the model root"),  # an absolute path to a valid bundle outside the root
        ("/etc/passwd", 403, "outside the model root"),
        ("/", 403, "outside the model root"),
        ("deeplog/leave", 403, "outside the model root"),  # a symlink to a valid bundle outside the root
        ("deeplog/up/outside", 403, "outside the model root"),  # through a symlinked parent folder
        ("deeplog/nothing-here", 404, "does not exist"),
        ("deeplog/\x00", 400, "NUL byte"),
        ("a" * 5000, 400, "too long"),
        ("a/" * 3000, 400, "too long"),
        ("deeplog/" + "b" * 300, 400, "too long"),
        ("deeplog/latest/release.json", 422, "neither a release folder nor an .onnx file"),
        ("💥", 404, "does not exist"),
    ],
)
def test_reload_outside_root_is_refused(served, path, status, needle):
    server, _, outside = served
    path = str(outside) if path == "OUTSIDE" else path
    _, before = server.json("GET", "/version")
    got, _, raw = server.request("POST", "/reload", json.dumps({"model_path": path}).encode())
    doc = json.loads(raw)
    assert got == status and needle in doc["error"], doc
    _no_leak(raw, served[1], outside)
    _, after = server.json("GET", "/version")
    _no_leak(server.request("GET", "/version")[2], served[1], outside)
    assert after["release"] == before["release"] and after["model_version"] == before["model_version"]
    _still_healthy(server)

"""Bad requests against a real `onnxship serve`: each gets a 4xx with a JSON error, and the server stays ready.

One table of malformed infer requests (names, dtypes, ranks, shapes outside the verified range, non-JSON, huge
bodies, broken binary framing) and one of `/reload` paths outside the model root (`..`, absolute paths, symlinks
that leave the root). After every case /v2/health/ready is 200 and a good request still answers.
"""

from __future__ import annotations

import json
import shutil

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
    ],
)
def test_reload_outside_root_is_refused(served, path, status, needle):
    server, _, outside = served
    path = str(outside) if path == "OUTSIDE" else path
    _, before = server.json("GET", "/version")
    got, doc = server.json("POST", "/reload", {"model_path": path})
    assert got == status and needle in doc["error"], doc
    _, after = server.json("GET", "/version")
    assert after["release"] == before["release"] and after["model_version"] == before["model_version"]
    _still_healthy(server)

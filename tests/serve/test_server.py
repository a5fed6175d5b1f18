"""A real `onnxship serve` on 127.0.0.1, driven by tritonclient.http and plain HTTP."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

tritonclient_http = pytest.importorskip("tritonclient.http")

RNG = np.random.default_rng(0)
X = RNG.integers(0, 30, size=(3, 12)).astype(np.int64)


@pytest.fixture(scope="module")
def server(bundles, start_server):
    # one process here (the protocol tests); the reload tests below run the default, one worker per core
    return start_server(["--releases", str(bundles.root), "--max-body-bytes", "65536", "--workers", "1"])


def _client(server):
    return tritonclient_http.InferenceServerClient(server.hostport, connection_timeout=10, network_timeout=30)


def test_health_and_metadata_with_tritonclient(server, bundles):
    client = _client(server)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("deeplog")
    meta = client.get_model_metadata("deeplog")
    assert meta["inputs"] == [{"name": "input_sequence", "datatype": "INT64", "shape": [-1, -1]}]
    assert meta["outputs"] == [{"name": "output_0", "datatype": "FP32", "shape": [-1, 30]}]
    assert meta["parameters"]["release"] == bundles.v1.name and meta["parameters"]["golden"] == "passed"
    assert client.get_server_metadata()["name"] == "onnxship"
    status, doc = server.json("GET", "/v2/models/nope/ready")
    assert status == 404 and "unknown model 'nope'" in doc["error"]


@pytest.mark.parametrize("binary", [False, True])
def test_infer_with_tritonclient(server, bundles, binary):
    client = _client(server)
    inp = tritonclient_http.InferInput("input_sequence", list(X.shape), "INT64")
    inp.set_data_from_numpy(X, binary_data=binary)
    out = tritonclient_http.InferRequestedOutput("output_0", binary_data=binary)
    result = client.infer("deeplog", [inp], outputs=[out], request_id="r-1")
    got = result.as_numpy("output_0")
    assert got.shape == (3, 30) and got.dtype == np.float32
    np.testing.assert_allclose(got, bundles.expected(bundles.v1.name, {"input_sequence": X}), atol=1e-5)
    resp = result.get_response()
    assert resp["model_version"] == "1" and resp["id"] == "r-1"


def test_infer_default_binary_outputs(server, bundles):
    """No outputs listed: tritonclient asks for binary_data_output, as against Triton."""
    client = _client(server)
    inp = tritonclient_http.InferInput("input_sequence", list(X.shape), "INT64")
    inp.set_data_from_numpy(X)
    got = client.infer("deeplog", [inp]).as_numpy("output_0")
    np.testing.assert_allclose(got, bundles.expected(bundles.v1.name, {"input_sequence": X}), atol=1e-5)


def _bad(x, **kw):
    return {
        "inputs": [
            {
                "name": "input_sequence",
                "shape": list(x.shape),
                "datatype": "INT64",
                "data": x.reshape(-1).tolist(),
                **kw,
            }
        ]
    }


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v2/models/other/infer", _bad(X), 404, "unknown model 'other'"),
        ("/v2/models/deeplog/versions/7/infer", _bad(X), 404, "no version '7'"),
        ("/v2/models/deeplog/infer", _bad(X, name="tokens"), 400, "unknown input(s) ['tokens']"),
        (
            "/v2/models/deeplog/infer",
            _bad(X, datatype="INT32"),
            400,
            "datatype INT32, the model expects INT64",
        ),
        ("/v2/models/deeplog/infer", _bad(X.reshape(-1)), 400, "rank 2"),
        (
            "/v2/models/deeplog/infer",
            _bad(np.zeros((1, 33), np.int64)),
            400,
            "outside the verified range seq=1..32",
        ),
        (
            "/v2/models/deeplog/infer",
            _bad(np.zeros((65, 10), np.int64)),
            400,
            "outside the verified range batch=1..64",
        ),
        (
            "/v2/models/deeplog/infer",
            _bad(np.full((1, 10), 99, np.int64)),
            400,
            "input 'input_sequence' holds ids from 99 to 99, outside the verified id range 0..29",
        ),
        ("/v2/models/deeplog/infer", b"{not json", 400, "not valid JSON"),
        ("/v2/models/deeplog/infer", {"inputs": [], "outputs": []}, 400, "non-empty 'inputs'"),
        (
            "/v2/models/deeplog/infer",
            {**_bad(X), "outputs": [{"name": "logits"}]},
            400,
            "['logits'] do not exist",
        ),
        ("/v2/models/deeplog/infer", b"x" * 70000, 413, "exceeds the limit of 65536 bytes"),
        ("/v2/models/deeplog/nothing", b"{}", 404, "no route"),
        ("/v1/models/deeplog:predict", b"{}", 404, "no route"),
    ],
)
def test_bad_requests_get_clear_errors(server, path, body, status, message):
    got, doc = server.json("POST", path, body, headers={"Content-Type": "application/json"})
    assert (got, message in doc["error"]) == (status, True), doc


def test_method_not_allowed_and_server_keeps_serving(server):
    status, doc = server.json("GET", "/v2/models/deeplog/infer")
    assert status == 405 and "use POST" in doc["error"]
    status, doc = server.json("POST", "/v2/models/deeplog/infer", _bad(X[:1]))
    assert status == 200 and doc["outputs"][0]["shape"] == [1, 30]


def test_version_and_metrics(server, bundles):
    status, doc = server.json("GET", "/version")
    assert status == 200 and doc["release"] == bundles.v1.name and doc["golden"]["status"] == "passed"
    assert doc["selection"][0]["source"] == "latest" and doc["onnx_sha256"]
    server.json("POST", "/v2/models/deeplog/infer", _bad(X))
    status, _, raw = server.request("GET", "/metrics")
    text = raw.decode()
    assert status == 200 and "onnxship_ready 1" in text
    assert 'onnxship_requests_total{model="deeplog",endpoint="infer",code="200"}' in text
    assert 'onnxship_requests_total{model="deeplog",endpoint="infer",code="400"}' in text
    assert "onnxship_batch_rows_count" in text


# -- reload -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reload_server(bundles, start_server):
    return start_server(["--releases", str(bundles.root)])


def test_reload_swaps_and_bumps_version(reload_server, bundles):
    s = reload_server
    status, doc = s.json("POST", "/reload", {"model_path": f"deeplog/{bundles.v2.name}"})
    assert status == 200, doc
    assert (
        doc["model_version"] == "2" and doc["previous_version"] == "1" and doc["release"] == bundles.v2.name
    )
    status, out = s.json("POST", "/v2/models/deeplog/infer", _bad(X))
    assert out["model_version"] == "2"
    np.testing.assert_allclose(
        np.asarray(out["outputs"][0]["data"], np.float32).reshape(3, 30),
        bundles.expected(bundles.v2.name, {"input_sequence": X}),
        atol=1e-5,
    )
    status, doc = s.json("POST", "/reload", {})  # no model_path: releases/<name>/latest again (v1)
    assert status == 200 and doc["model_version"] == "3" and doc["release"] == bundles.v1.name


@pytest.mark.parametrize(
    ("model_path", "status", "message"),
    [
        ("../../etc", 403, "outside the model root"),
        ("/etc/passwd", 403, "outside the model root"),
        ("deeplog/escape", 403, "outside the model root"),  # a symlink inside the root that points out of it
        ("deeplog/missing-version", 404, "does not exist"),
        ("BAD_GOLDEN", 422, "fails its golden check"),
        ("TRUNCATED", 422, "sha256"),
        ("deeplog/bare-truncated/deeplog.onnx", 422, "cannot load deeplog.onnx"),
    ],
)
def test_failed_reload_keeps_old_model(reload_server, bundles, model_path, status, message):
    s = reload_server
    escape = bundles.root / "deeplog" / "escape"
    if not escape.is_symlink():
        escape.symlink_to(bundles.root.parent.parent)
    model_path = {
        "BAD_GOLDEN": f"deeplog/{bundles.bad_golden.name}",
        "TRUNCATED": str(bundles.truncated),
    }.get(model_path, model_path)
    _, before = s.json("GET", "/version")
    got, doc = s.json("POST", "/reload", {"model_path": model_path})
    assert (got, message in doc["error"]) == (status, True), doc
    assert doc["serving"]["model_version"] == before["model_version"]
    _, after = s.json("GET", "/version")
    assert after["model_version"] == before["model_version"] and after["release"] == before["release"]
    code, out = s.json("POST", "/v2/models/deeplog/infer", _bad(X))
    assert code == 200 and out["model_version"] == before["model_version"]
    ready, _ = s.json("GET", "/v2/health/ready")
    assert ready == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"nope", "not JSON"),
        ({"model_path": 3}, "must be a string"),
        ({"path": "x"}, 'must be {"model_path"'),
    ],
)
def test_reload_body_errors(reload_server, body, message):
    status, doc = reload_server.json("POST", "/reload", body)
    assert status == 400 and message in doc["error"]


# -- auth, no torch, selection ------------------------------------------------------------------------------------


def test_token_auth_on_a_server_without_torch(bundles, start_server):
    s = start_server(["--releases", str(bundles.root)], env={"ONNXSHIP_TOKEN": "s3cret-token"}, no_torch=True)
    assert s.request("GET", "/v2/health/ready")[0] == 200  # probes stay open
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
        status, hdrs, _ = s.request("POST", "/v2/models/deeplog/infer", _bad(X), headers)
        assert status == 401 and hdrs.get("www-authenticate", hdrs.get("WWW-Authenticate", "")).startswith(
            "Bearer"
        )
    assert s.request("POST", "/reload", {"model_path": "deeplog"}, {})[0] == 401
    client = tritonclient_http.InferenceServerClient(s.hostport)
    inp = tritonclient_http.InferInput("input_sequence", list(X.shape), "INT64")
    inp.set_data_from_numpy(X, binary_data=False)
    res = client.infer("deeplog", [inp], headers={"Authorization": "Bearer s3cret-token"})
    np.testing.assert_allclose(
        res.as_numpy("output_0"), bundles.expected(bundles.v1.name, {"input_sequence": X}), atol=1e-5
    )


def test_model_path_wins_then_falls_back(bundles, start_server, tmp_path):
    s = start_server(["--releases", str(bundles.root)], env={"MODEL_PATH": str(bundles.v2)})
    _, doc = s.json("GET", "/version")
    assert doc["release"] == bundles.v2.name and doc["selection"] == [
        {"source": "MODEL_PATH", "ok": True, "path": f"deeplog/{bundles.v2.name}/deeplog.onnx"}
    ]  # relative to the model root: responses never show absolute paths
    # MODEL_PATH from .env in the working folder; a missing one falls back to latest, saying why
    (tmp_path / ".env").write_text(f"MODEL_PATH={tmp_path / 'gone'}\n")
    s2 = start_server(["--releases", str(bundles.root)], cwd=tmp_path)
    _, doc = s2.json("GET", "/version")
    assert doc["release"] == bundles.v1.name
    assert doc["selection"][0]["source"] == "MODEL_PATH" and "does not exist" in doc["selection"][0]["reason"]


def test_pytorch_checkpoint_fallback(start_server, deeplog_checkpoint, root):
    s = start_server(
        [
            "--model",
            str(root / "examples/deeplog/model.py") + ":build_model",
            "--checkpoint",
            str(deeplog_checkpoint),
        ]
    )
    _, doc = s.json("GET", "/version")
    assert doc["engine"] == "torch" and doc["golden"]["status"] == "not-applicable"
    x = np.arange(20, dtype=np.int64).reshape(2, 10) % 30
    status, out = s.json("POST", "/v2/models/deeplog/infer", _bad(x))
    assert (
        status == 200 and out["outputs"][0]["name"] == "predictions" and out["outputs"][0]["shape"] == [2, 30]
    )


def test_no_model_and_missing_torch_fail_clearly(deeplog_checkpoint, root, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_PATH", "ONNXSHIP_TOKEN")}
    code = (
        "import sys; sys.modules['torch'] = None; from onnxship.cli import main; "
        "sys.argv = ['onnxship'] + sys.argv[1:]; main()"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "serve",
            "--port",
            "0",
            "--model",
            str(root / "examples/deeplog/model.py") + ":build_model",
            "--checkpoint",
            str(deeplog_checkpoint),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "onnxship[torch]" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run(
        [sys.executable, "-c", code, "serve", "--port", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "no model to serve" in out.stderr


def test_chunked_body_over_the_limit_is_413(server):
    """No Content-Length: the limit is enforced while reading."""
    import http.client

    host, port = server.hostport.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(
        "POST",
        "/v2/models/deeplog/infer",
        body=iter([b"x" * 40000, b"y" * 40000]),
        headers={"Content-Type": "application/json"},
        encode_chunked=True,
    )
    resp = conn.getresponse()
    assert resp.status == 413 and b"exceeds the limit" in resp.read()
    conn.close()


def test_torch_fallback_server_refuses_path_reloads(start_server, deeplog_checkpoint, root):
    s = start_server(
        [
            "--model",
            str(root / "examples/deeplog/model.py") + ":build_model",
            "--checkpoint",
            str(deeplog_checkpoint),
        ]
    )
    status, doc = s.json("POST", "/reload", {"model_path": "/etc"})
    assert status == 403 and "no model root" in doc["error"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-batch", "0"], "max_batch must be >= 1"),
        (["--batch-timeout-ms", "-1"], "batch_timeout_ms"),
        (["--token", " "], "token is empty"),
        (["--checkpoint", "x.pt"], "without a model factory"),
        (["--workers", "0"], "workers must be >= 1"),
        (["--max-batch", "16", "--preferred-batch", "32"], "outside 1..16"),
        (["--grpc-port", "70000"], "gRPC port 70000 is not a TCP port"),
        (["--port", "9000", "--grpc-port", "9000"], "is the REST --port too"),
    ],
)
def test_bad_flags_are_usage_errors(args, message, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from onnxship.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["serve", *args])
    assert result.exit_code == 2 and message in result.output

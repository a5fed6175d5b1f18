"""KServe v2 gRPC beside REST on a real `onnxship serve`: tritonclient.grpc and tritonclient.http send the same
requests and get identical answers; bad input maps to the gRPC status codes, never UNKNOWN/INTERNAL."""

from __future__ import annotations

import re

import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")
grpc = pytest.importorskip("grpc")

from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

RNG = np.random.default_rng(7)
X = RNG.integers(0, 30, size=(3, 12)).astype(np.int64)


def grpc_address(server) -> str:
    m = re.search(r"grpc=(\S+)", server.output())
    assert m, server.output()
    return m.group(1)


@pytest.fixture(scope="module")
def server(bundles, start_server):
    return start_server(["--releases", str(bundles.root), "--grpc-port", "0", "--max-body-bytes", "65536"])


@pytest.fixture(scope="module")
def clients(server):
    g = grpcclient.InferenceServerClient(grpc_address(server))
    h = httpclient.InferenceServerClient(server.hostport, network_timeout=30)
    yield g, h
    g.close()
    h.close()


def _infer(client, module, x: np.ndarray, model: str = "deeplog", datatype: str = "INT64", **kw):
    inp = module.InferInput("input_sequence", list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    out = module.InferRequestedOutput("output_0")
    return client.infer(model, [inp], outputs=[out], **kw)


def test_health_and_metadata_agree(clients):
    g, h = clients
    assert g.is_server_live() and g.is_server_ready() and g.is_model_ready("deeplog")
    assert (g.is_model_ready("nope"), h.is_model_ready("nope")) == (False, False)
    gm = g.get_model_metadata("deeplog", as_json=True)
    hm = h.get_model_metadata("deeplog")
    assert gm["name"] == hm["name"] and gm["versions"] == hm["versions"] and gm["platform"] == hm["platform"]
    for kind in ("inputs", "outputs"):
        got = [{**t, "shape": [int(d) for d in t["shape"]]} for t in gm[kind]]
        assert got == hm[kind]
    assert g.get_server_metadata(as_json=True)["name"] == h.get_server_metadata()["name"] == "onnxship"


@pytest.mark.parametrize("shape", [(1, 10), (3, 12), (5, 32)])
def test_grpc_and_http_answer_identically(clients, bundles, shape):
    g, h = clients
    x = RNG.integers(0, 30, size=shape).astype(np.int64)
    gr = _infer(g, grpcclient, x, request_id="same-1")
    hr = _infer(h, httpclient, x, request_id="same-1")
    a, b = gr.as_numpy("output_0"), hr.as_numpy("output_0")
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape == (shape[0], 30)
    assert np.array_equal(a, b)  # the same model on the same input: bit for bit
    np.testing.assert_allclose(a, bundles.expected(bundles.v1.name, {"input_sequence": x}), atol=1e-5)
    gresp, hresp = gr.get_response(as_json=True), hr.get_response()
    assert gresp["model_version"] == hresp["model_version"] and gresp["id"] == hresp["id"] == "same-1"


def test_typed_contents_instead_of_raw(server, bundles):
    """A client that fills InferTensorContents (not raw_input_contents) gets the same answer."""
    with grpc.insecure_channel(grpc_address(server)) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        req = service_pb2.ModelInferRequest(model_name="deeplog")
        t = req.inputs.add(name="input_sequence", datatype="INT64", shape=list(X.shape))
        t.contents.int64_contents.extend(X.reshape(-1).tolist())
        resp = stub.ModelInfer(req, timeout=30)
    got = np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(list(resp.outputs[0].shape))
    np.testing.assert_allclose(got, bundles.expected(bundles.v1.name, {"input_sequence": X}), atol=1e-5)


def _code(exc: InferenceServerException) -> str:
    return str(exc.status())


@pytest.mark.parametrize(
    ("model", "x", "datatype", "code", "message"),
    [
        ("other", X, "INT64", "NOT_FOUND", "unknown model 'other'"),
        ("deeplog", X.astype(np.float32), "FP32", "INVALID_ARGUMENT", "the model expects INT64"),
        ("deeplog", np.zeros((1, 33), np.int64), "INT64", "INVALID_ARGUMENT", "outside the verified range"),
        (
            "deeplog",
            np.full((1, 10), 99, np.int64),
            "INT64",
            "INVALID_ARGUMENT",
            "99",
        ),  # an id past the vocabulary
        ("deeplog", X.reshape(1, 3, 12), "INT64", "INVALID_ARGUMENT", "rank 3"),
    ],
)
def test_bad_requests_map_to_grpc_codes_with_the_rest_message(clients, model, x, datatype, code, message):
    g, h = clients
    with pytest.raises(InferenceServerException) as gexc:
        _infer(g, grpcclient, x, model=model, datatype=datatype)
    assert _code(gexc.value) == f"StatusCode.{code}" and message in gexc.value.message()
    with pytest.raises(InferenceServerException) as hexc:
        _infer(h, httpclient, x, model=model, datatype=datatype)
    assert message in hexc.value.message()


def _raw_call(server, build) -> grpc.RpcError:
    with grpc.insecure_channel(grpc_address(server)) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        req = service_pb2.ModelInferRequest(model_name="deeplog")
        build(req)
        with pytest.raises(grpc.RpcError) as exc:
            stub.ModelInfer(req, timeout=30)
    return exc.value


@pytest.mark.parametrize(
    ("build", "code", "message"),
    [
        (lambda r: None, grpc.StatusCode.INVALID_ARGUMENT, "no inputs"),
        (
            lambda r: (
                r.inputs.add(name="input_sequence", datatype="INT64", shape=[1, 10]),
                r.raw_input_contents.append(b"\0" * 7),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "has 7 bytes",
        ),
        (
            lambda r: (
                r.inputs.add(name="input_sequence", datatype="INT64", shape=[1, 10]),
                r.inputs.add(name="input_sequence", datatype="INT64", shape=[1, 10]),
                r.raw_input_contents.extend([b"\0" * 80, b"\0" * 80]),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "given twice",
        ),
        (
            lambda r: r.inputs.add(name="input_sequence", datatype="BYTES", shape=[1, 10]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "BYTES is not supported",
        ),
        (
            lambda r: r.inputs.add(name="input_sequence", datatype="INT64", shape=[1, 10]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "has 0 values",
        ),
        (
            lambda r: (
                r.inputs.add(name="input_sequence", datatype="INT64", shape=[1, 10]),
                r.raw_input_contents.append(b"\0" * 80),
                r.outputs.add(name="nope"),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "'nope'",
        ),
        (
            lambda r: (
                r.inputs.add(name="input_sequence", datatype="INT64", shape=[64, 1000]),
                r.raw_input_contents.append(b"\0" * 8 * 64 * 1000),
            ),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "",
        ),
    ],
)
def test_malformed_grpc_requests(server, build, code, message):
    err = _raw_call(server, build)
    assert err.code() == code and message in (err.details() or ""), (err.code(), err.details())
    assert err.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)


def test_grpc_token_auth(bundles, start_server):
    s = start_server(["--releases", str(bundles.root), "--grpc-port", "0"], env={"ONNXSHIP_TOKEN": "tok-123"})
    g = grpcclient.InferenceServerClient(grpc_address(s))
    assert g.is_server_live()  # probes stay open, as on REST
    with pytest.raises(InferenceServerException) as exc:
        _infer(g, grpcclient, X)
    assert _code(exc.value) == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as exc:
        _infer(g, grpcclient, X, headers={"authorization": "Bearer wrong"})
    assert _code(exc.value) == "StatusCode.UNAUTHENTICATED"
    got = _infer(g, grpcclient, X, headers={"authorization": "Bearer tok-123"}).as_numpy("output_0")
    assert got.shape == (3, 30)


def test_reload_over_rest_is_what_grpc_serves(bundles, start_server):
    s = start_server(["--releases", str(bundles.root), "--grpc-port", "0"])
    g = grpcclient.InferenceServerClient(grpc_address(s))
    status, doc = s.json("POST", "/reload", {"model_path": f"deeplog/{bundles.v2.name}"})
    assert status == 200, doc
    r = _infer(g, grpcclient, X)
    assert r.get_response().model_version == doc["model_version"]
    np.testing.assert_allclose(
        r.as_numpy("output_0"), bundles.expected(bundles.v2.name, {"input_sequence": X}), atol=1e-5
    )
    metrics = s.request("GET", "/metrics")[2].decode()
    assert re.search(
        r'onnxship_requests_total\{model="deeplog",endpoint="grpc_model_infer",code="200"\} 1\b', metrics
    )

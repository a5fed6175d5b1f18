"""KServe v2 bodies and signature checks, without a server."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson
import pytest

from onnxship.serve._batcher import Batcher
from onnxship.serve._protocol import encode_infer_response, parse_infer_request
from onnxship.serve._signature import DimInfo, RequestError, Signature, TensorInfo

SIG = Signature._with_batching(
    [
        TensorInfo("ids", "INT64", (DimInfo(None, "batch", 1, 8), DimInfo(None, "seq", 2, 16))),
        TensorInfo("mask", "FP32", (DimInfo(None, "batch", 1, 8), DimInfo(None, "seq", 2, 16))),
    ],
    [TensorInfo("out", "FP32", (DimInfo(None, "batch"), DimInfo(4)))],
    [],
)


def _req(**tensors) -> bytes:
    return orjson.dumps({"inputs": [{"name": k, **v} for k, v in tensors.items()]})


def test_json_request_round_trip():
    body = _req(
        ids={"shape": [2, 3], "datatype": "INT64", "data": [[1, 2, 3], [4, 5, 6]]},
        mask={"shape": [2, 3], "datatype": "FP32", "data": [1, 1, 1, 1, 0.5, 0]},
    )
    req = parse_infer_request(body)
    assert req.rows == 2 and req.feeds["ids"].dtype == np.int64 and req.feeds["mask"].dtype == np.float32
    SIG.check(req.feeds, req.declared)
    out = {"out": np.array([[0.1, 1 / 3, -2.5, 1e-8]] * 2, dtype=np.float32)}
    payload, json_len = encode_infer_response("m", "3", req, out)
    assert json_len is None
    doc = orjson.loads(payload)
    assert doc["model_version"] == "3" and doc["outputs"][0]["shape"] == [2, 4]
    assert np.array_equal(np.asarray(doc["outputs"][0]["data"], dtype=np.float32).reshape(2, 4), out["out"])


def test_binary_request_and_response():
    ids = np.arange(6, dtype=np.int64).reshape(2, 3)
    mask = np.ones((2, 3), dtype=np.float32)
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "ids",
                    "shape": [2, 3],
                    "datatype": "INT64",
                    "parameters": {"binary_data_size": ids.nbytes},
                },
                {
                    "name": "mask",
                    "shape": [2, 3],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": mask.nbytes},
                },
            ],
            "outputs": [{"name": "out", "parameters": {"binary_data": True}}],
        }
    )
    req = parse_infer_request(head + ids.tobytes() + mask.tobytes(), len(head))
    assert np.array_equal(req.feeds["ids"], ids) and np.array_equal(req.feeds["mask"], mask)
    out = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    payload, json_len = encode_infer_response("m", "1", req, {"out": out})
    assert json_len is not None
    meta = orjson.loads(payload[:json_len])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == out.nbytes
    assert np.array_equal(np.frombuffer(payload[json_len:], dtype=np.float32).reshape(2, 4), out)
    with pytest.raises(RequestError, match="ends before this tensor"):
        parse_infer_request(head + ids.tobytes(), len(head))
    with pytest.raises(RequestError, match="no input claims"):
        parse_infer_request(head + ids.tobytes() + mask.tobytes() + b"xx", len(head))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"inputs": []}', "non-empty 'inputs'"),
        (_req(ids={"shape": [2], "datatype": "INT64", "data": [1, 2, 3]}), "3 elements but shape"),
        (_req(ids={"shape": [2], "datatype": "INT64", "data": [1.5, 2]}), "floating-point"),
        (_req(ids={"shape": [2], "datatype": "INT64", "data": ["a", "b"]}), "string"),
        (_req(ids={"shape": [2], "datatype": "INT8", "data": [1, 300]}), "outside the range of INT8"),
        (_req(ids={"shape": [2], "datatype": "COMPLEX", "data": [1, 2]}), "not supported"),
        (_req(ids={"shape": [2, -1], "datatype": "INT64", "data": [1, 2]}), "non-negative"),
        (_req(ids={"shape": [2, 2], "datatype": "INT64", "data": [[1, 2], [3]]}), "ragged"),
        (_req(ids={"shape": [1], "datatype": "BYTES", "data": ["x"]}), "BYTES"),
    ],
)
def test_malformed_requests_are_400(body: bytes, message: str):
    with pytest.raises(RequestError, match=message) as info:
        parse_infer_request(body)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("feeds", "declared", "message"),
    [
        ({"ids": np.zeros((1, 4), np.int64)}, {"ids": "INT64"}, "missing input"),
        (
            {"ids": np.zeros((1, 4), np.int64), "mask": np.zeros((1, 4), np.float32), "x": np.zeros(1)},
            {"ids": "INT64", "mask": "FP32", "x": "FP64"},
            "unknown input",
        ),
        (
            {"ids": np.zeros((1, 4), np.int32), "mask": np.zeros((1, 4), np.float32)},
            {"ids": "INT32", "mask": "FP32"},
            "datatype INT32, the model expects INT64",
        ),
        (
            {"ids": np.zeros((4,), np.int64), "mask": np.zeros((1, 4), np.float32)},
            {"ids": "INT64", "mask": "FP32"},
            "rank",
        ),
        (
            {"ids": np.zeros((9, 4), np.int64), "mask": np.zeros((9, 4), np.float32)},
            {"ids": "INT64", "mask": "FP32"},
            "outside the verified range batch=1..8",
        ),
        (
            {"ids": np.zeros((1, 1), np.int64), "mask": np.zeros((1, 1), np.float32)},
            {"ids": "INT64", "mask": "FP32"},
            "seq=2..16",
        ),
        (
            {"ids": np.zeros((1, 4), np.int64), "mask": np.zeros((1, 5), np.float32)},
            {"ids": "INT64", "mask": "FP32"},
            "inputs sharing a dim must agree",
        ),
    ],
)
def test_signature_refuses(feeds, declared, message):
    with pytest.raises(RequestError, match=message) as info:
        SIG.check(feeds, declared)
    assert info.value.status == 400


def test_unknown_requested_output_is_400():
    req = parse_infer_request(
        orjson.dumps(
            {
                "inputs": [{"name": "ids", "shape": [1], "datatype": "INT64", "data": [1]}],
                "outputs": [{"name": "nope"}],
            }
        )
    )
    with pytest.raises(RequestError, match="'nope' does not exist"):
        encode_infer_response("m", "1", req, {"out": np.zeros((1, 4), np.float32)})


def test_batcher_merges_and_splits_exactly():
    """Requests queued in one loop tick form one batch; each gets exactly its own rows back."""
    weights = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    calls: list[int] = []

    def run(feeds):
        calls.append(feeds["x"].shape[0])
        if (feeds["x"] < 0).any():
            raise ValueError("negative ids are invalid")
        return {"y": feeds["x"] @ weights}

    rng = np.random.default_rng(0)
    xs = [rng.random((n, 3)).astype(np.float32) for n in (1, 3, 2, 1)]
    seen: list[tuple[int, int, float]] = []

    async def main():
        with ThreadPoolExecutor(1) as pool:
            b = Batcher(
                run,
                mergeable=True,
                max_rows=6,
                timeout_s=0.0,
                executor=pool,
                on_batch=lambda r, n, s: seen.append((r, n, s)),
            )
            futs = [b.submit({"x": x}, x.shape[0]) for x in xs]
            outs = await asyncio.gather(*futs)
            bad = b.submit({"x": -np.ones((1, 3), np.float32)}, 1)
            good = b.submit({"x": xs[0]}, 1)
            res = await asyncio.gather(bad, good, return_exceptions=True)
            b.close()
            return outs, res

    outs, (bad, good) = asyncio.run(main())
    assert calls[:2] == [6, 1]  # 1+3+2 merged (the cap is 6 rows), the last request in the next batch
    assert seen[0][:2] == (6, 3)
    for x, out in zip(xs, outs, strict=True):
        assert np.array_equal(out["y"], x @ weights)  # same rows, same order, same values
    assert isinstance(bad, RequestError) and bad.status == 400 and "negative ids" in bad.message
    assert np.array_equal(good["y"], xs[0] @ weights)  # a bad request in a batch does not fail its neighbours


def test_batcher_keeps_different_shapes_apart():
    async def main():
        with ThreadPoolExecutor(1) as pool:
            sizes: list[tuple[int, ...]] = []
            b = Batcher(
                lambda f: sizes.append(f["x"].shape) or {"y": f["x"].sum(axis=1)},
                mergeable=True,
                max_rows=32,
                timeout_s=0.0,
                executor=pool,
            )
            a = b.submit({"x": np.ones((1, 3), np.float32)}, 1)
            c = b.submit({"x": np.ones((1, 5), np.float32)}, 1)
            d = b.submit({"x": np.ones((2, 3), np.float32)}, 2)
            out = await asyncio.gather(a, c, d)
            b.close()
            return sizes, out

    sizes, (a, c, d) = asyncio.run(main())
    assert sizes == [(3, 3), (1, 5)]
    assert a["y"].tolist() == [3.0] and c["y"].tolist() == [5.0] and d["y"].tolist() == [3.0, 3.0]

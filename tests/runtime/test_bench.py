"""bench(): percentiles, throughput, engines on the same inputs, variants built and gated when missing."""

from __future__ import annotations

import json

import pytest

from onnxship._errors import ConfigError
from onnxship.runtime import BenchConfig, SessionConfig, bench, find_variant

FAST = dict(warmup=2, min_runs=5, min_seconds=0.0, max_runs=5, threads=1)


@pytest.fixture(scope="module")
def bench_dir(deeplog_export, tmp_path_factory):
    """A copy of the exported model in its own folder, so built variants land beside it and not in a shared one."""
    import shutil

    _, result = deeplog_export
    d = tmp_path_factory.mktemp("bench")
    shutil.copy(result.path, d / "deeplog.onnx")
    return d / "deeplog.onnx"


def test_bench_torch_and_onnx_with_int8_variant(bench_dir, deeplog_export):
    from onnxship.optimize import build_variants

    model, _ = deeplog_export
    cfg = BenchConfig(batch_sizes=(1, 4), variants=("int8",), **FAST)
    res = bench(bench_dir, cfg, model=model, build_variants=build_variants)
    keys = {(r.engine, r.variant, r.batch) for r in res.rows}
    assert keys == {
        (e, v, b) for e, v in [("onnx", "fp32"), ("onnx", "int8-dynamic"), ("torch", "fp32")] for b in (1, 4)
    }
    for r in res.rows:
        assert r.skipped is None and r.runs == 5
        assert 0 < r.p50_ms <= r.p90_ms <= r.p99_ms
        assert r.throughput > 0
    assert res.row("onnx", "fp32", 1).providers == ["CPUExecutionProvider"]
    # the variant was built, gated and kept beside the model; its verdict is in the result
    assert find_variant(bench_dir, "int8-dynamic") is not None
    assert res.variants["int8-dynamic"]["gate_passed"] is True
    assert res.speedup("int8-dynamic", 4) == pytest.approx(
        res.row("onnx", "fp32", 4).p50_ms / res.row("onnx", "int8-dynamic", 4).p50_ms
    )
    data = json.loads(json.dumps(res.to_dict()))
    assert "onnx/int8-dynamic/b4" in data["speedup_vs_onnx_fp32_p50"]
    assert data["environment"]["threads"] == 1


def test_missing_variant_without_a_builder_is_skipped_with_the_fix(deeplog_export, tmp_path):
    """The runtime layer never imports the optimizer: with no ``build_variants`` a missing variant is skipped."""
    import shutil

    _, result = deeplog_export
    path = tmp_path / "deeplog.onnx"
    shutil.copy(result.path, path)
    res = bench(path, BenchConfig(batch_sizes=(2,), engines=("onnx",), variants=("fp16",), **FAST))
    assert "onnxship optimize" in res.variants["fp16"]["skipped"]
    assert res.row("onnx", "fp16", 2).skipped and find_variant(path, "fp16") is None
    assert res.row("onnx", "fp32", 2).runs == 5


def test_existing_variant_is_used_not_rebuilt(bench_dir):
    from onnxship.optimize import OptimizeConfig, optimize

    path = find_variant(bench_dir, "int8-dynamic")
    if path is None:
        path = optimize(bench_dir, OptimizeConfig(variants=("int8-dynamic",))).variants[0].path
    before = path.stat().st_mtime_ns
    res = bench(
        bench_dir, BenchConfig(batch_sizes=(2,), engines=("onnx",), variants=("int8-dynamic",), **FAST)
    )
    assert res.variants["int8-dynamic"]["source"] == "existing file" and path.stat().st_mtime_ns == before
    assert res.variants["int8-dynamic"]["gate_passed"] is True  # read from the variant's metadata


def test_torch_is_skipped_without_model_and_static_batch_rows_are_skipped(outlier_static):
    res = bench(outlier_static, BenchConfig(batch_sizes=(3, 5), **FAST))
    assert {r.engine for r in res.rows} == {"onnx"}
    by_batch = {r.batch: r for r in res.rows}
    assert by_batch[3].skipped is None and by_batch[5].skipped == "the model's batch is static (3)"


@pytest.fixture(scope="module")
def outlier_static(tmp_path_factory):
    """A hand-made ONNX model with a static batch of 3 and no onnxship metadata: specs come from the graph."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(4, 2), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "lin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("static") / "lin.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_sizes": ()},
        {"batch_sizes": (0,)},
        {"engines": ("tvm",)},
        {"min_runs": 0},
        {"min_runs": 10, "max_runs": 5},
    ],
)
def test_bad_bench_config(kwargs):
    with pytest.raises(ConfigError):
        BenchConfig(**kwargs)


def test_session_providers_reach_the_runner(bench_dir):
    res = bench(
        bench_dir,
        BenchConfig(batch_sizes=(2,), engines=("onnx",), session=SessionConfig(providers=("cpu",)), **FAST),
    )
    assert res.rows[0].providers == ["CPUExecutionProvider"]
    assert res.environment["provider_fallbacks"] == []


def test_missing_gpu_provider_is_recorded_as_fallback(bench_dir):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("GPU build: no fallback")
    res = bench(
        bench_dir,
        BenchConfig(
            batch_sizes=(2,), engines=("onnx",), session=SessionConfig(providers=("cuda", "cpu")), **FAST
        ),
    )
    assert res.rows[0].providers == ["CPUExecutionProvider"]
    assert [f["provider"] for f in res.environment["provider_fallbacks"]] == ["CUDAExecutionProvider"]

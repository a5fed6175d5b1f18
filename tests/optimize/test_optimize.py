"""optimize(): every variant re-verified; failing variants are not kept; sensitive nodes are named."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from onnxship._errors import CheckError, ConfigError
from onnxship.optimize import GateConfig, OptimizeConfig, optimize
from onnxship.runtime import SessionConfig, model_metadata

CPU = SessionConfig(providers=("cpu",), intra_op_threads=1)
LOOSE = GateConfig(thresholds={"top1_mismatch_rate": 0.05}, task_samples=128)


@pytest.fixture(scope="module")
def deeplog_variants(deeplog_export, tmp_path_factory):
    model, result = deeplog_export
    out = tmp_path_factory.mktemp("dl-variants")
    cfg = OptimizeConfig(
        variants=("fp32", "fp16", "int8-dynamic", "int8-static"),
        out_dir=out,
        session=CPU,
        gate=GateConfig(task_samples=128),
    )
    return optimize(result.path, cfg, model=model), out


def test_all_deeplog_variants_kept_and_verified_against_torch(deeplog_variants, deeplog_export):
    res, out = deeplog_variants
    assert res.reference == "torch"
    assert [v.variant for v in res.variants] == ["fp32", "fp16", "int8-dynamic", "int8-static"]
    assert bool(res), [(v.variant, v.reason) for v in res.variants]
    for v in res.variants:
        assert v.path == out / f"deeplog.{v.variant}.onnx" and v.path.is_file()
        assert v.size_bytes == v.path.stat().st_size
        assert v.gate is not None and v.gate.task == "sequence"  # DeepLog: next-event top-g agreement
        assert v.metrics["task"]["decision_agreement"] >= 0.99
        assert v.metrics["shapes_checked"] >= 3  # the shape sweep ran for the variant too
        meta = model_metadata(onnx.load(str(v.path)))
        assert meta["precision"] == v.precision and meta["variant"] == v.variant
        assert meta["gate"]["passed"] is True and meta["gate"]["reference"] == "torch"
        assert meta["inputs"] == model_metadata(onnx.load(str(deeplog_export[1].path)))["inputs"]
    sizes = {v.variant: v.size_bytes for v in res.variants}
    assert sizes["int8-dynamic"] < sizes["fp16"] < sizes["fp32"]
    assert "simplify" in res.variants[0].passes
    report = json.loads(res.report_path.read_text())
    assert report["passed"] is True and len(report["variants"]) == 4


def test_without_model_the_reference_is_fp32_onnx(deeplog_export, tmp_path):
    _, result = deeplog_export
    res = optimize(
        result.path,
        OptimizeConfig(variants=("int8",), out_dir=tmp_path, session=CPU, gate=GateConfig(task_samples=64)),
    )
    assert res.reference == "onnxruntime-fp32" and res.variants[0].variant == "int8-dynamic" and bool(res)


def test_failing_int8_is_rejected_and_deleted(outlier_export, tmp_path):
    model, result = outlier_export
    res = optimize(
        result.path,
        OptimizeConfig(
            variants=("int8-dynamic",), exclude_sensitive=False, out_dir=tmp_path, session=CPU, gate=LOOSE
        ),
        model=model,
    )
    v = res.variants[0]
    assert not res and v.status == "rejected" and v.path is None
    assert "top-1 mismatch rate" in v.reason
    assert v.gate is not None and v.metrics["task"]["top1_mismatch_rate"] > 0.05
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outlier.optimize.json"]  # nothing half-written


def test_keep_rejected_marks_the_file(outlier_export, tmp_path):
    model, result = outlier_export
    res = optimize(
        result.path,
        OptimizeConfig(
            variants=("int8-dynamic",),
            exclude_sensitive=False,
            out_dir=tmp_path,
            keep_rejected=True,
            session=CPU,
            gate=LOOSE,
        ),
        model=model,
    )
    v = res.variants[0]
    assert v.path == tmp_path / "outlier.int8-dynamic.rejected.onnx" and v.path.is_file()
    assert model_metadata(onnx.load(str(v.path)))["gate"]["passed"] is False
    assert not (tmp_path / "outlier.int8-dynamic.onnx").exists()


@pytest.mark.parametrize("variant,node", [("int8-dynamic", "/a/Gemm_MatMul"), ("int8-static", "/a/Gemm")])
def test_sensitive_node_is_found_kept_in_fp32_and_named(outlier_export, tmp_path, variant, node):
    model, result = outlier_export
    res = optimize(
        result.path,
        OptimizeConfig(variants=(variant,), out_dir=tmp_path, session=CPU, gate=LOOSE),
        model=model,
    )
    v = res.variants[0]
    assert v.passed, v.reason
    assert v.excluded_nodes == [node]
    assert v.sensitivity[0].name == node and v.sensitivity[0].mse > 100 * v.sensitivity[1].mse
    assert any("accuracy-sensitive" in n and node in n for n in v.notes)
    assert model_metadata(onnx.load(str(v.path)))["excluded_nodes"] == [node]


def test_static_calibration_from_npz(outlier_export, tmp_path):
    model, result = outlier_export
    data = tmp_path / "calib.npz"
    np.savez(data, x=np.random.default_rng(1).standard_normal((40, 32)).astype(np.float32))
    res = optimize(
        result.path,
        OptimizeConfig(
            variants=("int8-static",),
            calibration=data,
            calibration_samples=16,
            exclude_nodes=("/a/Gemm",),
            out_dir=tmp_path / "v",
            session=CPU,
            gate=LOOSE,
        ),
        model=model,
    )
    v = res.variants[0]
    assert v.passed, v.reason
    assert any("calibrated on 2 batches" in n for n in v.notes)  # 16 samples in batches of 8


def test_bad_inputs_are_clear_errors(outlier_export, deeplog_export, tmp_path):
    _, result = outlier_export
    with pytest.raises(ConfigError, match="unknown variant"):
        OptimizeConfig(variants=("int4",))
    with pytest.raises(CheckError):
        optimize(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.npz"
    np.savez(bad, y=np.zeros((4, 32), np.float32))
    with pytest.raises(ConfigError, match="do not match the model inputs"):
        optimize(
            result.path, OptimizeConfig(variants=("int8-static",), calibration=bad, out_dir=tmp_path / "o")
        )
    assert not (tmp_path / "o").exists()  # nothing written
    # an fp16 model is not a source for variants
    fp16 = tmp_path / "half.onnx"
    m = onnx.load(str(deeplog_export[1].path))
    for p in m.metadata_props:
        if p.key == "precision":
            p.value = "fp16"
    onnx.save(m, str(fp16))
    with pytest.raises(ConfigError, match="FP32"):
        optimize(fp16, OptimizeConfig(variants=("int8",), out_dir=tmp_path / "h"))


def test_gate_uses_the_verification_policy_of_each_precision(deeplog_variants):
    res, _ = deeplog_variants
    by = {v.variant: v.metrics["policy"] for v in res.variants}
    assert by["fp32"]["elementwise"] == {"atol": 1e-4, "rtol": 1e-3}
    assert (
        by["fp16"]["elementwise"] is None
        and by["fp16"]["mse_mean"] == 5e-4
        and by["fp16"]["cosine_min"] == 0.99
    )
    assert by["int8-dynamic"]["task"]["decision_disagreement"] == 0.02  # int8: task-level agreement


def test_policy_overrides_reach_the_gate(deeplog_export, tmp_path):
    model, result = deeplog_export
    res = optimize(
        result.path,
        OptimizeConfig(
            variants=("fp32",),
            out_dir=tmp_path,
            session=CPU,
            gate=GateConfig(tolerance=1e-12, task_samples=64),
        ),
        model=model,
    )
    v = res.variants[0]
    assert (
        v.status == "rejected" and "outside atol=1e-12" in v.reason and not any(tmp_path.glob("*.fp32.onnx"))
    )

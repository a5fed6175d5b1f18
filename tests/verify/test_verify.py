"""The verify() verb end to end: real exports, real onnxruntime, report.json validated against its JSON Schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from onnxship._errors import CheckError, ConfigError, VerificationError
from onnxship.verify import VerifyConfig, load_report_schema, verify, write_golden


def _validate(report_dict):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator(load_report_schema()).validate(report_dict)


@pytest.fixture(scope="module")
def deeplog(deeplog_export):
    model, result = deeplog_export
    return model, result.path


@pytest.fixture(scope="module")
def cnn_export(tmp_path_factory):
    import torch

    import onnxship
    from onnxship.testing import SmallCNN, randomize_constant_init

    torch.manual_seed(0)
    model = randomize_constant_init(SmallCNN(classes=4))
    out = tmp_path_factory.mktemp("cnn")
    res = onnxship.export(
        model,
        inputs=["image:batch=2..8 x 3 x 16 x 16:float32"],
        out=out,
        name="cnn",
        strategy="torchscript",
        output_names=("logits",),
    )
    return model, res.path


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c in range(4):
        (root / f"class{c}").mkdir()
        for k in range(5):
            arr = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / f"class{c}" / f"{k}.png")
    return root


def test_deeplog_passes_with_sequence_task_and_sweep(deeplog, tmp_path):
    model, path = deeplog
    report = verify(path, model=model, config=VerifyConfig(task="sequence", sample_count=20, batch_size=8))
    assert report.passed and bool(report) and report.failure_reason is None
    d = report.to_dict()
    _validate(d)
    assert d["compare"]["sample_count"] == 20 and d["compare"]["mode"] == "smoke"
    assert d["task_metrics"]["task"] == "sequence" and d["task_metrics"]["decision_agreement"] == 1.0
    sweep = {tuple(sorted(s["dims"].items())) for s in d["shapes"] if s["kind"] == "sweep"}
    assert (("batch", 1), ("seq", 1)) in sweep and (("batch", 16), ("seq", 32)) in sweep
    assert all(s["status"] == "passed" for s in d["shapes"])
    assert d["opset"] == 17 and d["dynamic_axes"] is True and d["providers"] == ["CPUExecutionProvider"]
    assert d["environment"]["torch"] and d["outputs"][0]["smallest_passing"]["atol"] < 1e-4
    out = report.write_json(tmp_path / "report.json")
    assert json.loads(out.read_text())["passed"] is True


def test_wrong_weights_fail_with_worst_output_smallest_tolerance_and_causes(deeplog):
    import torch

    from onnxship.testing import DeepLogLSTM

    _, path = deeplog
    torch.manual_seed(1)
    other = (
        DeepLogLSTM()
    )  # same architecture, other weights: the ONNX file was exported from another checkpoint
    report = verify(path, model=other, config=VerifyConfig(task="sequence", sweep=False))
    assert not report.passed
    assert "output 'output_0'" in report.failure_reason and "would pass with atol=" in report.failure_reason
    assert report.worst_output["name"] == "output_0" and report.worst_output["min_passing_atol"] > 1e-3
    assert "likely causes" in report.hint
    codes = {d["code"] for d in report.diagnostics}
    assert "VER106" in codes or "VER107" in codes
    _validate(report.to_dict())
    with pytest.raises(VerificationError) as info:
        verify(path, model=other, config=VerifyConfig(sweep=False, raise_on_fail=True))
    assert info.value.report is not None and not info.value.report.passed


def test_a_module_in_train_mode_is_verified_in_eval_and_given_back(deeplog):
    model, path = deeplog
    model.train()
    try:
        report = verify(path, model=model, config=VerifyConfig(sample_count=4, sweep=False))
        assert report.passed and model.training
    finally:
        model.eval()


def test_tolerance_overrides_move_the_verdict(deeplog):
    model, path = deeplog
    tight = verify(path, model=model, config=VerifyConfig(sweep=False, tolerance={"atol": 0.0, "rtol": 0.0}))
    loose_out = verify(
        path,
        model=model,
        config=VerifyConfig(
            sweep=False,
            tolerance={"atol": 0.0, "rtol": 0.0},
            tolerances={"output_0": {"atol": 1e-3, "rtol": 0}},
        ),
    )
    smallest = tight.outputs[0]["smallest_passing"]["atol"]
    assert tight.passed is (smallest == 0.0)  # bit-exact engines pass even at zero tolerance
    if not tight.passed:  # last-bit differences are called noise, with the tolerance that would pass
        noise = [d for d in tight.diagnostics if d["code"] == "VER105"]
        assert noise and f"atol={smallest:.1g}" in noise[0]["advice"]
    assert loose_out.passed and loose_out.policy["per_output"]["output_0"]["atol"] == 1e-3
    with pytest.raises(ConfigError, match=r"unknown outputs \['logits'\]"):
        verify(path, model=model, config=VerifyConfig(tolerances={"logits": 1e-3}))


def test_sequence_data_from_csv_with_next_events(deeplog, tmp_path):
    pd = pytest.importorskip("pandas")
    model, path = deeplog
    rng = np.random.default_rng(0)
    windows = rng.integers(0, 30, (40, 10))
    pd.DataFrame(
        {"input_sequence": [" ".join(map(str, w)) for w in windows], "next_event": rng.integers(0, 30, 40)}
    ).to_csv(tmp_path / "windows.csv", index=False)
    report = verify(
        path,
        model=model,
        config=VerifyConfig(
            data=tmp_path / "windows.csv", mode="full", task="sequence", batch_size=16, sweep=False
        ),
    )
    assert report.passed and report.compare["sample_count"] == 40 and report.compare["sample_policy"] == "all"
    assert report.task_metrics["labels_source"] == "given"
    np.savez(tmp_path / "bad.npz", input_sequence=windows.astype(np.float32))
    with pytest.raises(ConfigError, match="is float32 but the model expects int64"):
        verify(path, model=model, config=VerifyConfig(data=tmp_path / "bad.npz"))


def test_image_classification_coverage_with_hardness_bins(cnn_export, image_folder):
    model, path = cnn_export
    cfg = VerifyConfig(
        data=image_folder,
        mode="coverage",
        per_class_k=2,
        min_classes=4,
        task="classification",
        hardness_bins=(0.0, 0.5, 1.0),
        hard_per_bin=2,
        batch_size=4,
    )
    report = verify(path, model=model, config=cfg)
    d = report.to_dict()
    _validate(d)
    assert report.passed, report.failure_reason
    assert d["compare"]["sample_policy"] == "stratified" and d["compare"]["sampled_classes"] == 4
    assert (
        8 <= d["compare"]["sample_count"] <= 12
        and d["compare"]["sampled_images"] == d["compare"]["sample_count"]
    )
    assert d["compare"]["top1_match_rate"] == 1.0 and d["compare"]["mse_mean"] < 1e-8
    assert d["num_classes"] == 4 and d["task_metrics"]["task"] == "classification"
    assert sum(b["added"] for b in d["sampling"]["hard_bins"]) >= 1
    assert all(w["id"].startswith("class") for w in d["worst_samples"])


def test_image_folder_without_classes_is_a_clear_error(cnn_export, tmp_path):
    model, path = cnn_export
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no class sub-folders"):
        verify(path, model=model, config=VerifyConfig(data=tmp_path / "empty"))


def test_axes_that_became_static_are_reported(tmp_path):
    import torch

    import onnxship
    from onnxship.testing import DeepLogLSTM

    torch.manual_seed(0)
    model = DeepLogLSTM()
    res = onnxship.export(
        model, inputs=["input_sequence:2x10:int64:0..30"], out=tmp_path, name="frozen", strategy="torchscript"
    )
    report = verify(
        res.path,
        model=model,
        inputs=["input_sequence:batch=2..16 x seq=10..32:int64:0..30"],
        config=VerifyConfig(sample_count=4, batch_size=2),
    )
    assert not report.passed
    assert any("'batch'" in s for s in report.shape_issues["static_axes"])
    assert "dynamic axes exported static" in report.failure_reason
    failed = [s for s in report.shapes if s["kind"] == "sweep" and s["status"] == "failed"]
    assert failed and all("onnxruntime failed" in s["error"] for s in failed)
    assert "VER101" in {d["code"] for d in report.diagnostics}
    _validate(report.to_dict())


def _golden_for(model, path, tmp_path, name="golden.npz", meta=None):
    from onnxship.spec._binding import bind_inputs
    from onnxship.verify import OnnxRuntimeRunner, TorchRunner

    x = np.random.default_rng(5).integers(0, 30, (3, 12)).astype(np.int64)
    runner = TorchRunner(model, bind_inputs(model, ["input_sequence"]), OnnxRuntimeRunner(path).output_names)
    return write_golden(tmp_path / name, {"input_sequence": x}, runner.infer({"input_sequence": x}), meta)


def test_golden_only_works_without_torch(deeplog, tmp_path):
    model, path = deeplog
    golden = _golden_for(model, path, tmp_path)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # torch is not installed here
        from onnxship.verify import verify
        r = verify({str(path)!r}, golden={str(golden)!r})
        assert "torch" not in sys.modules or sys.modules["torch"] is None
        print(r.passed, r.reference, r.compare["sample_count"], r.environment["torch"])
    """)
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "golden", "3", "None"]
    both = verify(path, model=model, golden=golden, config=VerifyConfig(sample_count=4, sweep=False))
    assert both.passed and both.reference == "torch"
    assert [s["samples"] for s in both.shapes if s["kind"] == "golden"] == [3]


def test_golden_from_another_model_is_refused(deeplog, cnn_export, tmp_path):
    model, path = deeplog
    _, cnn_path = cnn_export
    golden = _golden_for(model, path, tmp_path)
    with pytest.raises(CheckError, match="belongs to another model"):
        verify(cnn_path, golden=golden)
    renamed = _golden_for(model, path, tmp_path, "other.npz", meta={"model_name": "someone_else"})
    with pytest.raises(CheckError, match="golden model_name 'someone_else' != model model_name 'deeplog'"):
        verify(path, golden=renamed)
    with pytest.raises(CheckError, match="not a readable golden file"):
        (tmp_path / "junk.npz").write_bytes(b"junk")
        verify(path, golden=tmp_path / "junk.npz")


def test_golden_with_changed_outputs_fails(deeplog, tmp_path):
    from onnxship.verify import read_golden

    model, path = deeplog
    g = read_golden(_golden_for(model, path, tmp_path))
    g.outputs["output_0"] = g.outputs["output_0"] + 0.05
    report = verify(path, golden=g)
    assert (
        not report.passed
        and report.reference == "golden"
        and report.worst_output["max_abs"] == pytest.approx(0.05, rel=1e-3)
    )


def test_report_paths_in_missing_folders_write_nothing(deeplog, tmp_path):
    model, path = deeplog
    report = verify(path, model=model, config=VerifyConfig(sample_count=2, sweep=False))
    with pytest.raises(ConfigError, match="does not exist"):
        report.write_json(tmp_path / "missing" / "report.json")
    with pytest.raises(ConfigError, match="does not exist"):
        report.write_html(tmp_path / "missing" / "report.html")
    assert not (tmp_path / "missing").exists()
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(deeplog, tmp_path):
    model, path = deeplog
    with pytest.raises(ConfigError, match="nothing to verify against"):
        verify(path)
    with pytest.raises(ConfigError, match="unknown mode"):
        VerifyConfig(mode="quick")
    with pytest.raises(ConfigError, match=r"do not match the ONNX inputs \['input_sequence'\]"):
        verify(path, model=model, inputs=["tokens:2x10:int64"])
    with pytest.raises(CheckError, match="does not exist"):
        verify(tmp_path / "missing.onnx", model=model)


def test_detection_task_with_the_shared_nms(tmp_path):
    import torch
    from torch import nn

    import onnxship

    class TinyDetector(nn.Module):
        """Raw head [N, K, 4 + C]: cx, cy, w, h in pixels, then class scores."""

        def __init__(self, anchors: int = 16, classes: int = 3) -> None:
            super().__init__()
            self.k, self.c = anchors, classes
            self.body = nn.Sequential(
                nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten()
            )
            self.head = nn.Linear(32, anchors * (4 + classes))

        def forward(self, image):
            y = self.head(self.body(image)).view(image.shape[0], self.k, 4 + self.c)
            box = torch.sigmoid(y[..., :4]) * torch.tensor([64.0, 64.0, 24.0, 24.0])
            return torch.cat([box, torch.sigmoid(y[..., 4:])], dim=-1)

    torch.manual_seed(0)
    model = TinyDetector()
    res = onnxship.export(
        model,
        inputs=["image:batch=2..8 x 3 x 32 x 32:float32"],
        out=tmp_path,
        name="det",
        strategy="torchscript",
    )
    report = verify(
        res.path,
        model=model,
        config=VerifyConfig(task="detection", box_format="cxcywh", sample_count=16, sweep=False),
    )
    d = report.to_dict()
    _validate(d)
    assert report.passed, report.failure_reason
    t = d["task_metrics"]
    assert t["task"] == "detection" and t["map_0_5_delta"] == 0.0 and t["map_0_5_0_95_delta"] == 0.0
    assert t["matched"] == t["detections_reference"] > 0 and t["iou_delta_p95"] < 1e-4
    assert d["postprocess"] == {
        "nms": {"conf_threshold": 0.3, "iou_threshold": 0.5, "max_detections": 100, "class_agnostic": False},
        "applied_in": "python_common",
    }
    assert d["compare"]["deltas"] == {"map_0_5": 0.0, "map_0_5_0_95": 0.0}


def test_fp16_variant_against_the_fp32_model(tmp_path):
    import torch

    import onnxship
    from onnxship.testing import SmallCNN, randomize_constant_init

    torch.manual_seed(0)
    model = randomize_constant_init(SmallCNN(classes=4))
    res = onnxship.export(
        model,
        inputs=["image:batch=2..8 x 3 x 16 x 16:float32"],
        out=tmp_path,
        name="cnn16",
        strategy="torchscript",
        fp16=True,
    )
    model.float()  # the reference stays fp32; each engine gets the batch in its own dtype
    report = verify(
        res.path,
        model=model,
        inputs=["image:batch=2..8 x 3 x 16 x 16:float32"],
        config=VerifyConfig(precision="fp16", task="classification", sample_count=16),
    )
    assert report.passed, report.failure_reason
    assert report.policy["elementwise"] is None and report.policy["mse_mean"] == 5e-4
    assert report.compare["top1_match_rate"] == 1.0 and report.outputs[0]["cosine_min"] > 0.99


def test_declared_output_dims_that_disagree_are_reported(deeplog, tmp_path):
    import onnx

    model, path = deeplog
    proto = onnx.load(str(path))
    dim = proto.graph.output[0].type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_value = 2  # declare the batch axis of the output static, as buggy exporters do
    bad = tmp_path / "declared.onnx"
    onnx.save(proto, str(bad))
    seen = []
    report = verify(
        bad,
        model=model,
        config=VerifyConfig(
            sample_count=6, batch_size=4, progress=lambda done, total: seen.append((done, total))
        ),
    )
    issues = report.shape_issues["output_dims"]
    assert (
        issues and issues[0]["output"] == "output_0" and issues[0]["axis"] == 0 and issues[0]["declared"] == 2
    )
    assert "VER103" in {d["code"] for d in report.diagnostics}
    assert seen == [(4, 6), (6, 6)]


def test_int8_variant_is_gated_on_task_agreement(deeplog, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model, path = deeplog
    q = tmp_path / "deeplog.int8.onnx"
    quantize_dynamic(str(path), str(q), weight_type=QuantType.QInt8)
    r8 = verify(
        q, model=model, config=VerifyConfig(precision="int8", task="sequence", sample_count=64, sweep=False)
    )
    assert r8.passed, r8.failure_reason
    assert r8.policy["elementwise"] is None and r8.task_metrics["decision_agreement"] >= 0.98
    r32 = verify(
        q, model=model, inputs=None, config=VerifyConfig(precision="fp32", sample_count=64, sweep=False)
    )
    smallest = r32.worst_output["min_passing_atol"]
    assert smallest > 0 and r32.passed is (smallest <= 1e-4)  # quantized weights move the last digits


def test_the_schema_rejects_broken_reports(deeplog):
    jsonschema = pytest.importorskip("jsonschema")
    model, path = deeplog
    good = verify(path, model=model, config=VerifyConfig(sample_count=2, sweep=False)).to_dict()
    validator = jsonschema.Draft202012Validator(load_report_schema())
    validator.validate(good)
    for broken in (
        {k: v for k, v in good.items() if k != "compare"},
        {**good, "schema": "onnxship.verify-report/0"},
        {**good, "compare": {**good["compare"], "mode": "quick"}},
        {**good, "passed": "yes"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(broken)


def test_onnx_without_metadata_gets_specs_from_the_graph(deeplog, tmp_path):
    import onnx

    model, path = deeplog
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    report = verify(bare, model=model, config=VerifyConfig(sample_count=4, sweep=False))
    assert report.passed and report.to_dict()["inputs"][0]["shape"] == ["batch", "seq"]

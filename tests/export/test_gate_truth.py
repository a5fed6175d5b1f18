"""The gate tells the truth: every accepted export is checked here by an independent onnxruntime comparison.

Each inline model is either shipped correct (this file runs PyTorch and a fresh onnxruntime session itself at three
or more shapes, not trusting onnxship's verdict) or refused with the right cause.
"""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import onnxship
from onnxship import ConfigError, ExportError


def _independent_check(model: nn.Module, path, feeds_list, atol=1e-4, rtol=1e-3) -> int:
    """Run PyTorch and a plain onnxruntime session on each feed dict; returns how many shapes agreed."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    for feeds in feeds_list:
        with torch.no_grad():
            want = model(*[torch.from_numpy(feeds[n]) for n in names])
        got = sess.run(None, {n: feeds[n] for n in names})[0]
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want.numpy(), atol=atol, rtol=rtol)
    return len(feeds_list)


class BranchOnData(nn.Module):
    """The issue's example: a Python `if` on a tensor value that tracing freezes."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        h = self.fc(x)
        if x.mean() > -1.0:
            return torch.relu(h) * 2
        return torch.tanh(h) - 1


class NanModel(nn.Module):
    def __init__(self, inf: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.inf = inf

    def forward(self, x):
        h = self.fc(x)
        return h / torch.zeros_like(h).abs() if self.inf else torch.sqrt(-(h.abs() + 1.0))


class SplitBySize(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 12)

    def forward(self, x):
        a, b, c = torch.split(self.fc(x), 4, dim=-1)
        return a * b + c


class SmallCNN(nn.Module):
    """A 3x3 conv without padding: PyTorch itself cannot run 1x1 images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(torch.relu(self.conv(x))).flatten(1)


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 4), nn.Linear(6, 4)

    def forward(self, x, y):
        return self.a(x) + self.b(y)


class SizeFrozen(nn.Module):
    """float(x.shape[1]) is frozen by tracing and by torch.export: only a static export is right."""

    def forward(self, x):
        return x * float(x.shape[1])


@pytest.fixture(scope="module")
def branch_refusal(tmp_path_factory):
    torch.manual_seed(0)
    with pytest.raises(ExportError) as info:
        onnxship.export(
            BranchOnData().eval(),
            {"x": torch.randn(2, 8)},
            dynamic={"x": {0: "batch"}},
            out=tmp_path_factory.mktemp("branch"),
            use_cache=False,
        )
    return info.value


def test_branch_on_data_is_refused_with_the_frozen_line(branch_refusal):
    by_strategy = {c.strategy: c for c in branch_refusal.candidates}
    ts = by_strategy["torchscript"]
    assert ts.outcome == "rejected"
    assert "Python branch on tensor values" in ts.reason and "`if x.mean() > -1.0:`" in ts.reason
    assert "test_gate_truth.py:" in ts.frozen[0]
    assert "values x-3" in ts.reason or "with values" in ts.reason
    assert "torch.cond" in branch_refusal.hint
    # dynamo's real cause, not its "step 1/3 ... Next steps" wrapper
    dyn = by_strategy["dynamo"]
    assert "GuardOnDataDependentSymNode" in dyn.reason and "Next steps" not in dyn.reason
    # a failed candidate keeps its per-shape parity in to_dict (a failed ParityResult is falsy)
    parity = ts.to_dict()["parity"]
    assert parity is not None and any(
        c["kind"] == "values" and c["status"] == "failed" for c in parity["checks"]
    )


def test_verify_uses_the_same_value_sweep(tmp_path):
    """A frozen trace written without the value sweep is caught by verify (and ship, which runs verify)."""
    torch.manual_seed(0)
    model = BranchOnData().eval()
    res = onnxship.export(
        model,
        {"x": torch.randn(2, 8)},
        dynamic={"x": {0: "batch"}},
        out=tmp_path,
        strategy="torchscript",
        value_sweep=False,
    )
    report = onnxship.verify(res.path, model=model)
    assert not report.passed
    assert "value variant" in report.failure_reason
    values = [g for g in report.shapes if g["kind"] == "values"]
    assert values and any(g["status"] == "failed" for g in values)
    jsonschema = pytest.importorskip("jsonschema")
    from onnxship.verify._report import load_report_schema

    jsonschema.validate(report.to_dict(), load_report_schema())


@pytest.mark.parametrize("inf", [False, True], ids=["nan", "inf"])
def test_nonfinite_outputs_fail_with_where(tmp_path, inf):
    torch.manual_seed(0)
    with pytest.raises(ExportError) as info:
        onnxship.export(
            NanModel(inf).eval(), inputs=["x:batch=2 x 4:float32"], out=tmp_path, strategy="torchscript"
        )
    reason = info.value.candidates[0].reason
    assert "output 'output_0' has" in reason and ("NaN" in reason) and "sample 0" in reason
    assert "shape [2, 3]" in reason and "--allow-nonfinite" in reason


def test_nonfinite_allowed_explicitly_and_counted(tmp_path):
    torch.manual_seed(0)
    model = NanModel().eval()
    res = onnxship.export(
        model, inputs=["x:batch=2 x 4:float32"], out=tmp_path, strategy="torchscript", allow_nonfinite=True
    )
    strict = onnxship.verify(res.path, model=model, sample_count=4, synthetic_count=4)
    assert not strict.passed and "NaN/Inf" in strict.failure_reason
    out = strict.to_dict()["outputs"][0]
    assert out["nonfinite_reference"] > 0 and out["nonfinite_candidate"] > 0
    assert strict.to_dict()["evidence"]["nonfinite"]["output_0"]["reference"] == out["nonfinite_reference"]
    html = strict.write_html(tmp_path / "report.html").read_text()
    assert "NaN/Inf in the reference" in html and "synthetic inputs" in html
    loose = onnxship.verify(res.path, model=model, sample_count=4, synthetic_count=4, allow_nonfinite=True)
    assert loose.passed


def test_dynamo_opset17_split_retries_and_reports_the_file_opset(tmp_path):
    torch.manual_seed(0)
    model = SplitBySize().eval()
    res = onnxship.export(
        model,
        {"x": torch.randn(2, 8)},
        dynamic={"x": {0: "batch"}},
        out=tmp_path,
        strategy="dynamo",
        opsets=(17,),
        use_cache=False,
    )
    file_opset = next(o.version for o in onnx.load(str(res.path)).opset_import if o.domain in ("", "ai.onnx"))
    assert res.opset == file_opset == res.metadata["opset"] == 18
    first = res.candidates[0]
    assert first.outcome == "rejected" and "retrying at opset 18" in first.reason
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((b, 8)).astype(np.float32)} for b in (1, 3, 7)]
    assert _independent_check(model, res.path, feeds) == 3


def test_default_export_of_clean_multi_input_model_prints_no_warnings(tmp_path):
    torch.manual_seed(0)
    model = TwoInputs().eval()
    res = onnxship.export(
        model,
        {"x": torch.randn(2, 8), "y": torch.randn(2, 6)},
        dynamic={"x": {0: "batch"}, "y": {0: "batch"}},
        out=tmp_path,
        strategy="dynamo",
        use_cache=False,
    )
    loud = [d for d in res.diagnostics if d.severity in ("error", "warning", "info")]
    assert loud == [], [(d.code, d.message) for d in loud]
    assert res.opset == 18
    rng = np.random.default_rng(1)
    feeds = [
        {
            "x": rng.standard_normal((b, 8)).astype(np.float32),
            "y": rng.standard_normal((b, 6)).astype(np.float32),
        }
        for b in (1, 4, 9)
    ]
    assert _independent_check(model, res.path, feeds) == 3


def test_cnn_minimum_size_is_not_claimed(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    res = onnxship.export(
        model, inputs=["image:batch=2 x 3 x h=8..16 x w=8..16:float32"], out=tmp_path, strategy="torchscript"
    )
    assert "not runnable in PyTorch" in res.sweep_summary
    assert "verified" in res.sweep_summary
    meta = json.loads(res.meta_path.read_text())
    dims = {d["name"]: d for d in meta["inputs"][0]["dims"] if d["name"]}
    smallest = min(p["h"] for p in meta["verified_dims"])
    assert dims["h"]["min"] == smallest >= 3 and dims["w"]["min"] >= 3
    assert dims["batch"]["min"] == 1  # the batch axis is verified on its own when h/w points fail
    rng = np.random.default_rng(2)
    feeds = [
        {"image": rng.standard_normal((b, 3, s, s)).astype(np.float32)} for b, s in ((1, 8), (3, 11), (2, 16))
    ]
    assert _independent_check(model, res.path, feeds) == 3


def test_allow_static_exports_at_the_sample_shape(tmp_path):
    torch.manual_seed(0)
    model = SizeFrozen().eval()
    res = onnxship.export(
        model, inputs=["x:batch=1 x seq=8:float32"], out=tmp_path, strategy="torchscript", allow_static=True
    )
    assert res.static
    assert onnxship.inspect_model(res.path).inputs[0]["shape"] == [1, 8]  # batch 1 stays 1
    meta = json.loads(res.meta_path.read_text())
    assert meta["static"] is True and all(d["name"] is None for d in meta["inputs"][0]["dims"])
    assert res.accepted.gate is not None and res.accepted.gate["passed"]  # the same precision checks ran
    rng = np.random.default_rng(3)
    feeds = [{"x": rng.standard_normal((1, 8)).astype(np.float32) * s} for s in (1.0, 3.0, -2.0)]
    assert _independent_check(model, res.path, feeds) == 3


class BagWithStarts(nn.Module):
    """EmbeddingBag offsets under a name no heuristic knows: random values are not valid offsets."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(20, 4))

    def forward(self, ids, starts):
        return nn.functional.embedding_bag(ids, self.w, starts, mode="mean")


def test_invalid_generated_inputs_blame_the_checks_not_the_model(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(ExportError) as info:
        onnxship.export(
            BagWithStarts().eval(),
            {"ids": torch.randint(0, 20, (6,)), "starts": torch.tensor([0, 3])},
            dynamic={"ids": {0: "n"}, "starts": {0: "b"}},
            out=tmp_path,
            strategy="torchscript",
        )
    reason = info.value.candidates[0].reason
    assert "could not make valid inputs for shape" in reason and "give a value kind or --data" in reason
    assert "not verified" in reason and "parity check failed" not in reason
    assert "fix the model" not in info.value.hint and "not found wrong" in info.value.hint


def test_verify_says_its_own_inputs_are_invalid(tmp_path):
    torch.manual_seed(0)
    model = BagWithStarts().eval()
    res = onnxship.export(
        model,
        {"ids": torch.randint(0, 20, (6,)), "starts": torch.tensor([0, 3])},
        dynamic={"ids": {0: "n"}, "starts": {0: "b"}},
        out=tmp_path,
        strategy="torchscript",
        verify=False,  # only to get a file; the gate itself is what is tested here
    )
    with pytest.raises(ConfigError, match="could not make valid inputs") as info:
        onnxship.verify(res.path, model=model, sample_count=8, synthetic_count=8)
    assert "--data" in info.value.hint and "not found wrong" in info.value.hint


def test_bfloat16_refused_up_front(tmp_path):
    with pytest.raises(ConfigError, match="bfloat16"):
        onnxship.export(nn.Linear(4, 2).eval(), torch.randn(2, 4, dtype=torch.bfloat16), out=tmp_path)
    assert not any(tmp_path.iterdir())


def test_half_model_gets_the_fp16_gate(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4)).eval().half()
    res = onnxship.export(model, inputs=["x:batch=2 x 8:float32"], out=tmp_path, strategy="torchscript")
    assert res.metadata["precision"] == "fp16"
    assert next(model.parameters()).dtype == torch.float16  # the caller's model is untouched


def test_int8_variant_verify_reads_precision_from_metadata(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    res = onnxship.export(model, inputs=["x:batch=4 x 16:float32"], out=tmp_path, strategy="torchscript")
    opt = onnxship.optimize(
        res.path,
        onnxship.OptimizeConfig(variants=("int8-dynamic", "int8-static"), out_dir=tmp_path / "v"),
        model=model,
    )
    for variant in opt.variants:
        assert variant.path is not None, variant.reason
        report = onnxship.verify(variant.path, model=model, sample_count=8, synthetic_count=8)
        assert report.precision == "int8"
        assert "precision int8 read from the file's metadata" in (report.compare["notes"] or "")
        weak = " ".join(report.to_dict()["evidence"]["weak"])
        assert "inputs are synthetic" in weak
        assert ("INT8 calibration used synthetic data" in weak) == (variant.variant == "int8-static")


def test_classification_class_coverage_is_reported(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 12)).eval()
    with torch.no_grad():
        model[0].bias += torch.tensor([50.0] + [0.0] * 11)  # class 0 always wins
    res = onnxship.export(model, inputs=["x:batch=4 x 8:float32"], out=tmp_path, strategy="torchscript")
    report = onnxship.verify(res.path, model=model, task="classification", sample_count=8, synthetic_count=8)
    cov = report.to_dict()["evidence"]["class_coverage"]
    assert cov["covered"] == 1 and cov["classes"] == 12 and cov["weak"]
    assert "reference top-1 covered 1 of 12 classes: weak evidence" in cov["text"]
    assert any(d["code"] == "VER111" for d in report.diagnostics)
    assert report.to_dict()["evidence"]["synthetic"] is True


def test_doctor_export_log_finds_the_root_cause(tmp_path):
    from onnxship.doctor import explain_export_log

    log = tmp_path / "export.log"
    log.write_text(
        "Traceback (most recent call last):\n"
        '  File "x.py", line 3, in forward\n'
        "RuntimeError: shape '[2, 10, 3]' is invalid for input of size 40\n"
        "\n"
        "The above exception was the direct cause of the following exception:\n"
        "\n"
        "Traceback (most recent call last):\n"
        '  File "export.py", line 9, in <module>\n'
        "torch.onnx._internal.exporter._errors.ConversionError: Failed to decompose the FX graph for ONNX "
        "compatibility. This is step 2/3 of exporting the model to ONNX. Next steps:\n"
    )
    res = explain_export_log(log)
    cause = next(c for c in res.codes if c.code == "ONX121")
    assert "is invalid for input of size 40" in cause.examples[0]


_CLI_MODELS = """
import torch
from torch import nn


class NanNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return torch.sqrt(-(self.fc(x).abs() + 1.0))


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


def nan_net():
    torch.manual_seed(0)
    return NanNet()


def cnn():
    torch.manual_seed(0)
    return Cnn()
"""


def test_cli_nonfinite_and_not_runnable_wording(tmp_path):
    from typer.testing import CliRunner

    from onnxship.cli import app

    (tmp_path / "m.py").write_text(_CLI_MODELS)
    runner = CliRunner()
    spec = f"{tmp_path / 'm.py'}:nan_net"
    args = [
        "export",
        "-m",
        spec,
        "-i",
        "x:batch=2 x 4:float32",
        "--strategy",
        "torchscript",
        "--name",
        "nan_net",
    ]
    r = runner.invoke(app, [*args, "-o", str(tmp_path / "strict")])
    assert r.exit_code == 1 and "NaN" in r.output and "--allow-nonfinite" in r.output
    assert not (tmp_path / "strict" / "nan_net.onnx").exists()
    r = runner.invoke(app, [*args, "-o", str(tmp_path / "loose"), "--allow-nonfinite", "--json"])
    assert r.exit_code == 0, r.output
    onnx_file = tmp_path / "loose" / "nan_net.onnx"
    r = runner.invoke(app, ["verify", str(onnx_file), "-m", spec, "-n", "4"])
    assert r.exit_code == 1 and "NaN/Inf" in r.output
    r = runner.invoke(app, ["verify", str(onnx_file), "-m", spec, "-n", "4", "--allow-nonfinite"])
    assert r.exit_code == 0, r.output
    assert "non-finite:" in r.output and "evidence:" in r.output and "synthetic" in r.output

    cnn = f"{tmp_path / 'm.py'}:cnn"
    r = runner.invoke(
        app,
        ["export", "-m", cnn, "-i", "x:batch=2 x 3 x h=8..16 x w=8..16:float32", "--strategy", "torchscript"]
        + ["-o", str(tmp_path / "cnn")],
    )
    assert r.exit_code == 0, r.output
    assert re.search(
        r"\d+ of \d+ sweep shapes verified, \d+ not runnable in PyTorch", " ".join(r.output.split())
    )
    r = runner.invoke(
        app,
        ["export", "-m", cnn, "-i", "x:batch=2 x 3 x h=8..16 x w=8..16:float32", "--json"]
        + ["--strategy", "torchscript", "-o", str(tmp_path / "cnn2")],
    )
    data = json.loads(r.output)
    assert data["opset"] == 17 and "not runnable in PyTorch" in data["sweep_summary"]


def test_verify_names_an_unsupported_operator(tmp_path):
    from onnx import TensorProto, helper

    from onnxship import CheckError

    graph = helper.make_graph(
        [helper.make_node("FancyOp", ["x"], ["y"], domain="com.example")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    path = tmp_path / "custom.onnx"
    onnx.save(
        helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
        ),
        str(path),
    )
    with pytest.raises(CheckError) as info:
        onnxship.verify(path, model=nn.Identity())
    assert "com.example:FancyOp" in info.value.hint and "custom-op" in info.value.hint
    assert "--allow-static" not in info.value.hint


def test_trace_pytorch_refuses_bfloat16_before_training():
    pytest.importorskip("mlflow")
    from onnxship.publish import trace_pytorch

    with pytest.raises(ConfigError, match="bfloat16"):
        trace_pytorch("bf16-model", torch.randn(2, 4, dtype=torch.bfloat16))

"""`onnxship verify` through the CLI: exit codes 0/1/2, failure messages, reports, golden without torch, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from onnxship.cli import app

EXAMPLE = "examples/deeplog/model.py:build_model"

CNN_FACTORY = """
import torch
from onnxship.testing import SmallCNN, randomize_constant_init


def build_model():
    torch.manual_seed(0)
    return randomize_constant_init(SmallCNN(classes=4))
"""


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def deeplog(tmp_path_factory, root) -> dict:
    """examples/deeplog exported once (TorchScript), plus a golden file of its PyTorch outputs."""
    import onnxship
    from onnxship.spec import parse_model_spec
    from onnxship.verify import write_golden

    out = tmp_path_factory.mktemp("verify-cli")
    spec = parse_model_spec(str(root / EXAMPLE))
    result = onnxship.export(
        spec,
        inputs=["input_sequence:batch=2..16 x seq=10..32:int64:0..30"],
        out=out,
        name="deeplog",
        strategy="torchscript",
    )
    model = spec.load().model
    import torch

    x = np.random.default_rng(0).integers(0, 30, (6, 10)).astype(np.int64)
    with torch.inference_mode():
        y = model(torch.from_numpy(x)).numpy()
    golden = write_golden(
        out / "golden.npz",
        {"input_sequence": x},
        {result.metadata["output_names"][0]: y},
        {"model_name": "deeplog"},
    )
    return {
        "onnx": result.path,
        "out": out,
        "model": str(root / EXAMPLE),
        "golden": golden,
        "x": x,
        "y": y,
        "output": result.metadata["output_names"][0],
        "state": model.state_dict(),
    }


def _invoke(runner: CliRunner, *args: str):
    return runner.invoke(app, ["verify", *[str(a) for a in args]])


def test_verify_passes_and_writes_valid_reports(runner, deeplog, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    from onnxship.verify._report import load_report_schema

    report, html = tmp_path / "report.json", tmp_path / "report.html"
    r = _invoke(
        runner,
        deeplog["onnx"],
        "--model",
        deeplog["model"],
        "--task",
        "sequence",
        "--report",
        report,
        "--html",
        html,
    )
    assert r.exit_code == 0, r.output
    assert "PASSED" in r.output and "task sequence" in r.output
    data = json.loads(report.read_text())
    jsonschema.validate(data, load_report_schema())
    assert data["passed"] is True and data["task_metrics"]["task"] == "sequence"
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and 'class="verdict pass"' in page


def test_verify_json_output(runner, deeplog):
    r = _invoke(runner, deeplog["onnx"], "--model", deeplog["model"], "--json", "--no-sweep", "-n", "8")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["passed"] is True and data["compare"]["mode"] == "smoke"


def test_failed_gate_exits_1_and_names_worst_output_and_tolerance(runner, deeplog, tmp_path):
    import torch

    state = {k: v.clone() for k, v in deeplog["state"].items()}
    state["fc.bias"] += 0.05  # the ONNX file no longer matches these weights
    ckpt = tmp_path / "other.pt"
    torch.save(state, ckpt)
    report = tmp_path / "report.json"
    r = _invoke(
        runner,
        deeplog["onnx"],
        "--model",
        deeplog["model"],
        "--checkpoint",
        ckpt,
        "--report",
        report,
        "--no-sweep",
    )
    assert r.exit_code == 1, r.output
    assert "verification failed" in r.output
    assert f"worst output '{deeplog['output']}'" in r.output
    assert "smallest passing tolerance: atol=0.05" in r.output
    assert "likely causes" in r.output
    assert "Traceback" not in r.output
    data = json.loads(report.read_text())  # the failing report is still written (it explains the failure)
    assert data["passed"] is False and data["failure_reason"]


def test_failed_gate_passes_with_the_reported_tolerance(runner, deeplog, tmp_path):
    import torch

    state = {k: v.clone() for k, v in deeplog["state"].items()}
    state["fc.bias"] += 0.05
    ckpt = tmp_path / "other.pt"
    torch.save(state, ckpt)
    r = _invoke(
        runner,
        deeplog["onnx"],
        "--model",
        deeplog["model"],
        "--checkpoint",
        ckpt,
        "--no-sweep",
        "--tolerance",
        f"{deeplog['output']}:atol=0.06,rtol=0",
        "--threshold",
        "mse_mean=0.01",
        "--threshold",
        "mse_p99=0.01",
    )
    assert r.exit_code == 0, r.output


def test_golden_needs_no_torch(deeplog, tmp_path):
    """`verify --golden` in a fresh interpreter where importing torch fails."""
    report = tmp_path / "golden-report.json"
    code = (
        "import sys\nsys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
        "from typer.testing import CliRunner\nfrom onnxship.cli import app\n"
        f"r = CliRunner().invoke(app, ['verify', {str(deeplog['onnx'])!r}, '--golden', {str(deeplog['golden'])!r}, "
        f"'--report', {str(report)!r}])\n"
        "print(r.output)\nsys.exit(r.exit_code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads(report.read_text())
    assert data["passed"] is True and data["reference"] == "golden"


def test_golden_from_another_model_exits_1(runner, deeplog, tmp_path):
    from onnxship.verify import write_golden

    other = write_golden(
        tmp_path / "other.npz",
        {"image": np.zeros((1, 3, 8, 8), np.float32)},
        {"logits": np.zeros((1, 4), np.float32)},
        {"model_name": "cnn"},
    )
    report = tmp_path / "r.json"
    r = _invoke(runner, deeplog["onnx"], "--golden", other, "--report", report)
    assert r.exit_code == 1, r.output
    assert "golden" in r.output and "Traceback" not in r.output
    assert not report.exists()


def test_report_in_missing_folder_exits_1_before_work(runner, deeplog, tmp_path):
    target = tmp_path / "missing" / "report.json"
    r = _invoke(runner, deeplog["onnx"], "--golden", deeplog["golden"], "--report", target)
    assert r.exit_code == 1, r.output
    assert "does not exist" in r.output and not target.parent.exists()


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"tokens": np.zeros((4, 10), np.int64)}, "input_sequence"),  # wrong input name
        ({"input_sequence": np.zeros((4, 10), np.float32)}, "is float32 but the model expects int64"),
    ],
)
def test_npz_data_that_does_not_fit_exits_1(runner, deeplog, tmp_path, arrays, message):
    data = tmp_path / "data.npz"
    np.savez(data, **arrays)
    report = tmp_path / "r.json"
    r = _invoke(runner, deeplog["onnx"], "--model", deeplog["model"], "--data", data, "--report", report)
    assert r.exit_code == 1, r.output
    assert message in r.output and "Traceback" not in r.output
    assert not report.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mode", "everything"], "--mode"),
        (["--precision", "fp8"], "--precision"),
        (["--tolerance", "atol=1e-3"], "--tolerance"),
        (["--hardness-bins", "0,2"], "--hardness-bins"),
    ],
)
def test_usage_errors_exit_2(runner, deeplog, args, message):
    r = _invoke(runner, deeplog["onnx"], "--golden", deeplog["golden"], *args)
    assert r.exit_code == 2, r.output
    assert message in r.output


def test_no_reference_is_a_usage_error(runner, deeplog):
    r = _invoke(runner, deeplog["onnx"])
    assert r.exit_code == 2 and "--golden" in r.output


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> dict:
    """SmallCNN (random BatchNorm statistics) exported once, and an image folder of 3 classes x 3 PNGs."""
    from PIL import Image

    import onnxship

    root = tmp_path_factory.mktemp("cnn")
    factory = root / "cnn.py"
    factory.write_text(CNN_FACTORY)
    result = onnxship.export(
        f"{factory}:build_model",
        inputs=["image:batch=2..8 x 3 x 32 x 32:float32"],
        out=root,
        name="cnn",
        strategy="torchscript",
    )
    rng = np.random.default_rng(0)
    images = root / "images"
    for c in ("cat", "dog", "owl"):
        (images / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(images / c / f"{i}.png")
    return {"onnx": result.path, "model": f"{factory}:build_model", "images": images, "root": root}


@pytest.mark.component
def test_image_folder_coverage_report_renders(runner, cnn, tmp_path, chromium_screenshot):
    jsonschema = pytest.importorskip("jsonschema")
    from onnxship.verify._report import load_report_schema

    report, html = tmp_path / "report.json", tmp_path / "report.html"
    r = _invoke(
        runner,
        cnn["onnx"],
        "--model",
        cnn["model"],
        "--data",
        cnn["images"],
        "--mode",
        "coverage",
        "--per-class-k",
        "2",
        "--min-classes",
        "3",
        "--task",
        "classification",
        "--report",
        report,
        "--html",
        html,
    )
    assert r.exit_code == 0, r.output
    data = json.loads(report.read_text())
    jsonschema.validate(data, load_report_schema())
    assert data["compare"]["mode"] == "coverage" and data["task_metrics"]["task"] == "classification"
    assert data["compare"]["sampled_classes"] == 3 and data["compare"]["sample_count"] == 6
    # the real report renders in headless chromium without console errors
    assert chromium_screenshot(html, tmp_path / "report.png") == []


def test_empty_image_folder_exits_1(runner, cnn, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _invoke(runner, cnn["onnx"], "--model", cnn["model"], "--data", empty)
    assert r.exit_code == 1, r.output
    assert "no class sub-folders" in r.output

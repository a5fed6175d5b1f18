"""`onnxship infer` / `onnxship bench` through the CLI: exit codes, tables, JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from onnxship.cli import app

EXAMPLE = "examples/deeplog/model.py:build_model"


@pytest.fixture(scope="module")
def example_export(tmp_path_factory, root):
    """The example DeepLog (seeded inside build_model), so `--model` rebuilds the same weights."""
    import onnxship

    out = tmp_path_factory.mktemp("cli-rt")
    res = onnxship.export(
        str(root / EXAMPLE),
        inputs=["input_sequence:batch=2..16 x seq=10..32:int64:0..30"],
        out=out,
        name="deeplog",
        strategy="torchscript",
    )
    return res.path


def test_bench_table_and_json(example_export, root, tmp_path):
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(
        app,
        [
            "bench",
            str(example_export),
            "--model",
            str(root / EXAMPLE),
            "--batch",
            "1,4",
            "--variants",
            "int8",
            "--warmup",
            "1",
            "--min-runs",
            "3",
            "--min-seconds",
            "0",
            "--threads",
            "1",
            "--json",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "p50" in r.output and "int8" in r.output and "torch" in r.output
    data = json.loads(out.read_text())
    assert {(x["engine"], x["variant"], x["batch"]) for x in data["rows"]} >= {
        ("torch", "fp32", 4),
        ("onnx", "int8-dynamic", 1),
    }
    assert data["variants"]["int8-dynamic"]["gate_passed"] is True


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--batch", "1,x"], "not a comma-separated list"),
        (["--variants", "int3"], "unknown variant"),
        (["--provider", "gpu"], "unknown execution provider"),
        (["--json", "/nonexistent-dir/b.json"], "does not exist"),
    ],
)
def test_bench_usage_errors(example_export, args, msg):
    r = CliRunner().invoke(app, ["bench", str(example_export), *args])
    assert r.exit_code == 2, r.output
    assert msg in r.output and "Traceback" not in r.output


def test_bench_missing_model_is_exit_1(tmp_path):
    r = CliRunner().invoke(app, ["bench", str(tmp_path / "none.onnx"), "--batch", "1"])
    assert r.exit_code == 1 and "does not exist" in r.output


def test_infer_onnx_and_torch_json(example_export, root, tmp_path):
    data = tmp_path / "w.npz"
    np.savez(data, input_sequence=np.random.default_rng(0).integers(0, 30, (5, 10)).astype(np.int64))
    r1 = CliRunner().invoke(app, ["infer", "--model", str(example_export), "--inputs", str(data), "--json"])
    r2 = CliRunner().invoke(
        app,
        [
            "infer",
            str(example_export),
            "--engine",
            "torch",
            "--model",
            str(root / EXAMPLE),
            "--inputs",
            str(data),
            "--out",
            str(tmp_path / "p.json"),
        ],
    )
    assert r1.exit_code == 0, r1.output
    assert r2.exit_code == 0, r2.output
    a = json.loads(r1.output)
    b = json.loads((tmp_path / "p.json").read_text())
    assert a["engine"] == "onnx" and b["engine"] == "torch" and a["samples"] == b["samples"] == 5
    top = [[c for c, _ in p["output_0"]["top"]] for p in a["predictions"]]
    assert top == [[c for c, _ in p["output_0"]["top"]] for p in b["predictions"]]
    assert "torch on" in r2.output and "5 samples" in r2.output


def test_infer_torch_uses_the_model_modules_input_defaults(root):
    r = CliRunner().invoke(
        app, ["infer", "--engine", "torch", "--model", str(root / EXAMPLE), "--samples", "3", "--json"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["samples"] == 3


def test_infer_errors(example_export):
    r = CliRunner().invoke(app, ["infer", str(example_export), "--engine", "torch"])
    assert r.exit_code == 1 and "needs the PyTorch model" in r.output
    r = CliRunner().invoke(app, ["infer", str(example_export), "--batch", "0"])
    assert r.exit_code == 2

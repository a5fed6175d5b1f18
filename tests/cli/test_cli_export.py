"""`onnxship export` / `onnxship inspect` through the CLI: exit codes and messages."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from onnxship.cli import app

EXAMPLE = "examples/deeplog/model.py:build_model"


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, root, deeplog_checkpoint):
    out = tmp_path_factory.mktemp("cli")
    r = CliRunner().invoke(
        app,
        [
            "export",
            "--model",
            str(root / EXAMPLE),
            "--checkpoint",
            str(deeplog_checkpoint),
            "--input",
            "input_sequence:batch=2 x seq=10..32:int64:0..30",
            "--out",
            str(out),
            "--strategy",
            "torchscript",
            "--meta",
            "vocab_size=30",
            "--meta",
            "seq_len=10",
        ],
    )
    assert r.exit_code == 0, r.output
    return out, r.output


def test_export_writes_model_and_prints_candidates(exported):
    out, output = exported
    assert (out / "deeplog.onnx").is_file() and (out / "deeplog.onnx.meta.json").is_file()
    assert "accepted" in output and "sweep shapes verified" in output and "value variants verified" in output
    meta = json.loads((out / "deeplog.onnx.meta.json").read_text())
    assert meta["checkpoint"].endswith("deeplog.pt")
    assert meta["vocab_size"] == 30 and meta["model_type"] == "deeplog"  # from ONNXSHIP_METADATA + --meta
    assert meta["output_names"] == ["predictions"]  # ONNXSHIP_OUTPUT_NAMES


def test_inspect_human_and_json(runner, exported):
    out, _ = exported
    r = runner.invoke(app, ["inspect", str(out / "deeplog.onnx")])
    assert r.exit_code == 0, r.output
    assert "input_sequence" in r.output and "[batch, seq]" in r.output and "torchscript" in r.output
    r = runner.invoke(app, ["inspect", str(out / "deeplog.onnx"), "--json"])
    data = json.loads(r.output)
    assert data["inputs"][0]["shape"] == ["batch", "seq"]
    assert data["metadata"]["exporter"] == "torchscript" and len(data["sha256"]) == 64


def test_default_inputs_from_module(runner, root, tmp_path):
    r = runner.invoke(
        app,
        [
            "export",
            "--model",
            str(root / EXAMPLE),
            "--out",
            str(tmp_path),
            "--strategy",
            "torchscript",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["inputs"][0]["spec"] == "input_sequence:batch=2..64 x seq=10..64:int64:0..30"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--input", "x:2 x four:int64"], 2, "dim 'four' has no size"),
        (["--input", "x:2 x -4:int64"], 2, "cannot read a dim"),
        (["--input", "input_sequence:2x10:int64", "--opset", "99"], 2, "unknown opset 99"),
        (["--input", "input_sequence:2x10:int64", "--strategy", "magic"], 2, "unknown export strategy"),
        (["--input", "input_sequence:2x10:int64", "--meta", "novalue"], 2, "is not key=value"),
    ],
)
def test_usage_errors_exit_2(runner, root, tmp_path, args, code, message):
    r = runner.invoke(app, ["export", "--model", str(root / EXAMPLE), "--out", str(tmp_path), *args])
    assert r.exit_code == code, r.output
    assert message in r.output
    assert "Traceback" not in r.output


def test_user_errors_exit_1_with_one_line_and_hint(runner, tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import torch\ndef build():\n    return torch.nn.Linear(2, 2), 'extra'\n")
    r = runner.invoke(
        app, ["export", "--model", f"{f}:build", "--input", "x:2x2:float32", "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 1
    assert "returned a tuple (Linear, str)" in r.output and "hint:" in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    r = runner.invoke(app, ["export", "--model", f"{tmp_path}/missing.py:build", "--input", "x:2x2:float32"])
    assert r.exit_code == 1 and "does not exist" in r.output


def test_missing_ckpt_and_corrupt_ckpt(runner, root, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 definitely not a zip")
    r = runner.invoke(
        app,
        ["export", "--model", str(root / EXAMPLE), "--checkpoint", str(bad), "--out", str(tmp_path / "o")],
    )
    assert r.exit_code == 1 and "cannot be read" in r.output and "Traceback" not in r.output


def test_inspect_rejects_truncated_and_foreign_files(runner, exported, tmp_path):
    out, _ = exported
    data = (out / "deeplog.onnx").read_bytes()
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(data[: len(data) // 3])
    r = runner.invoke(app, ["inspect", str(trunc)])
    assert r.exit_code == 1 and "not a readable ONNX model" in r.output
    txt = tmp_path / "notes.onnx"
    txt.write_text("hello")
    r = runner.invoke(app, ["inspect", str(txt)])
    assert r.exit_code == 1
    r = runner.invoke(app, ["inspect", str(tmp_path / "nope.onnx")])
    assert r.exit_code == 1 and "does not exist" in r.output

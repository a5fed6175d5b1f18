"""`onnxship doctor train-log` / `export-log` through the CLI: output, --json, --plot, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from onnxship.cli import app


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


def test_train_log_table_and_advice(runner, data):
    r = runner.invoke(
        app, ["doctor", "train-log", str(data / "diverging_start_trainer_stdout.log")], terminal_width=200
    )
    assert r.exit_code == 0, r.output
    for text in (
        "TRN003",
        "TRN005",
        "epoch 0.22",
        "Advice",
        "Clip gradients at max-norm",
        "5 alarm(s)",
        "suggested gradient-clipping max-norm",
    ):
        assert text in r.output


def test_train_log_json(runner, data):
    r = runner.invoke(app, ["doctor", "train-log", str(data / "clean_trainer_state.json"), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["format"] == "trainer-state" and doc["alarms"] == 0 and doc["entries"] == 75
    assert {f["code"] for f in doc["findings"]} == {"TRN101", "TRN102"}
    assert all(
        {"code", "severity", "title", "detail", "advice", "evidence"} <= f.keys() for f in doc["findings"]
    )


def test_train_log_plot_and_format_override(runner, data, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "train.png"
    r = runner.invoke(
        app,
        ["doctor", "train-log", str(data / "clean_cosine.jsonl"), "--plot", str(out), "--format", "jsonl"],
    )
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:4] == b"\x89PNG" and "no alarms" in r.output


def test_fail_on_alarm(runner, data):
    args = ["doctor", "train-log", "--fail-on-alarm"]
    assert runner.invoke(app, [*args, str(data / "diverging_start_trainer_stdout.log")]).exit_code == 1
    assert runner.invoke(app, [*args, str(data / "clean_lightning_metrics.csv")]).exit_code == 0


@pytest.mark.parametrize(
    "name",
    [
        "empty.log",
        "truncated_trainer_state.json",
        "truncated_stdout.log",
        "garbled_metrics.csv",
        "no_metrics.log",
        "does_not_exist.json",
    ],
)
def test_bad_logs_exit_1_without_traceback(runner, data, name):
    r = runner.invoke(app, ["doctor", "train-log", str(data / name)])
    assert r.exit_code == 1
    assert "error:" in r.output and "hint:" in r.output and "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_usage_errors_exit_2(runner, data):
    r = runner.invoke(app, ["doctor", "train-log", str(data / "clean_cosine.jsonl"), "--format", "xml"])
    assert r.exit_code == 2 and "not a training-log format" in r.output
    r = runner.invoke(
        app, ["doctor", "train-log", str(data / "clean_cosine.jsonl"), "--explosion-factor", "0.5"]
    )
    assert r.exit_code == 2


def test_export_log_human_and_json(runner, data):
    r = runner.invoke(
        app, ["doctor", "export-log", str(data / "export_dynamo_datadep.log")], terminal_width=200
    )
    assert r.exit_code == 0, r.output
    assert "ONX108" in r.output and "ONX118" in r.output and "the log holds export errors" in r.output
    r = runner.invoke(app, ["doctor", "export-log", str(data / "export_torchscript.log"), "--json"])
    doc = json.loads(r.output)
    assert doc["counts"]["warning"] == 1 and [c["code"] for c in doc["codes"]] == [
        "ONX101",
        "ONX105",
        "ONX104",
    ]
    r = runner.invoke(app, ["doctor", "export-log", str(data / "empty.log")])
    assert r.exit_code == 1 and "is empty" in r.output


def test_doctor_needs_no_torch(data):
    # a training log is explained without torch/onnxruntime; matplotlib loads only for --plot
    code = (
        "import sys, json\nfrom typer.testing import CliRunner\nfrom onnxship.cli import app\n"
        "for args in (['doctor', '--help'], ['doctor', 'train-log', '--help'],\n"
        f"             ['doctor', 'train-log', {str(data / 'diverging_start_trainer_stdout.log')!r}, '--json'],\n"
        f"             ['doctor', 'export-log', {str(data / 'export_torchscript.log')!r}]):\n"
        "    r = CliRunner().invoke(app, args)\n    assert r.exit_code == 0, (args, r.output)\n"
        "print(json.dumps([m for m in ('torch', 'onnxruntime', 'matplotlib') if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []

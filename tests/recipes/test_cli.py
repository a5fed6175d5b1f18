"""``onnxship recipes deeplog ...``: exit codes and messages (0 ok, 1 error with one red line + hint, 2 usage)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from onnxship.cli import app

runner = CliRunner()


def _text(r) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(r.output.split())


def test_parse_and_build_hdfs(loghub, drain3_available, tmp_path):
    r = runner.invoke(
        app,
        [
            "recipes",
            "deeplog",
            "parse",
            "--log",
            str(loghub / "HDFS_2k.log"),
            "--format",
            "hdfs",
            "--out",
            str(tmp_path / "parsed.parquet"),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["parsed"] == 2000 and res["grouping_accuracy"] >= 0.99
    r = runner.invoke(
        app,
        [
            "recipes",
            "deeplog",
            "build",
            "--parsed",
            str(tmp_path / "parsed.parquet"),
            "--out-dir",
            str(tmp_path),
            "--window",
            "10",
        ],
    )
    assert r.exit_code == 1 and "error:" in r.output and "no block session is longer" in _text(r)
    assert "hint:" in r.output and "Traceback" not in r.output
    r = runner.invoke(
        app,
        [
            "recipes",
            "deeplog",
            "build",
            "--parsed",
            str(tmp_path / "parsed.parquet"),
            "--out-dir",
            str(tmp_path),
            "--window",
            "5",
            "--session",
            "stream",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "1995 windows of 5" in _text(r) and (tmp_path / "vocab.json").is_file()


def test_usage_errors(tmp_path):
    r = runner.invoke(app, ["recipes", "deeplog", "parse", "--log", "x.log", "--format", "syslog"])
    assert r.exit_code == 2 and "unknown log format 'syslog'" in _text(r) and "hdfs, bgl" in _text(r)
    r = runner.invoke(app, ["recipes", "deeplog", "build", "--parsed", "p.parquet", "--window", "0"])
    assert r.exit_code == 2 and "--window 0" in r.output
    r = runner.invoke(app, ["recipes", "deeplog", "detect", "--release", str(tmp_path)])
    assert r.exit_code == 2  # --parsed is required


def test_ship_refuses_id_keyed_vocab(bgl_pipeline, tmp_path):
    n = bgl_pipeline.build.vocab_size
    bad = tmp_path / "vocab.json"
    bad.write_text(json.dumps({str(i + 1): i for i in range(n)}))
    r = runner.invoke(
        app,
        [
            "recipes",
            "deeplog",
            "ship",
            "--model",
            str(bgl_pipeline.train.checkpoint),
            "--vocab",
            str(bad),
            "--releases",
            str(tmp_path / "releases"),
            "--strategy",
            "torchscript",
        ],
    )
    assert r.exit_code == 1, r.output
    assert "keys are ids" in _text(r) and "hint:" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "releases").exists() or not any((tmp_path / "releases").rglob("*.onnx"))


def test_detect_cli_json(bgl_pipeline):
    r = runner.invoke(
        app,
        [
            "recipes",
            "deeplog",
            "detect",
            "--release",
            str(bgl_pipeline.work / "releases/deeplog/latest"),
            "--parsed",
            str(bgl_pipeline.work / "parsed.parquet"),
            "--no-compare-torch",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["anomalies"] == bgl_pipeline.detect.anomalies and res["torch"] is None
    assert res["metrics"] == bgl_pipeline.detect.metrics


def test_detect_cli_table(bgl_pipeline):
    r = runner.invoke(
        app,
        [
            "recipes",
            "deeplog",
            "detect",
            "--release",
            str(bgl_pipeline.work / "releases/deeplog/latest"),
            "--parsed",
            str(bgl_pipeline.work / "parsed.parquet"),
            "--top-g",
            "5",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "onnxruntime" in r.output and "pytorch" in r.output
    assert "top-5 decision agreement 100.00%" in _text(r)

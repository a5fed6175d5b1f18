"""`onnxship optimize` through the CLI: kept variants exit 0, a rejected one exits 1 with its reason."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from onnxship.cli import app


def test_optimize_keeps_and_reports(deeplog_export, tmp_path):
    _, result = deeplog_export
    r = CliRunner().invoke(
        app,
        [
            "optimize",
            str(result.path),
            "--quantize",
            "int8-dynamic",
            "--fp16",
            "--simplify",
            "--out-dir",
            str(tmp_path),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "kept" in r.output and "sequence" in r.output
    assert (tmp_path / "deeplog.int8-dynamic.onnx").is_file() and (tmp_path / "deeplog.fp16.onnx").is_file()
    report = json.loads((tmp_path / "deeplog.optimize.json").read_text())
    assert [v["variant"] for v in report["variants"]] == ["int8-dynamic", "fp16"]
    assert all(v["passes"][0] == "simplify" for v in report["variants"])


def test_threshold_flag_relaxes_the_gate(outlier_export, tmp_path):
    _, result = outlier_export
    r = CliRunner().invoke(
        app,
        [
            "optimize",
            str(result.path),
            "-q",
            "int8-dynamic",
            "--no-exclude-sensitive",
            "--threshold",
            "top1_mismatch_rate=1.0",
            "--out-dir",
            str(tmp_path),
        ],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "outlier.int8-dynamic.onnx").is_file()


def test_rejected_variant_exits_1_with_reason(outlier_export, tmp_path):
    _, result = outlier_export
    r = CliRunner().invoke(
        app,
        [
            "optimize",
            str(result.path),
            "-q",
            "int8-dynamic",
            "--no-exclude-sensitive",
            "--out-dir",
            str(tmp_path),
            "--json",
        ],
    )
    assert r.exit_code == 1
    assert "failed their gate and were not kept" in r.output and "top-1 mismatch" in r.output
    assert not (tmp_path / "outlier.int8-dynamic.onnx").exists()


@pytest.mark.parametrize(
    "args,msg",
    [
        ([], "nothing to build"),
        (["-q", "int4"], "unknown variant"),
        (["-q", "int8", "--task", "vision"], "task 'vision'"),
        (["-q", "int8", "--threshold", "speed=2"], "unknown gate threshold"),
    ],
)
def test_usage_errors(deeplog_export, args, msg):
    _, result = deeplog_export
    r = CliRunner().invoke(app, ["optimize", str(result.path), *args])
    assert r.exit_code == 2, r.output
    assert msg in r.output

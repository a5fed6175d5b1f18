"""Progress stages: one plain line per stage with its time off a terminal, torch's own stage prints turned into
stages, silence without a reporter and under --json."""

from __future__ import annotations

import io
import re

import pytest

from onnxship import _progress


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_one_line_per_stage_with_its_time():
    out = io.StringIO()
    with _progress.reporting(_progress.LineReporter(out)):
        with _progress.stage("dynamo: torch.export"):
            pass
        with _progress.stage("verifying shape", total=3) as s:
            for dims in ("batch=1", "batch=2", "batch=64"):
                s.advance(detail=dims)
    assert len(_lines(out)) == 2
    assert re.fullmatch(r"· dynamo: torch\.export  \d+\.\d s", _lines(out)[0])
    assert re.fullmatch(r"· verifying shape 3/3  batch=64  \d+\.\d s", _lines(out)[1])


def test_a_failed_stage_says_so_and_the_error_goes_on():
    out = io.StringIO()
    with (
        _progress.reporting(_progress.LineReporter(out)),
        pytest.raises(ValueError),
        _progress.stage("int8: node sensitivity", total=4) as s,
    ):
        s.advance()
        raise ValueError("boom")
    assert _lines(out)[0].endswith("failed") and "1/4" in _lines(out)[0]


def test_long_counted_stages_report_while_running(monkeypatch):
    out = io.StringIO()
    now = [0.0]
    monkeypatch.setattr(_progress.time, "perf_counter", lambda: now[0])
    with (
        _progress.reporting(_progress.LineReporter(out, every=5.0)),
        _progress.stage("deeplog: training epoch", total=3) as s,
    ):
        for t, loss in ((6.0, "loss 2.1"), (6.1, "loss 1.2"), (13.0, "loss 0.7")):
            now[0] = t
            s.advance(detail=loss)  # a line at t=6 and t=13; t=6.1 is too soon after the last one
    lines = _lines(out)
    assert [ln.split("  ")[0] for ln in lines] == [
        "· deeplog: training epoch 1/3",
        "· deeplog: training epoch 3/3",
        "· deeplog: training epoch 3/3",
    ]
    assert lines[-1].endswith("13.0 s")


def test_silent_without_a_reporter(capsys):
    with _progress.stage("anything") as s:
        s.advance(detail="x")
    assert capsys.readouterr() == ("", "")


def test_torch_stage_prints_become_stages():
    out = io.StringIO()
    with _progress.reporting(_progress.LineReporter(out)):
        stream = _progress.StageStream("dynamo")
        stream.write(
            "[torch.onnx] Obtain model graph for `M([...]` with `torch.export.export(..., strict=False)`...\n"
        )
        stream.write(
            "[torch.onnx] Obtain model graph for `M([...]` with `torch.export.export(..., strict=False)`... ✅\n"
        )
        stream.write("[torch.onnx] Run decomposition...\n[torch.onnx] Run decomposition... ✅\n")
        stream.write("[torch.onnx] Translate the graph into ONNX...\n")
        stream.write("some other print\n")
        stream.close_stages()  # the exporter raised during translation
    assert "some other print" in stream.getvalue()  # the capture still has everything
    labels = [ln.split("  ")[0] for ln in _lines(out)]
    assert labels == ["· dynamo: torch.export", "· dynamo: decomposition", "· dynamo: translation"]
    assert _lines(out)[2].endswith("failed")


@pytest.mark.slow
def test_cli_export_reports_its_stages_and_json_stays_clean(tmp_path, deeplog_checkpoint):
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    from onnxship.cli import app

    model = str(Path(__file__).parents[1] / "examples/deeplog/model.py") + ":build_model"
    args = ["export", "--model", model, "--checkpoint", str(deeplog_checkpoint), "--strategy", "torchscript"]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    stage_lines = [ln for ln in r.stderr.splitlines() if ln.startswith("· ")]
    assert all(re.fullmatch(r"· .+  \d+\.\d s( +failed)?", ln) for ln in stage_lines), stage_lines

    seen = io.StringIO()  # every stage, however quick
    with _progress.reporting(_progress.LineReporter(seen)):
        r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    labels = [ln.split("  ")[0] for ln in _lines(seen)]
    assert len(labels) == 2 and labels[0] == "· torchscript/opset17: export", labels
    assert re.fullmatch(r"· verifying shape (\d+)/\1", labels[1]), labels  # every sweep shape counted

    with _progress.reporting(_progress.LineReporter(seen)):
        r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "c"), "--json"])
    assert r.exit_code == 0 and "· " not in r.output
    json.loads(r.output)
    assert len(_lines(seen)) == 2  # --json: no stage reported

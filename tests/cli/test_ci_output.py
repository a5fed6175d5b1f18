"""Output that survives CI logs: export, verify, optimize and ship with stdout piped at 80 columns.

Piped output is not a terminal: tables print as plain aligned lines (no box drawing), nothing is wrapped or cut, so a
number is never split across lines ("1.04e-0" / "7") or truncated ("163.9…"). The numbers printed are the numbers
in the JSON report.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = str(ROOT / "examples/deeplog/model.py") + ":build_model"
_BOX = re.compile(r"[│┃┏┓┗┛━─╭╮╰╯┡┩╇]")
_CUT_NUMBER = re.compile(r"\d\.?\d*…")
# a digest or a release name ending in a short one (deeplog-20261130-160818-b96645e): hex, not a cut number
_DIGEST = re.compile(r"(?:.*[-_/])?[0-9a-f]{7,64}")
_SPLIT_AT_END = re.compile(r"(?:\d\.|\de[-+]?|\de-0)$")  # a line ending inside a number


def _run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(ROOT / "src")}
    env.pop("FORCE_COLOR", None)
    proc = subprocess.run(
        [sys.executable, "-c", "from onnxship.cli import main; main()", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"onnxship {' '.join(args)}:\n{proc.stdout}"
    return proc.stdout


def _check_log(text: str) -> None:
    assert not _BOX.search(text), f"a table drawn with box characters in a piped log:\n{text}"
    assert not _CUT_NUMBER.search(text), f"a truncated number:\n{text}"
    for line in text.splitlines():
        words = line.split()
        if words and _DIGEST.fullmatch(words[-1]):
            continue  # a hex digest ends the line: one ending in, say, "5e" is not an exponent cut off
        assert not _SPLIT_AT_END.search(line.rstrip()), f"a number split at a line end: {line!r}"


@pytest.fixture(scope="module")
def work(tmp_path_factory, deeplog_checkpoint) -> Path:
    path = tmp_path_factory.mktemp("ci_output")
    (path / "model.pt").write_bytes(deeplog_checkpoint.read_bytes())
    return path


@pytest.mark.slow
def test_piped_80_columns_never_split_a_number(work):
    common = ["--model", MODEL, "--checkpoint", "model.pt"]
    out = _run(["export", *common, "--strategy", "torchscript", "--out", "out"], work)
    _check_log(out)
    row = next(line for line in out.splitlines() if line.startswith("torchscript"))
    assert re.search(r"torchscript\s+17\s+dynamic\s+accepted\s+\d+\.\d\s+\d+\.\d", row), row

    out = _run(["verify", "out/deeplog.onnx", *common, "--task", "sequence", "--report", "report.json"], work)
    _check_log(out)
    report = json.loads((work / "report.json").read_text())
    outputs = report.get("outputs") or report.get("compare", {}).get("outputs")
    assert outputs, sorted(report)
    first = outputs[0] if isinstance(outputs, list) else next(iter(outputs.values()))
    name = first.get("name", "predictions")
    line = next(ln for ln in out.splitlines() if ln.startswith(name))
    assert f"{first['max_abs']:.3g}" in line, (line, first["max_abs"])

    out = _run(["optimize", "out/deeplog.onnx", *common, "--quantize", "int8-dynamic", "--no-simplify"], work)
    _check_log(out)
    out = _run(["ship", *common, "--strategy", "torchscript", "--releases", "releases"], work)
    _check_log(out)

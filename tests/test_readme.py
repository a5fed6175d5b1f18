"""README examples run as tests: every code block preceded by `<!-- test: run -->`."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from onnxship.cli import app

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- test: run -->\s*\n```(\w+)\n(.*?)```", re.DOTALL)


def _blocks() -> list[tuple[str, str]]:
    return BLOCK.findall((ROOT / "README.md").read_text())


def test_readme_has_runnable_examples():
    langs = [lang for lang, _ in _blocks()]
    assert "python" in langs and "bash" in langs


@pytest.fixture()
def workdir(tmp_path, deeplog_checkpoint):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "model.pt").write_bytes(deeplog_checkpoint.read_bytes())
    old = os.getcwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(old)


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_readme_block(index, workdir):
    lang, code = _blocks()[index]
    if lang == "python":
        exec(compile(code, f"README block {index}", "exec"), {"__name__": "__readme__"})
        return
    runner = CliRunner()
    for line in code.replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        argv = shlex.split(line)
        assert argv[0] == "onnxship", line
        r = runner.invoke(app, argv[1:])
        assert r.exit_code == 0, f"{line}\n{r.output}"

"""The README runs as written: every ```bash and ```python block, in order, exactly as printed, in an empty folder.

The folder holds only what a fresh clone has (its tracked files, linked) and, beside it, ``../shared/data/loghub`` (the loghub
sample the README's real-log system reads, as ``make demo`` does). Files the README uses (``model.pt``,
``trainer_state.json``, ``export.log``, releases...) are made by the README's own commands, never by this test.
Bash blocks run with ``bash -euo pipefail``; python blocks with ``python -``. A block may opt out only with
``<!-- test: skip (reason) -->`` right above it; a block with neither marker fails the test.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(?:<!-- test: (run|skip[^>]*) -->\s*\n)?```(\w*)\n(.*?)```", re.DOTALL)
LOGHUB = ROOT.parent / "shared" / "data" / "loghub"


def _blocks() -> list[tuple[str, str, str]]:
    """(marker, language, code) for every fenced block of README.md."""
    return [(m or "", lang, code) for m, lang, code in BLOCK.findall((ROOT / "README.md").read_text())]


def _runnable() -> list[tuple[str, str]]:
    return [(lang, code) for marker, lang, code in _blocks() if marker == "run"]


def test_every_command_block_is_run_or_says_why_not():
    for marker, lang, code in _blocks():
        if lang not in ("bash", "python", "sh"):
            continue
        assert marker == "run" or re.match(r"skip \(.+\)", marker), (
            f"README block without '<!-- test: run -->' or '<!-- test: skip (reason) -->':\n{code}"
        )
    langs = {lang for lang, _ in _runnable()}
    assert {"python", "bash"} <= langs


def test_readme_names_no_missing_document():
    text = (ROOT / "README.md").read_text()
    for link in re.findall(r"\]\(([^)#:]+)\)", text):
        assert (ROOT / link).exists(), f"README links to {link}, which is not in the repository"
    assert "DESIGN.md" not in text
    assert not re.search(r"seed 0\d\d", text, re.IGNORECASE)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A folder holding only a fresh clone's files (linked), with the loghub sample beside it."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    base = tmp_path_factory.mktemp("readme")
    work = base / "onnxship"
    work.mkdir()
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    for top in sorted({Path(f).parts[0] for f in tracked} or {"examples"}):  # what a fresh clone holds
        (work / top).symlink_to(ROOT / top)
    if LOGHUB.is_dir():
        (base / "shared" / "data").mkdir(parents=True)
        (base / "shared" / "data" / "loghub").symlink_to(LOGHUB)
    return work


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT / "src")  # the checkout under test (what `pip install -e .` gives a reader)
    env["ONNXSHIP_CACHE_DIR"] = str(work / ".cache")  # a reader's cache starts empty
    env.pop("MODEL_PATH", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


@pytest.mark.slow
def test_readme_runs_in_order(clone):
    """One test, blocks in order: later blocks use what earlier ones made, as they do for a reader."""
    env = _env(clone)
    for index, (lang, code) in enumerate(_runnable()):
        if "../shared/data/loghub" in code and not LOGHUB.is_dir():
            if os.environ.get("CI") == "true":
                pytest.fail(f"{LOGHUB} is missing (the loghub sample the README's block {index} reads)")
            pytest.skip(f"{LOGHUB} is missing; blocks from {index} on need the loghub sample")
        if lang == "python":
            argv = [sys.executable, "-"]
        else:
            argv = ["bash", "-euo", "pipefail", "-c", code]
        out, err = clone / f".block{index}.out", clone / f".block{index}.err"
        with out.open("w") as fout, err.open("w") as ferr:
            # its own session: a server the block starts in the background never outlives the block
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=fout,
                stderr=ferr,
                cwd=clone,
                env=env,
                text=True,
                start_new_session=True,
            )
            try:
                proc.communicate(code if lang == "python" else None, timeout=900)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
        assert proc.returncode == 0, (
            f"README block {index} ({lang}) exited {proc.returncode}:\n{code}\n"
            f"--- stdout\n{out.read_text()[-4000:]}\n--- stderr\n{err.read_text()[-4000:]}"
        )

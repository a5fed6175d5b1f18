"""What a run leaves behind: nothing hidden after a kill -9 (the next run cleans it), nothing half-written in the
export cache, files with the permissions the umask gives, and stdout that stays JSON under ``--json`` whatever the
user's model prints.

Scratch folders and temp files are named ``.onnxship-tmp-<pid>-s<start>-...`` under the output folder; the next run
in that folder removes those whose process is gone (a pid reused by another process counts as gone), never those of
a live run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onnxship._util import (
    TEMP_PREFIX,
    atomic_write,
    atomic_write_text,
    clean_stale_temps,
    owner_tag,
    work_dir,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = f"{ROOT / 'examples/deeplog/model.py'}:build_model"
ONNXSHIP = str(Path(sys.executable).with_name("onnxship"))
INPUT = "input_sequence:batch=2..8 x seq=10..16:int64:0..30"

NOISY = """
import os

import torch

print("import noise")


class Noisy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)

    def forward(self, x):
        print("forward noise")
        os.write(1, b"fd noise\\n")
        return self.lin(x)


def build():
    print("factory noise")
    return Noisy()
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONNXSHIP_") or k == "ONNXSHIP_CACHE_DIR"}
    env.update(extra, COLUMNS="400")
    return env


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(f"{TEMP_PREFIX}*")) if folder.is_dir() else []


# --json: stdout is the JSON document only


@pytest.mark.parametrize(
    "args",
    [
        ("ship", "--releases", "{d}/releases"),
        ("export", "--out", "{d}/out"),
    ],
    ids=["ship", "export"],
)
def test_json_stdout_stays_json_when_the_model_prints(tmp_path, args):
    (tmp_path / "noisy.py").write_text(NOISY, encoding="utf-8")
    cmd = [
        ONNXSHIP,
        *[a.format(d=tmp_path) for a in args],
        "--model",
        f"{tmp_path / 'noisy.py'}:build",
        "--input",
        "x:batch=2..4 x 4:float32",
        "--strategy",
        "torchscript",
        "--json",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)  # nothing but the document
    assert data["name"] == "noisy"
    for noise in ("import noise", "factory noise", "forward noise", "fd noise"):
        assert noise in proc.stderr, noise  # the user's output is not lost, it goes to stderr


# kill -9: the next run removes what the killed one left


def _kill_when(proc: subprocess.Popen, folder: Path, timeout: float = 240.0) -> list[str]:
    """SIGKILL ``proc`` as soon as a scratch entry shows up in ``folder``; returns what was there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = _temps(folder)
        if seen:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=60)
            return seen
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(
                f"the run ended (exit {proc.returncode}) before its scratch folder was seen:\n{out}{err}"
            )
        time.sleep(0.01)
    proc.kill()
    pytest.fail("no scratch folder appeared")


def test_kill_9_during_export_leaves_nothing_after_the_next_run(tmp_path):
    out = tmp_path / "out"
    cmd = [
        ONNXSHIP,
        "export",
        "--model",
        EXAMPLE,
        "--input",
        INPUT,
        "--strategy",
        "torchscript",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen = _kill_when(proc, out)
    assert any("candidates" in s for s in seen), seen  # the candidate work folder lives under --out
    assert _temps(out), "the killed run left its scratch folder (what the next run must clean)"
    dead = _dead_pid()  # and an older run's half-written file
    (out / f"{TEMP_PREFIX}{dead}-s99-deeplog.onnx-1234.tmp").write_bytes(b"half a model")
    again = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _temps(out) == []
    assert sorted(p.name for p in out.iterdir()) == ["deeplog.onnx", "deeplog.onnx.meta.json"]


def test_kill_9_during_optimize_leaves_nothing_after_the_next_run(tmp_path, deeplog_export):
    model = tmp_path / "deeplog.onnx"
    model.write_bytes(Path(deeplog_export[1].path).read_bytes())
    variants = tmp_path / "variants"
    cmd = [ONNXSHIP, "optimize", str(model), "--quantize", "int8-dynamic", "--out-dir", str(variants)]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen = _kill_when(proc, variants)
    assert any("optimize" in s for s in seen), seen
    again = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _temps(variants) == []
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_scratch_of_dead_or_reused_pids_goes_live_stays(tmp_path):
    dead = _dead_pid()
    stale_dir = tmp_path / f"{TEMP_PREFIX}{dead}-s123-deeplog-candidates-abcd"
    stale_dir.mkdir()
    (stale_dir / "torchscript-17-dyn.onnx").write_bytes(b"x" * 100)
    os.chmod(stale_dir, 0o555)  # a killed run may leave read-only folders
    stale_file = tmp_path / f"{TEMP_PREFIX}{dead}-s123-deeplog.onnx-0001.tmp"
    stale_file.write_bytes(b"half")
    reused = (
        tmp_path / f"{TEMP_PREFIX}{os.getpid()}-s1-deeplog-candidates-beef"
    )  # our pid, another start time
    reused.mkdir()
    live = tmp_path / f"{TEMP_PREFIX}{owner_tag()}-deeplog-candidates-cafe"  # this very process: in use
    live.mkdir()
    far = tmp_path / f"{TEMP_PREFIX}{dead}-s5-hffffff-deeplog-candidates-0bad"  # another machine's, recent
    far.mkdir()
    far_old = tmp_path / f"{TEMP_PREFIX}{dead}-s5-hffffff-deeplog-candidates-01d0"  # ... untouched for days
    far_old.mkdir()
    os.utime(far_old, (time.time() - 3 * 86400, time.time() - 3 * 86400))
    other = tmp_path / ".my-own-hidden-file"
    other.write_text("not ours")
    removed = clean_stale_temps(tmp_path)
    assert sorted(removed) == sorted([stale_dir.name, stale_file.name, reused.name, far_old.name])
    assert live.is_dir() and other.is_file() and far.is_dir()


def test_work_dir_is_named_by_its_owner(tmp_path):
    d = work_dir(tmp_path / "new" / "out", "m-candidates")
    assert d.parent == tmp_path / "new" / "out" and d.name.startswith(
        f"{TEMP_PREFIX}{owner_tag()}-m-candidates-"
    )
    assert clean_stale_temps(d.parent) == [] and d.is_dir()  # our own: never removed


# the export cache: never a half-written entry


def test_cache_ignores_a_half_written_entry_and_replaces_it_atomically(tmp_path, monkeypatch):
    from onnxship.export import _cache

    monkeypatch.setenv("ONNXSHIP_CACHE_DIR", str(tmp_path))
    key = "0" * 32
    path = tmp_path / "export" / f"dynamo-{key}.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"outcome": "failed", "reas')  # a writer killed half-way (before the atomic writer)
    dead = _dead_pid()
    (path.parent / f"{TEMP_PREFIX}{dead}-s7-dynamo-{key}.json-0000.tmp").write_text('{"outc')
    assert _cache.recall(key) is None
    _cache.remember(key, "rejected", "a dim was specialised", 1.5)
    assert _cache.recall(key)["reason"] == "a dim was specialised"
    assert sorted(p.name for p in path.parent.iterdir()) == [
        path.name
    ]  # no temp files left, the stale one gone


def test_cache_in_a_file_path_is_best_effort(tmp_path, monkeypatch):
    from onnxship.export import _cache

    (tmp_path / "blocked").write_text("a file where the cache folder should be")
    monkeypatch.setenv("ONNXSHIP_CACHE_DIR", str(tmp_path / "blocked"))
    _cache.remember("1" * 32, "failed", "x", 0.1)  # never raises: the cache is an optimisation
    assert _cache.recall("1" * 32) is None


# the one atomic writer: umask permissions, the previous file kept on failure


def test_atomic_write_keeps_the_old_file_on_failure_and_leaves_no_temp(tmp_path):
    target = tmp_path / "report.json"
    atomic_write_text(target, "old\n")

    def boom(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_atomic_write_keeps_the_mode_of_a_file_it_replaces(tmp_path):
    target = tmp_path / "private.json"
    atomic_write_text(target, "1")
    os.chmod(target, 0o600)
    atomic_write_text(target, "2")
    assert target.read_text() == "2" and (target.stat().st_mode & 0o777) == 0o600


_UMASK_SCRIPT = """
import os, sys
os.umask(int(sys.argv[1], 8))
from onnxship.cli import main
sys.argv = ["onnxship", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize("umask, mode, every_writer", [("022", 0o644, False), ("027", 0o640, True)])
def test_files_written_for_the_user_follow_the_umask(tmp_path, umask, mode, every_writer):
    """Export, verify's report, the optimize variants and report and the log recipe's parquet: what
    `open(path, "w")` would give under the umask, never the 0600 of a temp file (022: the export only)."""
    out = tmp_path / "out"

    def run(*args: str) -> None:
        proc = subprocess.run(
            [sys.executable, "-c", _UMASK_SCRIPT, umask, *args],
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr

    run("export", "--model", EXAMPLE, "--input", INPUT, "--strategy", "torchscript", "--out", str(out))
    written = [out / "deeplog.onnx", out / "deeplog.onnx.meta.json"]
    log = ROOT.parent / "shared/data/loghub/HDFS_2k.log"
    if every_writer:
        run("verify", str(out / "deeplog.onnx"), "--model", EXAMPLE, "--report", str(out / "report.json"))
        run(
            "optimize",
            str(out / "deeplog.onnx"),
            "--quantize",
            "int8-dynamic",
            "--out-dir",
            str(out / "variants"),
        )
        written += [out / "report.json", out / "variants/deeplog.int8-dynamic.onnx"]
        written += [out / "variants/deeplog.optimize.json"]
    if every_writer and log.is_file() and importlib.util.find_spec("drain3") is not None:
        run(
            "recipes",
            "deeplog",
            "parse",
            "--log",
            str(log),
            "--format",
            "hdfs",
            "--out",
            str(out / "p.parquet"),
        )
        written.append(out / "p.parquet")
    for p in written:
        assert p.is_file(), p
        assert p.stat().st_mode & 0o777 == mode, (p.name, oct(p.stat().st_mode & 0o777))


def test_one_atomic_writer():
    """Every file onnxship writes goes through onnxship._util.atomic_write: no other temp-file-and-rename writer
    (the `latest` symlink swaps are renames of links, not file writes)."""
    src = ROOT / "src/onnxship"
    allowed = {"_util.py"}
    symlink_swaps = {"package/_release.py", "recipes/two_stage/_build.py"}
    bad = []
    for path in src.rglob("*.py"):
        rel = path.relative_to(src).as_posix()
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"mkstemp\(|NamedTemporaryFile\(|os\.replace\(", text):
            if rel in allowed or (rel in symlink_swaps and m.group(0) == "os.replace("):
                continue
            bad.append(f"{rel}: {m.group(0)}")
    assert not bad, bad

"""`onnxship ship`, `onnxship list`, `onnxship package triton` from the command line, including kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from onnxship.cli import app
from onnxship.package import ReleaseWriter, current_latest, list_releases

from .conftest import write_vocab

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples/deeplog/model.py"

SLOW_MODEL = '''
import time
import torch
from torch import nn


class Slow(nn.Module):
    """A tiny LSTM whose forward() sleeps, so a test can kill `ship` between its steps."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(30, 8)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.fc = nn.Linear(8, 30)

    def forward(self, input_sequence):
        time.sleep(0.15)
        h, _ = self.lstm(self.embedding(input_sequence))
        return self.fc(h[:, -1, :])


def build_model():
    torch.manual_seed(0)
    return Slow()
'''


def _run(args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def cli_release(tmp_path_factory):
    """One release of the bundled example, shipped through the CLI from a YAML config with a vocab asset."""
    root = tmp_path_factory.mktemp("cli")
    write_vocab(root / "vocab.json")
    (root / "onnxship.yaml").write_text(
        f"""
model: {{spec: "{EXAMPLE}:build_model", name: deeplog}}
paths: {{releases: releases}}
export: {{strategy: torchscript}}
verify: {{golden_samples: 2}}
package: {{assets: {{vocab: vocab.json}}}}
""",
        encoding="utf-8",
    )
    result = _run(["ship", "--config", root / "onnxship.yaml", "--json"])
    assert result.exit_code == 0, result.output
    return root, json.loads(result.stdout)


def test_ship_from_yaml(cli_release):
    root, info = cli_release
    assert info["passed"] is True and info["name"] == "deeplog"
    bundle = Path(info["path"])
    assert bundle.parent == root / "releases/deeplog"
    assert (bundle / "assets/vocab.json").is_file() and not (bundle / "assets/vocab.portable.json").exists()
    meta = json.loads((bundle / "deeplog.onnx.meta.json").read_text())
    assert meta["model_type"] == "deeplog" and meta["vocab_size"] == 30  # the module's ONNXSHIP_METADATA
    assert meta["output_names"] == ["predictions"]


def test_list_command(cli_release):
    root, info = cli_release
    result = _run(["list", root / "releases/deeplog"])
    assert result.exit_code == 0, result.output
    assert info["version"] in result.output and "passed" in result.output and "*" in result.output
    rows = json.loads(_run(["list", root / "releases/deeplog", "--json"]).stdout)
    assert [r["version"] for r in rows] == [info["version"]] and rows[0]["latest"] is True


def test_package_triton_command(cli_release, tmp_path):
    root, info = cli_release
    result = _run(
        [
            "package",
            "triton",
            root / "releases/deeplog/latest",
            "--repo",
            tmp_path / "repo",
            "--max-batch-size",
            "8",
            "--instances",
            "2",
            "--dynamic-batching",
            "--json",
        ]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["max_batch_size"] == 8 and out["versions"] == {"1": info["version"]}
    text = (tmp_path / "repo/deeplog/config.pbtxt").read_text()
    assert "count: 2" in text and "dynamic_batching {" in text and 'platform: "onnxruntime_onnx"' in text


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["package", "triton", "{tmp}", "--repo", "{tmp}/repo"], "is not a release"),
        (["list", "{tmp}/nothing"], "is not a folder"),
        (
            ["package", "triton", "{rel}", "--repo", "{tmp}/repo", "--max-batch-size", "1000"],
            "above the declared",
        ),
        (
            ["package", "triton", "{rel}", "--repo", "{tmp}/repo", "--version-policy", "newest"],
            "version policy",
        ),
        (
            ["package", "triton", "{rel}", "--repo", "{tmp}/repo", "--kind", "KIND_TPU"],
            "unknown instance kind",
        ),
    ],
)
def test_cli_errors_exit_1_with_one_line(cli_release, tmp_path, args, needle):
    root, _ = cli_release
    args = [a.format(tmp=tmp_path, rel=root / "releases/deeplog/latest") for a in args]
    result = _run(args)
    assert result.exit_code == 1, result.output
    assert needle in result.output and "Traceback" not in result.output
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_config_typo_exits_1(tmp_path):
    (tmp_path / "onnxship.yaml").write_text("export:\n  stratgy: torchscript\n", encoding="utf-8")
    result = _run(["ship", "--config", tmp_path / "onnxship.yaml"])
    assert result.exit_code == 1
    assert "unknown key 'export.stratgy'" in result.output and "export.strategy" in result.output
    assert "Traceback" not in result.output


def test_env_typo_exits_1(tmp_path):
    result = _run(["ship", "--model", f"{EXAMPLE}:build_model"], env={"ONNXSHIP_EXPORT_OPSET": "17"})
    assert result.exit_code == 1 and "ONNXSHIP_EXPORT_OPSET" in result.output


def test_bad_vocab_exits_1_and_writes_nothing(tmp_path):
    vocab = write_vocab(tmp_path / "vocab.json", digit_keys=True)
    result = _run(
        [
            "ship",
            "--model",
            f"{EXAMPLE}:build_model",
            "--strategy",
            "torchscript",
            "--releases",
            tmp_path / "releases",
            "--asset",
            f"vocab={vocab}",
        ]
    )
    assert result.exit_code == 1 and "not template strings" in result.output
    assert not (tmp_path / "releases").exists()


def test_sha_mismatch_via_cli(cli_release, tmp_path):
    from .conftest import writable_copy

    root, info = cli_release
    copy = writable_copy(Path(info["path"]), tmp_path / "copy")
    with open(copy / "deeplog.onnx", "ab") as fh:
        fh.write(b"\0")
    result = _run(["package", "triton", copy, "--repo", tmp_path / "repo"])
    assert (
        result.exit_code == 1 and "sha256" in result.output and "changed after the release" in result.output
    )


@pytest.mark.parametrize("stage", ["staging", "exported"])
def test_kill_9_leaves_no_half_bundle(cli_release, tmp_path, stage):
    """SIGKILL while shipping: the previous release and latest stay intact; the next run removes the leftovers."""
    import shutil

    root, info = cli_release
    releases = tmp_path / "releases"
    shutil.copytree(root / "releases", releases, symlinks=True)
    model = tmp_path / "slow.py"
    model.write_text(SLOW_MODEL, encoding="utf-8")
    before = sorted(p.name for p in (releases / "deeplog").iterdir() if not p.name.startswith("."))
    exe = Path(sys.executable).with_name("onnxship")
    proc = subprocess.Popen(
        [
            str(exe),
            "ship",
            "--model",
            f"{model}:build_model",
            "--name",
            "deeplog",
            "--strategy",
            "torchscript",
            "--releases",
            str(releases),
            "--input",
            "input_sequence:batch=2..8 x seq=10..16:int64:0..30",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    name_dir = releases / "deeplog"
    deadline = time.monotonic() + 60
    killed = False
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            staging = [p for p in name_dir.glob(f".staging-{proc.pid}-*")]
            if staging and (stage == "staging" or (staging[0] / "deeplog.onnx.meta.json").exists()):
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None and not killed:
            proc.kill()
        proc.wait(timeout=30)
    assert killed, "ship finished before the kill point"
    assert proc.returncode == -signal.SIGKILL
    visible = sorted(p.name for p in name_dir.iterdir() if not p.name.startswith("."))
    assert visible == before  # no new (half) release, pointers untouched
    assert current_latest(name_dir) == info["version"]
    assert [r.version for r in list_releases(name_dir)] == [info["version"]]
    leftovers = list(name_dir.glob(".staging-*"))
    assert leftovers, "expected the killed run's hidden staging folder"
    with ReleaseWriter(releases, "deeplog", sha="nogit") as w:
        assert sorted(w.cleaned) == sorted(p.name for p in leftovers)
    assert not list(name_dir.glob(".staging-*"))


def test_package_help_is_light():
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom onnxship.cli import app\n"
        "for args in (['package', '--help'], ['package', 'triton', '--help'], ['ship', '--help'], "
        "['list', '--help']):\n    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
        "print([m for m in ('torch', 'onnxruntime', 'tritonclient', 'onnxscript') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"

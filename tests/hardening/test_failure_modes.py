"""Round two of the bad-input table: each class of hostile or unlucky input, several members each, run through the
real CLI (CliRunner; a fresh `onnxship` process where stdout, a hang or an exit code of the process itself is what
is tested). Every case: the expected exit code, one ``error:`` line saying what went wrong (+ at most a hint), no
traceback, and nothing written or changed in the inputs folder (or next to it).

Classes: names that are paths, user code that exits / is interrupted, YAML alias bombs, sizes that cannot fit,
output folders that cannot be written, out-of-range config numbers, malformed golden files and tolerances,
malformed release metadata, inconsistent vocabularies.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from onnxship.cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = f"{ROOT / 'examples/deeplog/model.py'}:build_model"
ONNXSHIP = str(Path(sys.executable).with_name("onnxship"))
INPUT = "input_sequence:batch=2..8 x seq=10..16:int64:0..30"

USER_CODE = """
import sys

import torch
from torch import nn


def exits():
    sys.exit(4)


def exits_none():
    sys.exit()


def interrupted():
    raise KeyboardInterrupt


class ExitsInForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x):
        sys.exit(5)


def exits_in_forward():
    return ExitsInForward()
"""

AT_IMPORT = {
    "exit3.py": "import sys\nprint('training...')\nsys.exit(3)\n",
    "exit_none.py": "import sys\nsys.exit()\n",
    "exit_text.py": "import sys\nsys.exit('usage: train.py --epochs N')\n",
    "argparse_script.py": (
        "import argparse\np = argparse.ArgumentParser()\np.add_argument('--epochs', required=True)\n"
        "p.parse_args()\n"
    ),
    "ctrl_c.py": "raise KeyboardInterrupt\n",
}

LAUGHS = "".join(
    f"{chr(97 + i)}: &{chr(97 + i)} [{', '.join([f'*{chr(96 + i)}'] * 9) if i else ', '.join(['lol'] * 9)}]\n"
    for i in range(10)
)
LAUGHS_MAP = "".join(
    f"k{i}: &k{i} {{{', '.join(f'x{j}: *k{i - 1}' for j in range(9)) if i else 'x: lol'}}}\n"
    for i in range(10)
)
ENV_LAUGHS = (
    "["
    + ", ".join(f"&a{i} [{', '.join([f'*a{i - 1}'] * 9) if i else ', '.join(['x'] * 9)}]" for i in range(10))
    + "]"
)


def _yaml(d: Path, name: str, text: str) -> None:
    (d / name).write_text(text, encoding="utf-8")


def _golden(path: Path, meta: object, *, raw_meta: np.ndarray | None = None) -> None:
    arrays = {
        "inputs/input_sequence": np.zeros((2, 10), np.int64),
        "outputs/output_0": np.zeros((2, 30), np.float32),
        "__meta__": raw_meta if raw_meta is not None else np.array(json.dumps(meta)),
    }
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _retamper_meta(bundle: Path, edit) -> None:
    """Edit the sidecar's JSON and re-record its sha256 in release.json (the sha protects against accidents, not
    against someone who rewrites both): what is left to catch a bad record is the reader's validation."""
    meta_path = bundle / "deeplog.onnx.meta.json"
    meta = json.loads(meta_path.read_text())
    edit(meta)
    meta_path.write_text(json.dumps(meta))
    manifest = json.loads((bundle / "release.json").read_text())
    manifest["files"][meta_path.name] = hashlib.sha256(meta_path.read_bytes()).hexdigest()
    (bundle / "release.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, deeplog_export):
    """Every bad input, in one folder (the cases' working directory); ``outside`` is its sibling."""
    from ..serve.conftest import write_bundle  # noqa: TID252  (the serve tests own this helper)

    top = tmp_path_factory.mktemp("modes")
    d = top / "work"
    d.mkdir()
    (top / "outside").mkdir()
    (d / "user_code.py").write_text(USER_CODE, encoding="utf-8")
    for name, text in AT_IMPORT.items():
        (d / name).write_text("def build():\n    pass\n\n" + text, encoding="utf-8")
    (d / "afile").write_text("a file where a folder is expected\n")

    spec = f"model: {{spec: {EXAMPLE}}}\nexport: {{strategy: torchscript}}\n"
    _yaml(d, "name_dotdot.yaml", spec.replace("}\n", ", name: '..'}\n", 1))
    _yaml(d, "name_up.yaml", spec.replace("}\n", ", name: ../outside/x}\n", 1))
    _yaml(d, "name_dot.yaml", spec.replace("}\n", ", name: '.'}\n", 1))
    (d / "neg_export_seed.yaml").write_text(f"model: {{spec: {EXAMPLE}}}\nexport: {{seed: -1}}\n")
    (d / "neg_verify_seed.yaml").write_text(f"model: {{spec: {EXAMPLE}}}\nverify: {{seed: -7}}\n")
    (d / "zero_golden.yaml").write_text(f"model: {{spec: {EXAMPLE}}}\nverify: {{golden_samples: 0}}\n")
    (d / "bad_opset.yaml").write_text(f"model: {{spec: {EXAMPLE}}}\nexport: {{opsets: [99]}}\n")
    (d / "neg_atol.yaml").write_text(f"model: {{spec: {EXAMPLE}}}\nverify: {{atol: -0.1}}\n")
    (d / "nan_rtol.yaml").write_text(f"model: {{spec: {EXAMPLE}}}\nverify: {{rtol: .nan}}\n")
    _yaml(d, "laughs.yaml", LAUGHS + "model: {name: *j}\n")
    _yaml(d, "laughs_map.yaml", LAUGHS_MAP + "export: {metadata: *k9}\n")
    _yaml(d, "recursive.yaml", "export: &e\n  metadata: {self: *e}\n")

    entries = [f'"t{i}": {i}' for i in range(30)]
    (d / "vocab_repeat.json").write_text("{" + ", ".join(['"t5": 29', *entries]) + "}")
    ws = [f'"t{i}": {i}' for i in range(29)] + ['"t28  ": 29']
    (d / "vocab_space.json").write_text("{" + ", ".join(ws) + "}")
    (d / "labels_repeat.json").write_text('{"0": "cat", "1": "dog", "0": "bird"}')

    _golden(d / "golden_list_meta.npz", [1, 2])
    _golden(d / "golden_number_meta.npz", None, raw_meta=np.array(7))
    _golden(d / "golden_bad_json.npz", None, raw_meta=np.array("{not json"))
    _golden(d / "golden_tol_text.npz", {"tolerance": {"atol": "tiny", "rtol": 1e-3}})
    _golden(d / "golden_tol_negative.npz", {"tolerance": {"atol": -1.0, "rtol": 1e-3}})
    shutil.copy(deeplog_export[1].path, d / "model.onnx")

    rel = write_bundle(d / "tmp-releases", 0, 1)
    for name, edit in {
        "meta_float_max": lambda m: m["inputs"][0]["dims"][0].update(max=8.5),
        "meta_text_max": lambda m: m["inputs"][0]["dims"][1].update(max="64"),
        "meta_bool_value": lambda m: m["inputs"][0]["dims"][0].update(value=True),
        "meta_points": lambda m: m.update(verified_dims=[{"batch": "two"}]),
    }.items():
        shutil.copytree(rel, d / name)
        for p in [d / name, *(d / name).rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        _retamper_meta(d / name, edit)
    shutil.copytree(rel, d / "good_release")
    for p in [d / "good_release", *(d / "good_release").rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    shutil.rmtree(d / "tmp-releases")
    return d


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]  # {d}: the inputs folder, {m}: the example factory
    code: int
    needle: str  # part of the error line
    env: tuple[tuple[str, str], ...] = ()
    subprocess: bool = False  # a fresh `onnxship` process (hangs are bounded by a timeout)


def ship(*extra: str, model: str = "{m}") -> tuple[str, ...]:
    return ("ship", "--model", model, "--strategy", "torchscript", "--releases", "{d}/releases", *extra)


def export(*extra: str, model: str = "{m}", out: str = "{d}/out") -> tuple[str, ...]:
    return ("export", "--model", model, "--strategy", "torchscript", "--out", out, *extra)


VERIFY = ("verify", "{d}/model.onnx", "--input", "input_sequence:batch=2 x seq=10:int64:0..30")

CASES: dict[str, Case] = {
    # names are paths: one safe component, else exit 2 before anything is loaded or written
    "name-dotdot": Case(ship("--name", ".."), 2, "'..' is not a safe file name"),
    "name-dot": Case(ship("--name", "."), 2, "'.' is not a safe file name"),
    "name-slash": Case(ship("--name", "../outside/x"), 2, "is not a safe file name"),
    "name-hidden": Case(ship("--name", ".hidden"), 2, "is not a safe file name"),
    "name-space": Case(ship("--name", "my model"), 2, "is not a safe file name"),
    "name-newline": Case(ship("--name", "deeplog\n"), 2, "is not a safe file name"),
    "name-too-long": Case(ship("--name", "x" * 300), 2, "is too long"),
    "name-env": Case(ship(), 2, "'..' is not a safe file name", env=(("ONNXSHIP_MODEL_NAME", ".."),)),
    "name-env-slash": Case(ship(), 2, "not a safe file name", env=(("ONNXSHIP_MODEL_NAME", "a/../../b"),)),
    "name-yaml-dotdot": Case(("ship", "--config", "{d}/name_dotdot.yaml"), 2, "model.name in"),
    "name-yaml-up": Case(("ship", "--config", "{d}/name_up.yaml"), 2, "'../outside/x' is not a safe"),
    "name-yaml-dot": Case(("ship", "--config", "{d}/name_dot.yaml"), 2, "'.' is not a safe file name"),
    "name-export": Case(export("--name", "..", "--input", INPUT), 2, "'..' is not a safe file name"),
    "name-export-slash": Case(export("--name", "a/b", "--input", INPUT), 2, "'a/b' is not a safe"),
    "name-triton": Case(
        ("package", "triton", "{d}/good_release", "--repo", "{d}/repo", "--name", ".."),
        2,
        "'..' is not a safe",
    ),
    "name-triton-slash": Case(
        ("package", "triton", "{d}/good_release", "--repo", "{d}/repo", "--name", "../x"), 2, "is not a safe"
    ),
    # user code: sys.exit / Ctrl-C at import, in the factory, in forward()
    "exit-at-import": Case(
        ship(model="{d}/exit3.py:build"), 1, "the model module exited during import (exit code 3)"
    ),
    "exit-none-at-import": Case(
        ship(model="{d}/exit_none.py:build"), 1, "the model module exited during import (exit code 0)"
    ),
    "exit-text-at-import": Case(
        ship(model="{d}/exit_text.py:build"), 1, "exited during import (exit code 1: usage: train.py"
    ),
    "argparse-at-import": Case(
        export(model="{d}/argparse_script.py:build", out="{d}/out"), 1, "exited during import (exit code 2)"
    ),
    "ctrl-c-at-import": Case(
        ship(model="{d}/ctrl_c.py:build"), 1, "the model module was interrupted during import"
    ),
    "exit-in-factory": Case(
        ship("--input", "x:2x4:float32", model="{d}/user_code.py:exits"),
        1,
        "the model factory exited (exit code 4)",
    ),
    "exit-none-in-factory": Case(
        export("--input", "x:2x4:float32", model="{d}/user_code.py:exits_none"),
        1,
        "the model factory exited (exit code 0)",
    ),
    "ctrl-c-in-factory": Case(
        ship("--input", "x:2x4:float32", model="{d}/user_code.py:interrupted"),
        1,
        "the model factory was interrupted",
    ),
    "exit-in-forward": Case(
        ship("--input", "x:batch=2 x 4:float32", model="{d}/user_code.py:exits_in_forward"),
        1,
        "called sys.exit() while onnxship ran it (exit code 5)",
    ),
    "exit-at-import-process": Case(
        ship(model="{d}/exit3.py:build"), 1, "exited during import (exit code 3)", subprocess=True
    ),
    # YAML alias bombs and recursive anchors: refused at once, never a hang
    "yaml-laughs": Case(("ship", "--config", "{d}/laughs.yaml"), 1, "expand to more than", subprocess=True),
    "yaml-laughs-map": Case(("ship", "--config", "{d}/laughs_map.yaml"), 1, "expand to more than"),
    "yaml-recursive": Case(("ship", "--config", "{d}/recursive.yaml"), 1, "recursive anchor"),
    "yaml-env-laughs": Case(
        ship(), 1, "expand to more than", env=(("ONNXSHIP_EXPORT_INPUTS", ENV_LAUGHS),), subprocess=True
    ),
    # sizes whose samples cannot fit: refused before anything is allocated
    "dims-huge-static": Case(ship("--input", "input_sequence:999999999x999999999:int64"), 2, "needs"),
    "dims-huge-max": Case(ship("--input", "input_sequence:batch=2..99999999999 x 10:int64"), 2, "needs"),
    "dims-huge-image": Case(export("--input", "image:batch=1 x 3 x 200000 x 200000:float32"), 2, "needs"),
    "dims-huge-verify": Case(
        ("verify", "{d}/model.onnx", "--model", "{m}", "--input", "input_sequence:9999999x9999999:int64"),
        2,
        "needs",
    ),
    # an --out that cannot be a folder
    "out-is-a-file": Case(export("--input", INPUT, out="{d}/afile"), 1, "a file is in the way"),
    "out-under-a-file": Case(export("--input", INPUT, out="{d}/afile/sub"), 1, "a file is in the way"),
    # numbers out of range in the config
    "yaml-negative-export-seed": Case(("ship", "--config", "{d}/neg_export_seed.yaml"), 1, "export.seed"),
    "yaml-negative-verify-seed": Case(("ship", "--config", "{d}/neg_verify_seed.yaml"), 1, "verify.seed"),
    "yaml-zero-golden": Case(("ship", "--config", "{d}/zero_golden.yaml"), 1, "verify.golden_samples"),
    "yaml-bad-opset": Case(("ship", "--config", "{d}/bad_opset.yaml"), 1, "export.opsets"),
    "yaml-negative-atol": Case(("ship", "--config", "{d}/neg_atol.yaml"), 1, "verify.atol"),
    "yaml-nan-rtol": Case(("ship", "--config", "{d}/nan_rtol.yaml"), 1, "verify.rtol"),
    "env-negative-seed": Case(ship(), 1, "verify.seed", env=(("ONNXSHIP_VERIFY_SEED", "-3"),)),
    # malformed golden files and tolerances
    "golden-meta-list": Case((*VERIFY, "--golden", "{d}/golden_list_meta.npz"), 1, "not a JSON object"),
    "golden-meta-number": Case((*VERIFY, "--golden", "{d}/golden_number_meta.npz"), 1, "golden file"),
    "golden-meta-bad-json": Case((*VERIFY, "--golden", "{d}/golden_bad_json.npz"), 1, "golden file"),
    "golden-tolerance-text": Case((*VERIFY, "--golden", "{d}/golden_tol_text.npz"), 1, "atol='tiny'"),
    "golden-tolerance-negative": Case((*VERIFY, "--golden", "{d}/golden_tol_negative.npz"), 1, "atol=-1.0"),
    "tolerance-negative": Case((*VERIFY, "--model", "{m}", "--tolerance", "*:atol=-1"), 2, "atol=-1"),
    "tolerance-nan": Case((*VERIFY, "--model", "{m}", "--tolerance", "output_0:rtol=NaN"), 2, "rtol=nan"),
    # release metadata that does not hold whole-number dims
    "meta-float-max": Case(("package", "triton", "{d}/meta_float_max", "--repo", "{d}/repo"), 1, "8.5"),
    "meta-text-max": Case(("package", "triton", "{d}/meta_text_max", "--repo", "{d}/repo"), 1, "'64'"),
    "meta-bool-value": Case(("package", "triton", "{d}/meta_bool_value", "--repo", "{d}/repo"), 1, "True"),
    "meta-points": Case(("package", "triton", "{d}/meta_points", "--repo", "{d}/repo"), 1, "verified_dims"),
    # inconsistent vocabularies and label maps
    "vocab-template-twice": Case(ship("--asset", "vocab={d}/vocab_repeat.json"), 1, "'t5' appears twice"),
    "vocab-template-space": Case(ship("--asset", "vocab={d}/vocab_space.json"), 1, "up to whitespace"),
    "labels-key-twice": Case(ship("--asset", "labels={d}/labels_repeat.json"), 1, "'0' appears twice"),
}


def _snapshot(folder: Path) -> dict[str, tuple[int, int] | None]:
    return {
        str(p.relative_to(folder)): None
        if p.is_dir() and not p.is_symlink()
        else (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in folder.rglob("*")
    }


def _run(case: Case, d: Path) -> tuple[int, str, str]:
    args = [a.format(d=d, m=EXAMPLE) for a in case.args]
    if case.subprocess:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("ONNXSHIP_") or k == "ONNXSHIP_CACHE_DIR"
        }
        env.update(dict(case.env), COLUMNS="400")
        proc = subprocess.run([ONNXSHIP, *args], cwd=d, env=env, capture_output=True, text=True, timeout=120)
        return proc.returncode, proc.stdout, proc.stderr
    result = CliRunner().invoke(app, args, env=dict(case.env))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("case_id", list(CASES))
def test_failure_mode(case_id, inputs, monkeypatch):
    case = CASES[case_id]
    monkeypatch.chdir(inputs)
    before, outside = _snapshot(inputs.parent), sorted(os.listdir(inputs.parent))
    code, out, err = _run(case, inputs)
    assert code == case.code, f"exit {code}\n{out}\n{err}"
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(errors) == 1 and case.needle in lines[errors[0]], err
    tail = lines[errors[0] + 1 :]
    assert tail == [] or (len(tail) == 1 and tail[0].startswith("hint: ")), err
    assert sorted(os.listdir(inputs.parent)) == outside, "something was written next to the inputs folder"
    assert _snapshot(inputs.parent) == before, "a failed command wrote or changed files"


def test_every_class_has_several_cases():
    prefixes = ("name-", "exit-", "yaml-laughs", "dims-", "out-", "golden-", "tolerance-", "meta-", "vocab-")
    for prefix in prefixes:
        assert sum(k.startswith(prefix) for k in CASES) >= 2, prefix


def test_benign_aliases_still_load(tmp_path):
    """Anchors that expand to a little are fine (shared input lists, merge keys)."""
    from onnxship.spec._config import load_ship_config

    (tmp_path / "c.yaml").write_text(
        "export: &e\n  inputs: &i ['x:batch=2 x 4:float32']\n  strategy: torchscript\n"
        "verify:\n  seed: 3\n"
        "package:\n  assets: {}\n"
    )
    cfg = load_ship_config(tmp_path / "c.yaml")
    assert cfg.export.inputs == ["x:batch=2 x 4:float32"] and cfg.verify.seed == 3


@pytest.mark.parametrize("name", ["deeplog", "mnist-classifier", "model_v1.2", "A1", "x-1.0-rc"])
def test_safe_names_pass(name):
    from onnxship._util import check_name

    assert check_name(name) == name


# the CLI's one error boundary: anything unexpected is one line + a hint; a traceback only when asked for


@pytest.mark.parametrize(
    "exc, needle, code",
    [
        (RuntimeError("boom\nsecond line"), "unexpected RuntimeError: boom …", 1),
        (KeyError("missing"), "unexpected KeyError", 1),
        (MemoryError(), "out of memory", 1),
        (OSError(28, "No space left on device", "/data/x.onnx"), "no space left on device writing", 1),
        (PermissionError(13, "Permission denied", "/data/x"), "Permission denied", 1),
        (SystemExit(7), "called sys.exit() while onnxship ran it (exit code 7)", 1),
        (KeyboardInterrupt(), "interrupted", 130),
    ],
    ids=["bug", "keyerror", "memory", "disk-full", "permission", "sys-exit", "ctrl-c"],
)
def test_unexpected_errors_are_one_line(monkeypatch, tmp_path, exc, needle, code):
    import onnxship.inspect

    def broken(path):
        raise exc

    monkeypatch.setattr(onnxship.inspect, "inspect_model", broken)
    monkeypatch.delenv("ONNXSHIP_DEBUG", raising=False)
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "m.onnx")])
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) in (1, 2) and lines[0].startswith("error: ") and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    if isinstance(exc, RuntimeError):
        assert lines[1].startswith("hint: ") and "--debug" in lines[1]


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(monkeypatch, tmp_path, how):
    import onnxship.inspect

    def broken(path):
        raise RuntimeError("boom")

    monkeypatch.setattr(onnxship.inspect, "inspect_model", broken)
    args = ["inspect", str(tmp_path / "m.onnx")]
    env = {"ONNXSHIP_DEBUG": "1"} if how == "env" else {}
    result = CliRunner().invoke(app, ["--debug", *args] if how == "flag" else args, env=env)
    assert isinstance(result.exception, RuntimeError)  # re-raised: the console script prints its traceback

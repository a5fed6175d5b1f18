"""One table of bad inputs, each run through the real CLI: exit 1 or 2, one error line (+ hint), no traceback,
nothing written.

The inputs (checkpoints, factories, vocabularies, ONNX files, configs, a tampered bundle) are made once per module
in one folder; every case snapshots that folder before and after it runs, so a half-written file or a stray
releases/ folder fails the case. `serve` cases run as a fresh subprocess (a server that wrongly starts would block
CliRunner), bounded by a timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from onnxship.cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = f"{ROOT / 'examples/deeplog/model.py'}:build_model"
ONNXSHIP = str(Path(sys.executable).with_name("onnxship"))

FACTORIES = """
import torch
from torch import nn


def raises():
    raise RuntimeError("boom in the factory")


def tup():
    return nn.Linear(2, 2), 1


def dct():
    return {"weight": torch.zeros(2, 2)}


def path():
    return "model.pt"


def meta():
    with torch.device("meta"):
        return nn.Linear(2, 2)


class Two(nn.Module):
    def forward(self, tokens, mask):
        return tokens * mask


def two():
    return Two()
"""


def _external_onnx(path: Path, location: str) -> None:
    """A tiny valid ONNX graph whose one initializer lives in external data at ``location``."""
    from onnx import TensorProto, helper

    w = helper.make_tensor("W", TensorProto.FLOAT, [2], [1.0, 2.0])
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "8")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())


def _vocab(path: Path, mapping: dict | str) -> None:
    path.write_text(mapping if isinstance(mapping, str) else json.dumps(mapping), encoding="utf-8")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, deeplog_checkpoint, deeplog_export):
    """Every bad input of the table, in one folder (the cases' working directory)."""
    import torch

    from onnxship.spec import parse_model_spec

    from ..serve.conftest import write_bundle  # noqa: TID252  (the serve tests own this helper)

    d = tmp_path_factory.mktemp("bad")
    good = deeplog_checkpoint.read_bytes()
    (d / "truncated.pt").write_bytes(good[: len(good) // 2])
    (d / "random.pt").write_bytes(bytes(range(256)) * 8)
    (d / "text.pt").write_text("not a checkpoint at all\n" * 20)
    torch.save({"model": parse_model_spec(EXAMPLE).load().model, "epoch": 1}, d / "full_pickle.pt")
    (d / "factories.py").write_text(FACTORIES, encoding="utf-8")

    _vocab(d / "vocab_ids.json", {str(i + 1): i for i in range(30)})
    _vocab(d / "vocab_gap.json", {f"t{i}": i if i < 15 else i + 1 for i in range(30)})
    _vocab(d / "vocab_dup.json", {f"t{i}": min(i, 28) for i in range(30)})
    _vocab(d / "vocab_size.json", {f"t{i}": i for i in range(31)})
    _vocab(d / "vocab_list.json", [f"t{i}" for i in range(30)])
    _vocab(d / "vocab_broken.json", '{"t0": 0, "t1": ')

    onnx_bytes = Path(deeplog_export[1].path).read_bytes()
    (d / "truncated.onnx").write_bytes(onnx_bytes[: len(onnx_bytes) // 2])
    (d / "text.onnx").write_text("this is not an ONNX model\n")
    (d / "empty.onnx").write_bytes(b"")
    (d / "secret").mkdir()
    (d / "secret/weights.bin").write_bytes(b"\0" * 8)
    _external_onnx(d / "m/parent.onnx", "../../etc/passwd")
    _external_onnx(d / "m/absolute.onnx", "/etc/passwd")
    _external_onnx(d / "m/sibling.onnx", "../secret/weights.bin")
    _external_onnx(d / "m/link.onnx", "link.bin")
    (d / "m/link.bin").symlink_to(d / "secret/weights.bin")

    bundle = write_bundle(d / "tmp-releases", 0, 1)
    shutil.copytree(bundle, d / "tampered")
    shutil.rmtree(d / "tmp-releases")
    for p in [d / "tampered", *(d / "tampered").rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    with open(d / "tampered/deeplog.onnx", "ab") as fh:
        fh.write(b"\0")
    assert (d / "tampered/golden.npz").is_file()

    (d / "unknown_key.yaml").write_text("export:\n  stratgy: torchscript\n")
    (d / "unknown_section.yaml").write_text("exprot:\n  strategy: torchscript\n")
    (d / "wrong_type.yaml").write_text("verify:\n  golden_samples: many\n")
    (d / "list.yaml").write_text("- model\n- export\n")
    (d / "broken.yaml").write_text("model: {spec: [\n")
    return d


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]  # CLI arguments; {d} is the inputs folder, {m} the example factory
    code: int  # expected exit code
    needle: str  # part of the error line
    env: tuple[tuple[str, str], ...] = ()
    subprocess: bool = False  # run a fresh `onnxship` process


def ship(*extra: str, model: str = "{m}") -> tuple[str, ...]:
    return ("ship", "--model", model, "--strategy", "torchscript", "--releases", "{d}/releases", *extra)


INPUT = "input_sequence:batch=2..8 x seq=10..16:int64:0..30"
GOLDEN = "{d}/tampered/golden.npz"

CASES: dict[str, Case] = {
    # checkpoints
    "ckpt-truncated": Case(ship("--checkpoint", "{d}/truncated.pt"), 1, "cannot be read"),
    "ckpt-random-bytes": Case(ship("--checkpoint", "{d}/random.pt"), 1, "cannot be read"),
    "ckpt-text": Case(ship("--checkpoint", "{d}/text.pt"), 1, "cannot be read"),
    "ckpt-needs-code": Case(ship("--checkpoint", "{d}/full_pickle.pt"), 1, "full pickle that needs code"),
    "ckpt-missing": Case(ship("--checkpoint", "{d}/missing.pt"), 1, "does not exist"),
    # factories
    "factory-raises": Case(
        ship(model="{d}/factories.py:raises"), 1, "raised RuntimeError: boom in the factory"
    ),
    "factory-tuple": Case(ship(model="{d}/factories.py:tup"), 1, "returned a tuple"),
    "factory-dict": Case(ship(model="{d}/factories.py:dct"), 1, "returned a dict"),
    "factory-path": Case(ship(model="{d}/factories.py:path"), 1, "returned a path"),
    "factory-meta-device": Case(ship(model="{d}/factories.py:meta"), 1, "'meta' device"),
    "factory-missing-name": Case(ship(model="{d}/factories.py:nothere"), 1, "has no attribute 'nothere'"),
    "factory-missing-file": Case(ship(model="{d}/nofile.py:build"), 1, "does not exist"),
    "factory-no-colon": Case(ship(model="justtext"), 1, "has no ':factory' part"),
    "factory-bad-kwarg": Case(ship("--model-arg", "hidden=wide"), 1, "raised TypeError"),
    # input specs
    "spec-one-field": Case(ship("--input", "input_sequence"), 2, "expected 3 or 4"),
    "spec-empty-dim": Case(ship("--input", "input_sequence:2x:int64"), 2, "cannot read a dim"),
    "spec-bad-dtype": Case(ship("--input", "input_sequence:2x10:complex"), 2, "unknown dtype 'complex'"),
    "spec-max-below-value": Case(
        ship("--input", "input_sequence:batch=5..2 x 10:int64"), 2, "below its sample"
    ),
    "spec-range-overflows-int8": Case(
        ship("--input", "input_sequence:2x10:int8:0..300"), 2, "overflows int8"
    ),
    "spec-range-overflows-int64": Case(
        ship("--input", "input_sequence:2x10:int64:0..1e30"), 2, "overflows int64"
    ),
    "spec-range-overflows-fp16": Case(ship("--input", "x:2x10:float16:0..1e6"), 2, "overflows float16"),
    "spec-empty-range": Case(ship("--input", "input_sequence:2x10:int64:5..5"), 2, "is empty"),
    "spec-unknown-input": Case(
        ship(
            "--input",
            "tokens:2x10:int64",
            "--input",
            "mask:2x10:int64",
            "--input",
            "extra:2x10:int64",
            model="{d}/factories.py:two",
        ),
        1,
        "only partly match",
    ),
    # vocabularies through ship --asset
    "vocab-keyed-by-ids": Case(ship("--asset", "vocab={d}/vocab_ids.json"), 1, "not template strings"),
    "vocab-gap": Case(ship("--asset", "vocab={d}/vocab_gap.json"), 1, "missing: [15]"),
    "vocab-duplicates": Case(ship("--asset", "vocab={d}/vocab_dup.json"), 1, "duplicated: [28]"),
    "vocab-wrong-size": Case(ship("--asset", "vocab={d}/vocab_size.json"), 1, "31 entries but the model"),
    "vocab-a-list": Case(ship("--asset", "vocab={d}/vocab_list.json"), 1, "vocab"),
    "vocab-broken-json": Case(ship("--asset", "vocab={d}/vocab_broken.json"), 1, "not valid JSON"),
    "vocab-missing": Case(ship("--asset", "vocab={d}/nothing.json"), 1, "does not exist"),
    "asset-not-name-path": Case(ship("--asset", "vocab.json"), 1, "is not name=path"),
    "asset-markup-in-path": Case(ship("--asset", "vocab={d}/missing[bold].json"), 1, "missing[bold].json"),
    # ONNX files
    "inspect-truncated": Case(("inspect", "{d}/truncated.onnx"), 1, "not a readable ONNX model"),
    "inspect-text": Case(("inspect", "{d}/text.onnx"), 1, "not a readable ONNX model"),
    "inspect-empty": Case(("inspect", "{d}/empty.onnx"), 1, "empty.onnx"),
    "inspect-missing": Case(("inspect", "{d}/missing.onnx"), 1, "does not exist"),
    "verify-truncated": Case(("verify", "{d}/truncated.onnx", "--golden", GOLDEN), 1, "not a readable ONNX"),
    "verify-text": Case(("verify", "{d}/text.onnx", "--golden", GOLDEN), 1, "not a readable ONNX model"),
    # external data leaving the model folder: refused before onnx/onnxruntime open it
    "inspect-ext-parent": Case(
        ("inspect", "{d}/m/parent.onnx"), 1, "'../../etc/passwd' leaves the model folder"
    ),
    "inspect-ext-absolute": Case(
        ("inspect", "{d}/m/absolute.onnx"), 1, "'/etc/passwd' leaves the model folder"
    ),
    "inspect-ext-sibling": Case(("inspect", "{d}/m/sibling.onnx"), 1, "leaves the model folder"),
    "inspect-ext-symlink": Case(("inspect", "{d}/m/link.onnx"), 1, "resolves outside the model folder"),
    "verify-ext-parent": Case(
        ("verify", "{d}/m/parent.onnx", "--golden", GOLDEN), 1, "leaves the model folder"
    ),
    "verify-ext-absolute": Case(("verify", "{d}/m/absolute.onnx", "--golden", GOLDEN), 1, "leaves the model"),
    "verify-ext-symlink": Case(("verify", "{d}/m/link.onnx", "--golden", GOLDEN), 1, "resolves outside"),
    "serve-ext-parent": Case(
        ("serve", "--model-path", "{d}/m/parent.onnx", "--no-golden-check", "--port", "0"),
        1,
        "leaves the model folder",
        subprocess=True,
    ),
    "serve-ext-absolute": Case(
        ("serve", "--model-path", "{d}/m/absolute.onnx", "--no-golden-check", "--port", "0"),
        1,
        "leaves the model folder",
        subprocess=True,
    ),
    "serve-ext-symlink": Case(
        ("serve", "--model-path", "{d}/m/link.onnx", "--no-golden-check", "--port", "0"),
        1,
        "resolves outside the model folder",
        subprocess=True,
    ),
    # a bundle changed after its release
    "bundle-sha-package": Case(("package", "triton", "{d}/tampered", "--repo", "{d}/repo"), 1, "sha256"),
    "bundle-sha-serve": Case(
        ("serve", "--model-path", "{d}/tampered", "--port", "0"), 1, "sha256", subprocess=True
    ),
    # configs
    "config-unknown-key": Case(
        ("ship", "--config", "{d}/unknown_key.yaml"), 1, "unknown key 'export.stratgy'"
    ),
    "config-unknown-section": Case(("ship", "--config", "{d}/unknown_section.yaml"), 1, "exprot"),
    "config-wrong-type": Case(("ship", "--config", "{d}/wrong_type.yaml"), 1, "expected int"),
    "config-not-a-mapping": Case(("ship", "--config", "{d}/list.yaml"), 1, "must hold a mapping"),
    "config-broken-yaml": Case(("ship", "--config", "{d}/broken.yaml"), 1, "not valid YAML"),
    "config-missing": Case(("ship", "--config", "{d}/nothing.yaml"), 1, "nothing.yaml"),
    "config-env-typo": Case(ship(), 1, "ONNXSHIP_EXPORT_OPSET", env=(("ONNXSHIP_EXPORT_OPSET", "17"),)),
    "config-env-wrong-type": Case(
        ship(),
        1,
        "ONNXSHIP_* environment is 'lots' (str), expected int",
        env=(("ONNXSHIP_VERIFY_GOLDEN_SAMPLES", "lots"),),
    ),
}


def _snapshot(folder: Path) -> dict[str, tuple[int, int] | None]:
    """Every path below ``folder``, with size and mtime for files (a folder's mtime moves when a staging folder
    comes and goes inside it; what it holds is what counts)."""
    return {
        str(p.relative_to(folder)): None
        if p.is_dir() and not p.is_symlink()
        else (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in folder.rglob("*")
    }


def _run(case: Case, d: Path) -> tuple[int, str, str]:
    args = [a.format(d=d, m=EXAMPLE) for a in case.args]
    env = dict(case.env)
    if case.subprocess:
        full = {k: v for k, v in os.environ.items() if not k.startswith("ONNXSHIP_") and k != "MODEL_PATH"}
        full.update(env, COLUMNS="400")
        proc = subprocess.run([ONNXSHIP, *args], cwd=d, env=full, capture_output=True, text=True, timeout=120)
        return proc.returncode, proc.stdout, proc.stderr
    result = CliRunner().invoke(app, args, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # an escaped exception is a bug: show its traceback
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("case_id", list(CASES))
def test_bad_input(case_id, inputs, monkeypatch):
    case = CASES[case_id]
    monkeypatch.chdir(inputs)  # default paths (releases/, the Triton repo) land in the snapshotted folder
    before = _snapshot(inputs)
    code, out, err = _run(case, inputs)
    assert code == case.code, f"exit {code}\n{out}\n{err}"
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(errors) == 1 and case.needle in lines[errors[0]], err  # one error line, saying what went wrong
    tail = lines[errors[0] + 1 :]  # progress lines may come before it; only a hint after it
    assert tail == [] or (len(tail) == 1 and tail[0].startswith("hint: ")), err
    assert _snapshot(inputs) == before, "a failed command wrote or changed files"


def test_the_table_is_large():
    assert len(CASES) >= 30

"""MSCRED beside DeepLog: signature matrices from the parsed BGL sample, a few training steps, shipped through
`onnxship ship` with a static window and a dynamic batch dim."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from onnxship._errors import ConfigError
from onnxship.cli._app import app
from onnxship.recipes.mscred import (
    INPUT_NAME,
    MscredShipConfig,
    MscredTrainConfig,
    SignatureConfig,
    signature_matrices,
    signature_windows,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def parsed(loghub: Path, drain3_available: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from onnxship.recipes.deeplog import ParseConfig, parse_logs

    out = tmp_path_factory.mktemp("mscred") / "parsed.parquet"
    parse_logs(ParseConfig(log=loghub / "BGL_2k.log", format="bgl", out=out))
    return out


@pytest.fixture(scope="module")
def shipped(parsed: Path) -> dict[str, Any]:
    import torch

    from onnxship.recipes.mscred import ship_mscred, train_mscred

    torch.set_num_threads(2)
    trained = train_mscred(MscredTrainConfig(parsed=parsed, out_dir=parsed.parent, steps=40))
    result = ship_mscred(
        MscredShipConfig(
            checkpoint=trained.checkpoint, releases=parsed.parent / "releases", strategy="torchscript"
        )
    )
    return {"train": trained, "ship": result}


def test_signature_matrices_match_the_definition() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((12, 4))
    m = signature_matrices(x, (1, 3))
    assert m.shape == (12, 2, 4, 4)
    t = 7
    np.testing.assert_allclose(m[t, 0], np.outer(x[t], x[t]), rtol=1e-5)
    expected = sum(np.outer(x[t - k], x[t - k]) for k in range(3)) / 3
    np.testing.assert_allclose(m[t, 1], expected, rtol=1e-5)
    np.testing.assert_allclose(m[t, 1], m[t, 1].T, rtol=1e-6)  # signature matrices are symmetric


def test_windows_from_the_parsed_bgl_log(parsed: Path) -> None:
    cfg = SignatureConfig(features=6, bin_lines=20, scales=(2, 4), window=3)
    sig = signature_windows(parsed, cfg)
    steps = 2000 // 20
    assert sig.windows.shape == (steps - 4 + 1 - 3 + 1, 3, 2, 6, 6)
    assert sig.windows.min() >= 0 and sig.windows.max() <= 1.0 + 1e-6
    assert len(sig.channels) == 6 and sig.channels[-1] == "<other>"
    assert 0 < sig.alerts.sum() < len(sig.alerts)  # BGL_2k holds some alert lines, not everywhere
    # consecutive windows overlap by window - 1 steps
    np.testing.assert_array_equal(sig.windows[1, :-1], sig.windows[0, 1:])


def test_training_learns_and_calibrates(shipped: dict[str, Any]) -> None:
    import torch

    t = shipped["train"]
    assert t.loss_last < t.loss_first and t.score_threshold > 0
    ckpt = torch.load(t.checkpoint, weights_only=True)
    assert ckpt["model_kwargs"] == {"scales": 3, "features": 8, "window": 5, "hidden": 16}
    assert ckpt["score_threshold"] == t.score_threshold
    with np.load(t.windows) as data:
        assert data[INPUT_NAME].shape[1:] == (5, 3, 8, 8)


def test_ship_verifies_and_records_the_static_window(shipped: dict[str, Any]) -> None:
    s = shipped["ship"]
    assert s.passed and s.latest is not None
    meta = json.loads(Path(str(s.release.model_path) + ".meta.json").read_text())
    text = json.dumps(meta)
    assert '"window_static": true' in text and '"model_type": "mscred"' in text
    report = s.report.to_dict()
    sweep = {g["dims"]["batch"] for g in report["shapes"] if g["kind"] == "sweep" and g["passed"]}
    assert {1, 64} <= sweep and len(sweep) >= 3  # the sweep proves the batch dim still varies
    data = [g for g in report["shapes"] if g["kind"] == "data"]
    assert data and data[0]["passed"] and data[0]["samples"] > 100  # every real window compared


def test_exported_window_is_static(shipped: dict[str, Any]) -> None:
    import onnxruntime as ort

    s = shipped["ship"]
    sess = ort.InferenceSession(str(s.release.model_path), providers=["CPUExecutionProvider"])
    shape = sess.get_inputs()[0].shape
    assert not isinstance(shape[0], int) and shape[1:] == [5, 3, 8, 8]
    ok = sess.run(None, {INPUT_NAME: np.zeros((3, 5, 3, 8, 8), np.float32)})
    assert ok[0].shape == (3, 3, 8, 8) and ok[1].shape == (3,)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        sess.run(None, {INPUT_NAME: np.zeros((1, 6, 3, 8, 8), np.float32)})


def test_cli_train_and_ship_errors(parsed: Path, tmp_path: Path) -> None:
    r = runner.invoke(
        app,
        [
            "recipes",
            "mscred",
            "train",
            "--parsed",
            str(parsed),
            "--out-dir",
            str(tmp_path),
            "--steps",
            "3",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["samples"] > 0 and (tmp_path / "mscred.pt").is_file()
    r = runner.invoke(app, ["recipes", "mscred", "train", "--parsed", str(tmp_path / "nope.parquet")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = runner.invoke(app, ["recipes", "mscred", "ship", "--model", str(tmp_path / "nope.pt")])
    assert r.exit_code == 1 and "does not exist" in r.output


def test_bad_signature_settings() -> None:
    with pytest.raises(ConfigError):
        SignatureConfig(features=1)

"""Shared fixtures: exported models are made once per session (exports are the slow part of the suite)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _require_component(available: bool, reason: str) -> None:
    if available:
        return
    if IN_CI:
        pytest.fail(f"required component missing under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def require_component():
    """``require_component(available, reason)``: skip when a real component is missing on a user's machine;
    under CI=true a missing component fails the run instead."""
    return _require_component


@pytest.fixture(autouse=True)
def _private_export_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own export cache: a dynamo failure remembered by one test must not skip it in another."""
    monkeypatch.setenv("ONNXSHIP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def model_families():
    """timm and Ultralytics made importable (tests/_torchvision_shim.py says why); skips when not installed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_torchvision_shim", ROOT / "tests" / "_torchvision_shim.py"
    )
    assert spec is not None and spec.loader is not None
    shim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shim)
    for name in ("timm", "ultralytics"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed (pip install 'onnxship[families]')")
    if not shim.install_torchvision_shim():
        pytest.skip(
            "torchvision does not import beside this torch build, even with the operator schemas declared"
        )
    os.environ.setdefault("YOLO_OFFLINE", "1")  # Ultralytics: never reach out for anything
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")  # ... and never pip-install a missing package
    # Importing Ultralytics replaces PIL.Image.open for the whole process (a HEIF fallback that imports, or
    # installs, pi-heif on any unreadable file). The rest of the suite checks how onnxship reports unreadable
    # images, so the session keeps Pillow's own function.
    import PIL.Image

    original_open = PIL.Image.open
    import ultralytics.utils.patches  # noqa: F401

    PIL.Image.open = original_open
    return shim


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def venv_python() -> str:
    return sys.executable


@pytest.fixture(scope="session")
def deeplog_export(tmp_path_factory: pytest.TempPathFactory):
    """The tiny DeepLog LSTM exported once with the TorchScript exporter (dynamic batch and seq)."""
    import torch

    import onnxship
    from onnxship.testing import DeepLogLSTM

    torch.manual_seed(0)
    model = DeepLogLSTM()
    out = tmp_path_factory.mktemp("deeplog")
    result = onnxship.export(
        model,
        inputs=["input_sequence:batch=2..16 x seq=10..32:int64"],
        out=out,
        name="deeplog",
        strategy="torchscript",
        metadata={"vocab_size": 30, "seq_len": 10},
    )
    return model, result


@pytest.fixture(scope="session")
def deeplog_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state_dict checkpoint of examples/deeplog/model.py:build_model."""
    import torch

    from onnxship.spec import parse_model_spec

    spec = parse_model_spec(str(ROOT / "examples/deeplog/model.py") + ":build_model")
    model = spec.load().model
    path = tmp_path_factory.mktemp("ckpt") / "deeplog.pt"
    torch.save(model.state_dict(), path)
    return path

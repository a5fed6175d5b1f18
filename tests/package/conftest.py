"""Fixtures for packaging tests: two real releases of a tiny DeepLog LSTM, shipped once per session."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

INPUT = "input_sequence:batch=2..16 x seq=10..32:int64:0..30"
T1 = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)
T2 = datetime(2026, 11, 2, 12, 0, 0, tzinfo=timezone.utc)


def ship_config(releases: Path, **package):
    from onnxship.spec import ShipConfig

    cfg = ShipConfig()
    cfg.model.name = "deeplog"
    cfg.paths.releases = str(releases)
    cfg.export.strategy = "torchscript"
    cfg.export.inputs = [INPUT]
    cfg.export.metadata = {"vocab_size": 30}
    cfg.verify.golden_samples = 4
    cfg.verify.sample_count = 8
    for k, v in package.items():
        setattr(cfg.package, k, v)
    return cfg


def write_vocab(path: Path, n: int = 30, digit_keys: bool = False) -> Path:
    vocab = {(str(i + 1) if digit_keys else f"template <{i}> seen"): i for i in range(n)}
    path.write_text(json.dumps(vocab), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def deeplog_model():
    import torch

    from onnxship.testing import DeepLogLSTM

    torch.manual_seed(0)
    return DeepLogLSTM()


@pytest.fixture(scope="session")
def shipped(tmp_path_factory, deeplog_model):
    """Two releases of the same model (first with a vocab asset), 2026-11-01 and 2026-11-02."""
    from onnxship.package import AssetSpec
    from onnxship.ship import ship

    root = tmp_path_factory.mktemp("pkg")
    vocab = write_vocab(root / "vocab.json")
    releases = root / "releases"
    r1 = ship(
        deeplog_model,
        config=ship_config(releases, portable=True),
        assets=[AssetSpec("vocab", vocab)],
        when=T1,
    )
    r2 = ship(deeplog_model, config=ship_config(releases), when=T2)
    return releases, r1, r2


def writable_copy(src: Path, dest: Path) -> Path:
    """A tamperable copy of a (read-only) release."""
    shutil.copytree(src, dest)
    for p in [dest, *dest.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    return dest

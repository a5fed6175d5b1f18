"""Fixtures for doctor tests: the fixture-log folder and a writer for synthetic onnxship JSON-lines logs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data() -> Path:
    return DATA


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[..., Path]:
    """``write_jsonl(loss, grad_norm=None, lr=None, steps=None, name=...)`` -> path of an onnxship JSON-lines log."""

    def write(
        loss: np.ndarray,
        grad_norm: np.ndarray | None = None,
        lr: np.ndarray | None = None,
        steps: np.ndarray | None = None,
        name: str = "train.jsonl",
    ) -> Path:
        n = len(loss)
        steps = np.arange(1, n + 1) * 10 if steps is None else steps
        lines = []
        for i in range(n):
            row = {
                "step": int(steps[i]),
                "epoch": round(float(steps[i]) / (10 * n), 4),
                "loss": float(loss[i]),
            }
            if grad_norm is not None:
                row["grad_norm"] = float(grad_norm[i])
            if lr is not None:
                row["learning_rate"] = float(lr[i])
            lines.append(json.dumps(row))
        path = tmp_path / name
        path.write_text("\n".join(lines) + "\n")
        return path

    return write

"""What every task metric shares: the gate thresholds (TaskGate), softmax and its margin, and input checks."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from onnxship._errors import ConfigError

__all__ = ["TaskGate", "softmax", "softmax_margin"]


@dataclass(frozen=True)
class TaskGate:
    """Task-level pass thresholds."""

    top1_mismatch_rate: float = 0.01  # classification: at most this fraction of top-1 decisions may differ
    map_delta: float = 0.01  # detection: |mAP@0.5 delta| and |mAP@0.5:0.95 delta| at most this
    iou_p95_delta: float = 0.01  # detection: p95 of (1 - IoU) over matched boxes at most this
    decision_disagreement: float = 0.01  # sequence: at most this fraction of anomaly decisions may differ
    prob_mse_mean: float | None = (
        None  # classification: mean per-sample MSE of softmax probabilities (None: off)
    )
    prob_mse_p99: float | None = None  # classification: p99 of the per-sample probability MSE (None: off)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float64."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _as_probs(x: np.ndarray) -> np.ndarray:
    """Rows that already are probabilities stay as they are; logits go through softmax."""
    x = np.asarray(x, dtype=np.float64)
    if x.size and x.min() >= 0.0 and np.allclose(x.sum(axis=-1), 1.0, atol=1e-3):
        return x
    return softmax(x)


def softmax_margin(logits: np.ndarray) -> np.ndarray:
    """Per-sample decision margin: top-1 minus top-2 probability, in [0, 1] (0 = on the decision boundary)."""
    p = _as_probs(_rows(logits, "logits"))
    if p.shape[1] < 2:
        return np.ones(p.shape[0])
    top2 = np.partition(p, -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def _rows(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 0:
        raise ConfigError(f"{what} is a scalar; expected [N, classes]", hint="pass the model's logits output")
    if x.ndim == 1:
        return x.reshape(1, -1)
    return x.reshape(-1, x.shape[-1])


def _check_pair(ref: np.ndarray, got: np.ndarray, what: str) -> None:
    if np.shape(ref) != np.shape(got):
        raise ConfigError(
            f"{what}: reference shape {list(np.shape(ref))} != candidate shape {list(np.shape(got))}",
            hint="both engines must answer the same batch",
        )


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None

"""Multivariate series from a parsed log and MSCRED's multi-scale signature matrices.

A step of the series is ``bin_lines`` consecutive log lines (BGL_2k's 2,000 lines span seven months, so wall-clock
bins would be mostly empty); each of the ``features`` channels counts one of the most frequent templates in the step
(the last channel counts all other templates). Counts are scaled to [0, 1] per channel.

The signature matrix at step t and scale w is ``M[i, j] = sum_{k < w} x_i(t - k) x_j(t - k) / w``; a model input is a
window of ``window`` consecutive steps of ``[scales, features, features]`` matrices, and the target is its last step.

DO NOT import pandas at module level (the ``logs`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxship._errors import ConfigError

__all__ = ["SignatureConfig", "Signatures", "log_series", "signature_matrices", "signature_windows"]


@dataclass(frozen=True)
class SignatureConfig:
    """How a parsed log becomes signature-matrix windows."""

    features: int = 8  # channels: the features-1 most frequent templates + "all other templates"
    bin_lines: int = 10  # log lines per step
    scales: tuple[int, ...] = (2, 5, 10)  # signature-matrix scales (steps)
    window: int = 5  # steps per model input (MSCRED's h); static in the exported model

    def __post_init__(self) -> None:
        if (
            self.features < 2
            or self.bin_lines < 1
            or self.window < 1
            or not self.scales
            or min(self.scales) < 1
        ):
            raise ConfigError(
                f"bad signature settings {self}", hint="features >= 2, bin_lines/window/scales >= 1"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "bin_lines": self.bin_lines,
            "scales": list(self.scales),
            "window": self.window,
        }


@dataclass
class Signatures:
    """Windows ``[N, window, scales, F, F]`` float32, per-window alert flag, and the channel names."""

    windows: np.ndarray
    alerts: np.ndarray  # [N] bool: an alert line falls in the window's last step
    channels: list[str]
    scale: np.ndarray  # per-channel count maxima used for scaling (re-use them on new logs)


def log_series(parsed: str | Path, cfg: SignatureConfig) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per-step template counts ``[T, F]`` (raw), per-step alert flags ``[T]`` and the channel names."""
    import pandas as pd

    df = pd.read_parquet(parsed)
    if "template" not in df.columns:
        raise ConfigError(
            f"{str(parsed)!r} has no 'template' column", hint="pass the parsed.parquet from parse"
        )
    top = df["template"].value_counts().index[: cfg.features - 1].tolist()
    chan = np.full(len(df), cfg.features - 1, dtype=np.int64)
    for i, t in enumerate(top):
        chan[(df["template"] == t).to_numpy()] = i
    steps = len(df) // cfg.bin_lines
    if steps < max(cfg.scales) + cfg.window:
        raise ConfigError(
            f"{len(df)} lines give {steps} steps of {cfg.bin_lines}; need at least "
            f"{max(cfg.scales) + cfg.window}",
            hint="use a longer log or a smaller --bin-lines",
        )
    step = np.arange(steps * cfg.bin_lines) // cfg.bin_lines
    counts = np.zeros((steps, cfg.features), np.float64)
    np.add.at(counts, (step, chan[: steps * cfg.bin_lines]), 1.0)
    alert_col = df["is_alert"] if "is_alert" in df.columns else pd.Series(False, index=df.index)
    alerts = np.zeros(steps, bool)
    np.logical_or.at(alerts, step, alert_col.fillna(False).to_numpy(bool)[: steps * cfg.bin_lines])
    return counts, alerts, [*top, "<other>"]


def signature_matrices(x: np.ndarray, scales: tuple[int, ...]) -> np.ndarray:
    """``[T, F]`` series -> ``[T, S, F, F]`` signature matrices (steps before the largest scale see zeros)."""
    x = np.asarray(x, np.float64)
    outer = np.einsum("ti,tj->tij", x, x)
    csum = np.concatenate([np.zeros((1, *outer.shape[1:])), np.cumsum(outer, axis=0)])
    t = np.arange(1, x.shape[0] + 1)
    mats = [(csum[t] - csum[np.maximum(t - w, 0)]) / w for w in scales]
    return np.stack(mats, axis=1).astype(np.float32)


def signature_windows(
    parsed: str | Path, cfg: SignatureConfig, scale: np.ndarray | None = None
) -> Signatures:
    """The model's inputs from a parsed log: scaled series -> signature matrices -> sliding windows."""
    counts, alerts, channels = log_series(parsed, cfg)
    scale = np.maximum(counts.max(axis=0), 1.0) if scale is None else np.asarray(scale, np.float64)
    mats = signature_matrices(counts / scale, cfg.scales)
    first = max(cfg.scales) - 1  # skip steps whose largest scale is not full yet
    idx = np.arange(first + cfg.window - 1, mats.shape[0])
    windows = np.stack([mats[i - cfg.window + 1 : i + 1] for i in idx]).astype(np.float32)
    return Signatures(windows=windows, alerts=alerts[idx], channels=channels, scale=scale)

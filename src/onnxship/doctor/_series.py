"""Helpers over a TrainLog's columns: finite rows, rolling medians, and how rows are named in findings."""

from __future__ import annotations

import numpy as np

from onnxship.doctor._readers import TrainLog

__all__ = [
    "data_advice",
    "evidence",
    "finite_rows",
    "fmt",
    "rolling_median_excluding_self",
    "window_medians",
    "where_list",
]


def finite_rows(log: TrainLog, metric: str, positive: bool = False) -> np.ndarray:
    v = log.values[metric]
    mask = log.logged[metric] & np.isfinite(v)
    if positive:
        mask &= v > 0
    return np.flatnonzero(mask)


def rolling_median_excluding_self(x: np.ndarray, k: int) -> np.ndarray:
    """Median of the up-to-2k neighbours of each point (NaN where fewer than 2 exist)."""
    pad = np.concatenate([np.full(k, np.nan), x, np.full(k, np.nan)])
    win = np.lib.stride_tricks.sliding_window_view(pad, 2 * k + 1).copy()
    win[:, k] = np.nan
    out = np.full(len(x), np.nan)
    enough = np.sum(np.isfinite(win), axis=1) >= 2
    if enough.any():
        out[enough] = np.nanmedian(win[enough], axis=1)
    return out


def fmt(v: float) -> str:
    return f"{v:.4g}"


def where_list(log: TrainLog, rows: list[int] | np.ndarray, limit: int = 6) -> str:
    rows = list(rows)
    text = ", ".join(log.where(r) for r in rows[:limit])
    return text + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def evidence(log: TrainLog, rows: list[int] | np.ndarray, metric: str, **extra: object) -> dict[str, object]:
    rows = [int(r) for r in rows]
    return {
        "rows": rows,
        log.x_label.replace(" ", "_"): [float(log.step[r]) for r in rows],
        "epoch": [float(log.epoch[r]) for r in rows],
        metric: [float(log.values[metric][r]) for r in rows],
        **extra,
    }


def data_advice(log: TrainLog, row: int) -> str:
    where = log.where(row)
    text = f"Check the data around {where}: look for corrupt, mislabeled or extreme samples in that batch"
    epoch = float(log.epoch[row])
    fractional = bool(np.any(np.isfinite(log.epoch) & (log.epoch != np.round(log.epoch))))
    if np.isfinite(epoch) and fractional:  # HF-style epoch progress (0.22 = 22% through the first epoch)
        frac = epoch - np.floor(epoch)
        text += (
            f" ({frac:.0%} into epoch {int(np.floor(epoch)) + 1}; without shuffling that is around "
            f"{frac:.0%} of the dataset)"
        )
    if log.x_label == "step":
        text += "; re-run with the same seed and dump the inputs/labels of that step"
    return text + "."


def window_medians(x: np.ndarray, k: int) -> np.ndarray:
    """``out[j] = median(x[j:j + k])`` for every full window (length ``len(x) - k + 1``), vectorised."""
    if len(x) < k:
        return np.empty(0)
    return np.median(np.lib.stride_tricks.sliding_window_view(x, k), axis=1)

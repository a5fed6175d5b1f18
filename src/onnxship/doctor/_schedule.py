"""Learning-rate schedule shape: warm-up, then constant, linear, cosine, exponential or step decay."""

from __future__ import annotations

import numpy as np

from onnxship.doctor._findings import Finding
from onnxship.doctor._readers import TrainLog

__all__ = ["classify_decay", "describe_schedule"]

FIT_TOLERANCE = 0.03  # max abs error (fraction of the peak lr) for a decay model to count as a fit
FLAT = 0.01  # relative change treated as "not moving"


def describe_schedule(log: TrainLog) -> tuple[str | None, Finding | None]:
    """A one-line description of the lr schedule, and an info Finding (a warning if the lr is 0 throughout)."""
    v = log.values["learning_rate"]
    rows = np.flatnonzero(log.logged["learning_rate"] & np.isfinite(v))
    if len(rows) < 3:
        return None, None
    lr, x = v[rows], log.step[rows]
    peak = float(lr.max())
    if peak <= 0:
        return "zero", Finding(
            "lr_schedule",
            "warning",
            "the learning rate is 0 at every logged step",
            f"learning_rate is 0 across {len(rows)} logs: the optimizer never moves the weights.",
            [
                "Set a learning rate > 0; check the scheduler's warm-up (a warm-up longer than the run stays at 0) "
                "and that the scheduler is stepped after the optimizer."
            ],
            steps=[float(x[0])],
            evidence={"learning_rate": [0.0]},
        )
    y = lr / peak
    p = int(np.argmax(y >= 1 - 1e-9))
    parts: list[str] = []
    diffs = np.diff(y[: p + 1])
    warmup = p > 0 and y[0] < 0.95 and bool(np.mean(diffs >= -FLAT) >= 0.9)
    tail_y, tail_x = y[p:], x[p:]
    if warmup and len(tail_y) <= 1:
        parts.append(
            f"warm-up still rising at the end of the log (lr {lr[0]:.3g} → {peak:.3g} over {p + 1} "
            "logs; the peak is not reached yet)"
        )
        warmup = False  # the whole description is the warm-up
    elif warmup:
        parts.append(f"warm-up over {p} logs (to {log.x_label} {x[p]:g}, lr {lr[0]:.3g} → {peak:.3g})")
    if len(tail_y) <= 1:
        if not parts:
            parts.append(f"lr {peak:.3g}")
    elif np.all(np.abs(tail_y - 1) <= FLAT):
        parts.append(f"constant at {peak:.3g}")
    else:
        parts.append(classify_decay(tail_x - tail_x[0], tail_y) + f" (to {lr[-1]:.3g} at the last log)")
    shape = ", then ".join(parts) if warmup else parts[-1]
    return shape, Finding(
        "lr_schedule",
        "info",
        f"learning-rate schedule: {shape}",
        f"learning_rate over {len(rows)} logs: first {lr[0]:.3g}, peak {peak:.3g} at {log.x_label} {x[p]:g}, "
        f"last {lr[-1]:.3g}.",
        evidence={
            "shape": shape,
            "first": float(lr[0]),
            "peak": float(peak),
            "peak_at": float(x[p]),
            "last": float(lr[-1]),
            "warmup_logs": p if warmup else 0,
        },
    )


def classify_decay(t: np.ndarray, y: np.ndarray) -> str:
    """Name the decay of ``y`` (lr / peak, starting at 1) over ``t`` (steps since the peak)."""
    diffs = np.diff(y)
    if np.mean(diffs <= FLAT * 0.1) < 0.9:
        return "irregular (goes up again: cyclic, restarts or a plateau scheduler)"
    moves = np.abs(diffs) > 1e-9  # a step schedule holds the lr exactly between its few, large drops
    if len(y) >= 6 and 1 <= moves.sum() <= max(4, 0.1 * len(diffs)) and np.all(np.abs(diffs[moves]) > FLAT):
        drops = y[1:][moves] / y[:-1][moves]
        return f"step decay ({int(moves.sum())} drop{'s' if moves.sum() > 1 else ''}, ×{np.median(drops):.2g} each)"
    if t[-1] <= 0:
        return "decaying"
    u = t / t[-1]
    fits: dict[str, float] = {}
    a = np.vstack([np.ones_like(u), u]).T
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    fits["linear decay"] = float(np.max(np.abs(a @ coef - y)))
    # cosine to 0 over an unknown total length T ≥ the logged length (the log may stop before the schedule ends)
    best = np.inf
    for total in np.geomspace(1.0, 50.0, 200):
        best = min(best, float(np.max(np.abs(0.5 * (1 + np.cos(np.pi * u / total)) - y))))
    fits["cosine decay"] = best
    if (y > 0).all():
        coef, *_ = np.linalg.lstsq(a, np.log(y), rcond=None)
        fits["exponential decay"] = float(np.max(np.abs(np.exp(a @ coef) - y)))
    name, err = min(fits.items(), key=lambda kv: kv[1])
    return name if err <= FIT_TOLERANCE else "decaying (no simple linear/cosine/exponential shape)"

"""PNG plot of a training log: loss (raw, smoothed, and the evaluation loss when the log has one), grad_norm (log
scale) and learning rate, with the findings marked. A constant learning rate gets no panel of its own: the loss
panel says its value.

DO NOT import matplotlib at module level: it is the optional ``logs`` extra, loaded only when a plot is asked for.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from onnxship._errors import DoctorError, require
from onnxship._util import atomic_write
from onnxship.doctor._findings import TrainLogResult

__all__ = ["plot_train_log"]

_COLORS = {"critical": "#c62828", "warning": "#ef6c00", "info": "#1565c0"}
_PHASE_COLORS = {
    "unstable start": "#ffcdd2",
    "start": "#eeeeee",
    "fast descent": "#fff9c4",
    "convergence": "#c8e6c9",
    "still descending": "#bbdefb",
    "no clear descent": "#eeeeee",
}
_MARKERS = {
    "nonfinite": "X",
    "loss_zero": "v",
    "unstable_start": "s",
    "grad_explosion": "o",
    "loss_spike": "o",
    "vanishing_gradients": "D",
}  # findings marked on the curves, one shape each


def plot_train_log(result: TrainLogResult, out: str | Path) -> Path:
    """Write the plot as a PNG (atomically) and return its path.

    Example:
        >>> plot_train_log(diagnose_train_log("trainer_state.json"), "out/train.png")  # doctest: +SKIP
    """
    require("matplotlib", "logs")
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise DoctorError(
            f"plot path {str(out)!r} does not end in .png", hint="pass e.g. --plot out/train.png"
        )
    log = result.log
    constant_lr = _constant(log, "learning_rate")
    metrics = [m for m in ("loss", "grad_norm", "learning_rate") if log.has(m)]
    if constant_lr is not None and len(metrics) > 1:
        metrics.remove("learning_rate")
    heights = [_HEIGHTS[m] for m in metrics]
    fig = Figure(figsize=(10, sum(heights) + 0.6), dpi=100, layout="constrained")
    axes = fig.subplots(len(metrics), 1, sharex=True, squeeze=False, height_ratios=heights)[:, 0]
    with warnings.catch_warnings(), np.errstate(over="ignore", under="ignore"):
        # values near the float limits (1e±300) make matplotlib's own transforms overflow; the plot still renders
        warnings.simplefilter("ignore", RuntimeWarning)
        for ax, metric in zip(axes, metrics, strict=True):
            _draw_metric(ax, result, metric)
            if metric == "loss":
                _draw_loss_extras(ax, result, constant_lr)
    axes[-1].set_xlabel(log.x_label)
    if log.x_label != "step" or np.all(log.step == np.round(log.step)):
        from matplotlib.ticker import MaxNLocator

        axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    title = f"{Path(log.path).name} ({log.format}): "
    title += f"{len(result.alarms)} alarm(s)" if result.alarms else "no alarms"
    fig.suptitle(title, fontsize=11)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(tmp: str) -> None:
        with warnings.catch_warnings(), np.errstate(over="ignore", under="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            fig.savefig(tmp, format="png")

    atomic_write(out, save, suffix=".png")
    return out


def _draw_metric(ax, result: TrainLogResult, metric: str) -> None:  # noqa: ANN001 - matplotlib Axes
    log = result.log
    x, v = log.step, log.values[metric]
    logged = log.logged[metric]
    finite = logged & np.isfinite(v)
    for i, phase in enumerate(result.phases):  # each band reaches the next phase's start: no gaps
        right = log.step[result.phases[i + 1].first] if i + 1 < len(result.phases) else log.step[phase.last]
        ax.axvspan(
            log.step[phase.first],
            right,
            color=_PHASE_COLORS.get(phase.name, "#eeeeee"),
            alpha=0.5,
            lw=0,
            label=phase.name if metric == "loss" else None,
        )
    raw_alpha = 0.5 if metric == "loss" and finite.sum() >= 8 else 1.0  # the smoothed loss is drawn over it
    ax.plot(
        x[finite],
        v[finite],
        color="#37474f",
        lw=1.2,
        marker="." if finite.sum() < 200 else None,
        ms=3,
        alpha=raw_alpha,
    )
    positive = finite & (v > 0)
    if positive.any() and (
        metric == "grad_norm"
        or (
            metric == "loss"
            and positive.sum() == finite.sum() - (v[finite] == 0).sum()
            and _wide(v[positive])
        )
    ):
        ax.set_yscale("log")
    zero = logged & (v == 0)
    if zero.any() and ax.get_yscale() == "log":  # no place for 0 on a log axis: mark along the bottom edge
        ax.scatter(
            x[zero],
            np.full(int(zero.sum()), 0.03),
            transform=ax.get_xaxis_transform(),
            marker="v",
            color=_COLORS["warning"],
            zorder=5,
            label=f"{metric} = 0",
        )
    bad = logged & ~np.isfinite(v)
    if bad.any():  # NaN/Inf have no y: mark them along the top edge
        ax.scatter(
            x[bad],
            np.full(int(bad.sum()), 0.97),
            transform=ax.get_xaxis_transform(),
            marker="x",
            color=_COLORS["critical"],
            zorder=5,
            label="NaN/Inf",
        )
    for f in result.findings:
        if f.kind not in _MARKERS or not f.steps:
            continue
        key = metric if metric in f.evidence else None
        if key is None:
            continue
        xs = np.asarray(f.steps[: len(f.evidence[key])], dtype=float)
        ys = np.asarray(f.evidence[key], dtype=float)
        ok = np.isfinite(ys) & ((ys > 0) if ax.get_yscale() == "log" else True)
        if not ok.any():
            continue
        ax.scatter(
            xs[ok],
            ys[ok],
            s=48,
            marker=_MARKERS[f.kind],
            facecolors="none",
            edgecolors=_COLORS[f.severity],
            lw=1.5,
            zorder=6,
            label=f"{f.code} {f.kind.replace('_', ' ')}",
        )
    if metric == "grad_norm" and result.suggested_max_norm:
        ax.axhline(
            result.suggested_max_norm,
            color="#6a1b9a",
            ls="--",
            lw=1,
            label=f"suggested max-norm {result.suggested_max_norm:g}",
        )
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=7, loc="upper right", framealpha=0.8)


_HEIGHTS = {"loss": 3.2, "grad_norm": 2.4, "learning_rate": 1.4}  # inches: the loss is what a reader looks at


def _constant(log, metric: str) -> float | None:  # noqa: ANN001 - TrainLog
    """The value of a metric that never changes over the log (None when it changes or is not logged)."""
    if not log.has(metric):
        return None
    v = log.values[metric][log.logged[metric] & np.isfinite(log.values[metric])]
    if v.size == 0 or not np.allclose(v, v[0], rtol=1e-9, atol=0):
        return None
    return float(v[0])


def smoothed(values: np.ndarray, window: int | None = None) -> np.ndarray:
    """A centred moving average over about 5% of the log (at least 3 points), NaN-aware; same length."""
    n = len(values)
    window = window or max(3, int(round(n * 0.05)) | 1)
    if n < 3:
        return values.astype(np.float64)
    ok = np.isfinite(values)
    filled = np.where(ok, values, 0.0)
    kernel = np.ones(window)
    total = np.convolve(filled, kernel, mode="same")
    count = np.convolve(ok.astype(np.float64), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def _draw_loss_extras(ax, result: TrainLogResult, constant_lr: float | None) -> None:  # noqa: ANN001
    log = result.log
    x, v = log.step, log.values["loss"]
    finite = log.logged["loss"] & np.isfinite(v)
    if finite.sum() >= 8:
        ax.plot(x[finite], smoothed(v[finite]), color="#1565c0", lw=2.2, label="loss (smoothed)", zorder=4)
    ev = log.eval_loss
    if len(ev):
        ok = np.isfinite(ev[:, 1]) & ((ev[:, 1] > 0) if ax.get_yscale() == "log" else True)
        ax.plot(ev[ok, 0], ev[ok, 1], color="#e65100", lw=1.6, marker="o", ms=5, label="eval_loss", zorder=5)
    if constant_lr is not None and log.has("grad_norm"):
        ax.text(
            0.01,
            0.03,
            f"learning rate constant at {constant_lr:g}",
            transform=ax.transAxes,
            fontsize=8,
            color="#455a64",
        )
    ax.legend(fontsize=7, loc="upper right", framealpha=0.8)


def _wide(values: np.ndarray) -> bool:
    """Use a log axis when the values span more than two decades."""
    return bool(np.log10(values.max()) - np.log10(values.min()) > 2)

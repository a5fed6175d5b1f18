"""Loss checks: exact zeros, spikes against the local trend and the log's own noise, phases of the run."""

from __future__ import annotations

import numpy as np

from onnxship.doctor._findings import Finding, Phase, TrainLogConfig
from onnxship.doctor._readers import TrainLog
from onnxship.doctor._series import data_advice, evidence, finite_rows, fmt, where_list, window_medians

__all__ = [
    "find_phases",
    "loss_spikes",
    "loss_zero",
]

MIN_TREND_POINTS = 5  # below this, only NaN/Inf and zero-loss checks run


def loss_zero(log: TrainLog) -> list[Finding]:
    zero = np.flatnonzero(log.logged["loss"] & (log.values["loss"] == 0.0))
    if not len(zero):
        return []
    first = int(zero[0])
    pos = finite_rows(log, "loss", positive=True)
    before = pos[pos < first]
    prev = (
        f" Just before, the loss was {fmt(log.values['loss'][before[-1]])} at {log.where(int(before[-1]))}."
        if len(before)
        else ""
    )
    return [
        Finding(
            "loss_zero",
            "warning",
            f"loss is exactly 0 at {len(zero)} log entr{'y' if len(zero) == 1 else 'ies'}",
            f"loss == 0.0 first at {log.where(first)} ({where_list(log, zero)}).{prev} A training loss of exactly 0 "
            "almost never happens with real data.",
            [
                "Check for label leakage (the target is, or is derivable from, an input feature) and for duplicated "
                "train/eval data.",
                "Check for batches where every label is masked (-100) or empty, and that the loss is computed on the "
                "right tensor.",
                "The HF Trainer rounds the logged loss to 4 decimals: 0.0 may be a loss below 5e-05 (a model that "
                "memorised the training set). Evaluate on held-out data before shipping it.",
            ],
            steps=[float(log.step[r]) for r in zero[:50]],
            evidence=evidence(log, zero[:50], "loss"),
        )
    ]


def loss_spikes(log: TrainLog, config: TrainLogConfig, start_row_end: int) -> Finding | None:
    rows = finite_rows(log, "loss", positive=True)  # exact zeros have their own finding
    if len(rows) < MIN_TREND_POINTS + 2:
        return None
    lg = np.log10(log.values["loss"][rows])
    ks = config.window or (2 if len(lg) < 30 else 3)
    n = len(lg)
    wm = window_medians(lg, ks)  # wm[j] = median(lg[j:j + ks])
    idx = np.arange(ks, n)
    left = wm[idx - ks]  # median of the ks values before i
    has_right = idx + ks <= n - 1
    right = wm[np.minimum(idx + 1, n - ks)]  # median of the ks values after i (where they exist)
    # the local trend at i: halfway (in log space) between the medians before and after; at the end of the log
    # only the past is known. Points at the very start are the unstable-start check's job.
    resid = np.full(n, np.nan)
    resid[ks:] = lg[ks:] - np.where(has_right, (left + right) / 2, left)
    valid = np.isfinite(resid)
    # The log's own noise, from second differences: a smooth trend (even a steep, curved descent) cancels out,
    # white noise of std s gives std s*sqrt(6). MAD keeps the spikes themselves from inflating it.
    d2 = np.diff(lg, 2)
    sigma = 1.4826 * float(np.median(np.abs(d2 - np.median(d2)))) / np.sqrt(6.0)
    threshold = max(np.log10(config.spike_factor), config.noise_sigmas * sigma)
    with np.errstate(invalid="ignore"):
        hit = np.flatnonzero(valid & (resid >= threshold) & (rows > start_row_end))
    if not len(hit):
        return None
    spike_rows = rows[hit]
    trend = 10 ** (lg[hit] - resid[hit])
    parts = [
        f"{fmt(log.values['loss'][r])} at {log.where(int(r))} ({10 ** resid[i]:.3g}× the local trend "
        f"{fmt(t)})"
        for r, i, t in list(zip(spike_rows, hit, trend, strict=True))[:5]
    ]
    worst = int(spike_rows[int(np.argmax(resid[hit]))])
    epochs = sorted({float(log.epoch[r]) for r in spike_rows if np.isfinite(log.epoch[r])})
    return Finding(
        "loss_spike",
        "warning",
        f"{len(hit)} loss spike{'s' if len(hit) > 1 else ''}"
        + (f" (epoch {', '.join(fmt(e) for e in epochs[:5])})" if epochs else ""),
        "The loss jumps to "
        + "; ".join(parts)
        + (f" and {len(hit) - 5} more" if len(hit) > 5 else "")
        + f". Spike threshold for this log: {10**threshold:.3g}× (its own noise level taken into account).",
        [
            data_advice(log, worst),
            "Spikes that recur at the same position every epoch point at specific samples; random ones at "
            "optimisation: lower the learning rate or clip gradients.",
            "Class imbalance or outliers in a few batches also show up this way: check the label distribution "
            "of those batches.",
        ],
        steps=[float(log.step[r]) for r in spike_rows],
        evidence=evidence(
            log,
            spike_rows,
            "loss",
            trend=[float(t) for t in trend],
            ratio=[float(10 ** resid[i]) for i in hit],
            threshold=float(10**threshold),
        ),
    )


def find_phases(log: TrainLog, start_row_end: int) -> tuple[list[Phase], list[Finding]]:
    rows = finite_rows(log, "loss")
    if len(rows) < MIN_TREND_POINTS:
        return [], []
    v = log.values["loss"][rows].copy()
    log_space = bool((v >= 0).all() and (v > 0).any())
    if log_space:
        v[v == 0] = v[v > 0].min()  # exact zeros have their own finding; clamp them for the trend
        v = np.log10(v)
    n = len(v)
    h = max(1, n // 20)
    # a running median (half-width n/20) evaluated at up to 2000 positions: phase borders need no finer grid
    pos = np.unique(np.linspace(0, n - 1, min(n, 2000)).round().astype(int))
    s = np.array([np.median(v[max(0, i - h) : i + h + 1]) for i in pos])
    first, last = float(s[0]), float(s[-1])
    drop = first - last
    unit = (lambda d: f"{10**d:.3g}×") if log_space else (lambda d: f"{d:.4g}")
    raw = log.values["loss"][rows]
    findings: list[Finding] = []
    rise = np.log10(1.2) if log_space else 0.2 * abs(first)
    if last - first >= rise:
        findings.append(
            Finding(
                "loss_rising",
                "warning",
                "the loss is higher at the end than at the start",
                f"Loss {fmt(raw[0])} at {log.where(int(rows[0]))} → {fmt(raw[-1])} at "
                f"{log.where(int(rows[-1]))}.",
                [
                    "The run is diverging or not learning: lower the learning rate, check that the labels match the "
                    "inputs, and that the optimizer steps the model's parameters."
                ],
                steps=[float(log.step[rows[-1]])],
                evidence=evidence(log, [rows[0], rows[-1]], "loss"),
            )
        )
    span = float(s.max() - s.min())
    clear = drop >= (np.log10(1.5) if log_space else max(0.2 * abs(first), 0.33 * span)) and drop > 0
    if not clear:
        phase = Phase("no clear descent", int(rows[0]), int(rows[-1]), f"loss {fmt(raw[0])} → {fmt(raw[-1])}")
        findings.append(
            Finding(
                "phases",
                "info",
                "no clear descent",
                f"The smoothed loss moves little over the log: {log.where(phase.first)} – {log.where(phase.last)} "
                f"({phase.note}).",
                [
                    "If the model should still be learning: check that the learning rate is not too small and that the "
                    "optimizer steps the parameters the loss depends on. Fine-tuning an already good model can look "
                    "like this too."
                ],
                evidence={
                    "phases": [
                        {
                            "name": phase.name,
                            "from": float(log.step[phase.first]),
                            "to": float(log.step[phase.last]),
                            "note": phase.note,
                        }
                    ]
                },
            )
        )
        return [phase], findings
    i10 = int(pos[np.argmax(s <= first - 0.1 * drop)])
    i90 = int(pos[np.argmax(s <= first - 0.9 * drop)])
    phases: list[Phase] = []
    if i10 > 0:
        unstable = start_row_end >= rows[0]
        phases.append(
            Phase(
                "unstable start" if unstable else "start",
                int(rows[0]),
                int(rows[i10 - 1]),
                f"loss {fmt(raw[0])} → {fmt(raw[i10 - 1])}",
            )
        )
    phases.append(
        Phase("fast descent", int(rows[i10]), int(rows[i90]), f"loss {fmt(raw[i10])} → {fmt(raw[i90])}")
    )
    if i90 < len(rows) - 1:
        n_tail = max(3, n // 5)
        change = float(s[-1] - s[min(int(np.searchsorted(pos, n - n_tail)), len(s) - 1)])
        still = change <= -(np.log10(1.25) if log_space else 0.2 * abs(drop))
        note = (
            f"still improving: {unit(-change) if log_space else unit(change)} lower over the last {n_tail} "
            "logs"
            if still
            else f"flat over the last {n_tail} logs"
        )
        phases.append(
            Phase(
                "still descending" if still else "convergence",
                int(rows[i90 + 1]),
                int(rows[-1]),
                f"loss {fmt(raw[i90 + 1])} → {fmt(raw[-1])}; {note}",
            )
        )
    text = "; ".join(f"{p.name}: {log.where(p.first)} – {log.where(p.last)} ({p.note})" for p in phases)
    advice = (
        ["The loss was still falling at the end of the log: more steps would likely help."]
        if phases[-1].name == "still descending"
        else []
    )
    findings.append(
        Finding(
            "phases",
            "info",
            " → ".join(p.name for p in phases),
            text + ".",
            advice,
            evidence={
                "phases": [
                    {
                        "name": p.name,
                        "from": float(log.step[p.first]),
                        "to": float(log.step[p.last]),
                        "note": p.note,
                    }
                    for p in phases
                ]
            },
        )
    )
    return phases, findings

"""Training-log analysis: phases, grad_norm explosions, loss spikes, vanishing gradients, NaN/Inf, zero loss.

Every test is relative to the log itself (rolling medians, ratios, the log's own noise level), never a fixed
number, so a loss of 18 000 and a loss of 0.3 are judged the same way.
"""

from __future__ import annotations

import numpy as np

from onnxship.doctor._findings import Finding, TrainLogConfig, TrainLogResult
from onnxship.doctor._gradients import (
    clip_advice,
    explosion_finding,
    find_explosions,
    suggest_max_norm,
    unstable_prefix,
    unstable_start_finding,
    vanishing,
)
from onnxship.doctor._loss import MIN_TREND_POINTS, find_phases, loss_spikes, loss_zero
from onnxship.doctor._readers import TrainLog
from onnxship.doctor._schedule import describe_schedule
from onnxship.doctor._series import data_advice, evidence, finite_rows, fmt, where_list

__all__ = ["analyze"]


def analyze(log: TrainLog, config: TrainLogConfig) -> TrainLogResult:
    """Run every check on ``log`` and return the findings, most severe first."""
    findings: list[Finding] = []
    findings += _nonfinite(log)
    findings += loss_zero(log)
    g_rows = finite_rows(log, "grad_norm", positive=True)
    g = log.values["grad_norm"][g_rows]
    k = config.window or int(np.clip(len(g) // 20, 2, 10))
    start = unstable_prefix(g, config.explosion_factor) if len(g) >= MIN_TREND_POINTS else 0
    explosions = find_explosions(g, k, config.explosion_factor, start) if len(g) >= MIN_TREND_POINTS else []
    stable = np.delete(g[start:], [i - start for i in explosions])
    if len(stable):  # a diverging tail is not "stable" either: keep what lies within a factor of the median
        stable = stable[stable <= config.explosion_factor * np.median(stable)]
    max_norm = suggest_max_norm(stable if len(stable) >= 5 else g, config.clip_percentile)
    clip = clip_advice(log, max_norm, config.clip_percentile)
    start_row_end = int(g_rows[start - 1]) if start else -1

    if start:
        findings.append(unstable_start_finding(log, g_rows, g, start, clip))
    if explosions:
        findings.append(explosion_finding(log, g_rows, g, k, explosions, clip))
    spikes = loss_spikes(log, config, start_row_end)
    if spikes is not None:
        findings.append(spikes)
    findings += vanishing(log, g_rows, g, start, config.vanish_factor)
    schedule, lr_finding = describe_schedule(log)
    if lr_finding is not None:
        findings.append(lr_finding)
    phases, phase_findings = find_phases(log, start_row_end)
    findings += phase_findings
    _cross_reference(findings, log, schedule)
    if len(log) < MIN_TREND_POINTS:
        findings.append(
            Finding(
                "short_log",
                "info",
                f"only {len(log)} log entries",
                "Too few entries for trend checks (phases, spikes, explosions); NaN/Inf and "
                "zero-loss checks still ran.",
                ["Log more often (HF: logging_steps)."],
            )
        )
    order = {"critical": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: (order[f.severity], f.code))
    return TrainLogResult(
        log=log, findings=findings, phases=phases, schedule=schedule, suggested_max_norm=max_norm
    )


def _nonfinite(log: TrainLog) -> list[Finding]:
    out: list[Finding] = []
    loss_bad = np.flatnonzero(log.logged["loss"] & ~np.isfinite(log.values["loss"]))
    g_bad = np.flatnonzero(log.logged["grad_norm"] & ~np.isfinite(log.values["grad_norm"]))
    if len(loss_bad):
        first = int(loss_bad[0])
        before = finite_rows(log, "loss")
        before = before[before < first]
        last_ok = (
            f" The last finite loss was {fmt(log.values['loss'][before[-1]])} at "
            f"{log.where(int(before[-1]))}."
            if len(before)
            else ""
        )
        out.append(
            Finding(
                "nonfinite",
                "critical",
                f"loss is NaN/Inf from {log.where(first)}",
                f"{len(loss_bad)} of {int(log.logged['loss'].sum())} logged loss values are NaN or Inf, first at "
                f"{log.where(first)} ({where_list(log, loss_bad)}).{last_ok}",
                [
                    "The run diverged: lower the learning rate or lengthen the warm-up.",
                    "In fp16, overflow gives Inf/NaN: use bf16, or keep the loss scaler enabled.",
                    "Look for log(0), division by zero or sqrt of a negative in the loss, and for NaN/Inf in the inputs "
                    "or labels.",
                    data_advice(log, first),
                ],
                steps=[float(log.step[r]) for r in loss_bad[:50]],
                evidence=evidence(log, loss_bad[:50], "loss"),
            )
        )
    if len(g_bad):
        n_logged = int(log.logged["grad_norm"].sum())
        rare = not len(loss_bad) and len(g_bad) <= max(1, 0.05 * n_logged)
        first = int(g_bad[0])
        advice = (
            [
                "Typical of fp16 mixed precision: the GradScaler skips these steps and lowers its scale. "
                "Harmless while it stays rare and the loss stays finite."
            ]
            if rare
            else [
                "Gradients overflowed: lower the learning rate, clip gradients, and check the data at the "
                "first such step.",
                data_advice(log, first),
            ]
        )
        out.append(
            Finding(
                "nonfinite",
                "info" if rare else "critical",
                f"grad_norm is NaN/Inf at {len(g_bad)} step(s)",
                f"{len(g_bad)} of {n_logged} logged grad_norm values are NaN or Inf ({where_list(log, g_bad)})"
                + ("; the loss stayed finite." if not len(loss_bad) else "."),
                advice,
                steps=[float(log.step[r]) for r in g_bad[:50]],
                evidence=evidence(log, g_bad[:50], "grad_norm"),
            )
        )
    return out


def _cross_reference(findings: list[Finding], log: TrainLog, schedule: str | None) -> None:
    """Advice that depends on two findings at once (an unstable start without warm-up, spikes at explosions)."""
    kinds = {f.kind: f for f in findings}
    if "unstable_start" in kinds and schedule is not None:
        f = kinds["unstable_start"]
        if "warm-up" in schedule:
            f.advice[1] = (
                "The log already has a learning-rate warm-up, and the start is still unstable: lower "
                "the peak learning rate or start the warm-up from a smaller value."
            )
        else:
            f.advice[1] = (
                "There is no learning-rate warm-up in this log: add one (HF: warmup_ratio=0.05–0.1 or "
                "warmup_steps) so the first updates are small."
            )
    if "loss_spike" in kinds and "grad_explosion" in kinds:
        spikes = set(kinds["loss_spike"].steps)
        both = sorted(spikes & set(kinds["grad_explosion"].steps))
        if both:
            kinds["loss_spike"].advice.insert(
                0,
                "The spike at "
                + ", ".join(log.x_label + " " + fmt(s) for s in both[:5])
                + " coincides with a grad_norm explosion: "
                "gradient clipping would have bounded the update.",
            )

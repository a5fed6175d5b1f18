"""Verdicts from the accumulated statistics: each shape group passes or fails, the failure list (the report's
``failure_reason``) and the one-line hint a failed run prints.
"""

from __future__ import annotations

import math
from typing import Any

from onnxship.verify._engine import _Engine
from onnxship.verify._metrics import OutputSummary
from onnxship.verify._policy import GatePolicy

__all__ = ["failure_hint", "failure_list", "judge_groups"]


def judge_groups(engine: _Engine, policy: GatePolicy, no_mse: GatePolicy) -> list[dict[str, Any]]:
    """Each shape/data/values group of the run with its verdict and per-output numbers (report ``shapes``)."""
    groups = []
    for g in engine.groups.values():
        # Swept values scale the outputs: their groups are judged elementwise (or by cosine), not by raw MSE.
        g_policy = no_mse if g["kind"] == "values" else policy
        outs = {o: a.summary(g_policy) for o, a in g["acc"].items()}
        g_pass = g["status"] != "failed" and all(s.passed for s in outs.values() if s.samples)
        if g["status"] == "skipped":
            g_pass = True
        elif not g_pass and g["status"] == "passed":
            g["status"] = "failed"
            bad = [s for s in outs.values() if not s.passed]
            g["error"] = "; ".join(f"{s.name}: {s.failures[0]}" for s in bad if s.failures)
        groups.append(
            {
                **{k: v for k, v in g.items() if k != "acc"},
                "passed": g_pass,
                "outputs": {
                    o: {
                        "max_abs": s.max_abs,
                        "mse_mean": s.mse_mean,
                        "cosine_min": s.cosine_min,
                        "min_passing_atol": s.min_passing_atol,
                        "passed": s.passed,
                        "histogram": s.histogram,  # per-shape error histogram in report.html
                    }
                    for o, s in outs.items()
                    if s.samples
                },
            }
        )
    return groups


def failure_list(
    engine: _Engine,
    summaries: list[OutputSummary],
    task_res: Any,
    task: str | None,
    groups: list[dict[str, Any]],
    static_axes: list[str],
) -> tuple[list[str], OutputSummary | None]:
    """Why the gate fails, most telling first (empty: it passes), and the worst failing output."""
    failures: list[str] = []
    if engine.errors:
        failures.append(engine.errors[0])
    bad_out = [s for s in summaries if not s.passed]
    worst = max(bad_out, key=lambda s: (s.min_passing_atol, s.max_abs), default=None)
    if worst is not None:
        failures.append(f"output {worst.name!r}: {worst.failures[0]}")
    if task_res is not None and not task_res.passed:
        failures.append(f"{task}: {task_res.reason}")
    bad_groups = [g for g in groups if g["status"] == "failed" and g["kind"] not in ("data", "values")]
    if bad_groups:
        failures.append(
            f"{len(bad_groups)} shape(s) failed; first {bad_groups[0]['group']}: {bad_groups[0]['error']}"
        )
    bad_values = [g for g in groups if g["status"] == "failed" and g["kind"] == "values"]
    if bad_values:
        failures.append(
            f"{len(bad_values)} value variant(s) failed (a branch on tensor values?); first "
            f"{bad_values[0]['group']}: {bad_values[0]['error']}"
        )
    if static_axes:
        failures.append("dynamic axes exported static: " + "; ".join(static_axes))
    return failures, worst


def failure_hint(
    summaries: list[OutputSummary],
    worst_any: OutputSummary | None,
    policy: GatePolicy,
    diags: list[dict[str, Any]],
) -> str:
    """What to do about a failed gate: NaN/Inf first, else the tolerance that would pass; then the likely causes."""
    causes = [d["title"] for d in diags if d["source"] == "verify"]
    nonfinite = [
        o.name for o in summaries if (o.nonfinite_reference or o.nonfinite_candidate) and not o.passed
    ]
    if nonfinite:
        lead = (
            f"outputs {nonfinite} hold NaN/Inf: find the log/div/sqrt/overflow that makes them, or pass "
            "--allow-nonfinite if they are expected "
        )
    elif worst_any is not None and math.isfinite(worst_any.min_passing_atol):
        tol = policy.tolerance_for(worst_any.name)
        lead = f"worst output {worst_any.name!r} would pass with atol={worst_any.min_passing_atol:.3g}" + (
            f" (gate: atol={tol.atol:g} rtol={tol.rtol:g}) " if tol is not None else " "
        )
    else:
        lead = ""
    return lead + (f"; likely causes: {', '.join(causes)}" if causes else "")

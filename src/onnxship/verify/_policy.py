"""Tolerance policy: what "the candidate behaves like the reference" means at each precision.

Defaults (the verification gate of docs/ARCHITECTURE.md)::

    fp32  elementwise |got-ref| <= 1e-4 + 1e-3*|ref|, MSE mean <= 1e-4, MSE p99 <= 5e-4, top-1 mismatch <= 1%
    fp16  MSE mean <= 5e-4, cosine >= 0.99, top-1 mismatch <= 2%    (elementwise error reported, not gated)
    int8  task-level agreement: top-1 mismatch <= 2%, DeepLog decision mismatch <= 2%, mAP deltas <= 0.02,
          p95 IoU delta <= 0.05; without a task, cosine >= 0.98 per output
    all   detection mAP@0.5 and mAP@0.5:0.95 deltas <= 0.01, p95 IoU delta <= 0.01 (int8 above);
          DeepLog decision mismatch <= 1% (fp16/int8: 2%)

With ``task="classification"`` the MSE gates apply to the softmax probabilities of the task output
(``model(x).softmax(dim=1)``); other outputs and other tasks use raw values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from onnxship._errors import ConfigError
from onnxship.verify._compare import PRECISION_TOLERANCES, Tolerance
from onnxship.verify._tasks import TaskGate

__all__ = ["PRECISIONS", "TASKS", "THRESHOLDS", "GatePolicy", "resolve_policy"]

PRECISIONS = ("fp32", "fp16", "int8")
TASKS = ("classification", "detection", "sequence")


@dataclass(frozen=True)
class GatePolicy:
    """Thresholds of the gate; ``None`` means reported but not gated."""

    precision: str = "fp32"
    elementwise: Tolerance | None = None  # atol/rtol gate on every element
    mse_mean: float | None = None  # mean over samples of per-sample MSE
    mse_p99: float | None = None  # 99th percentile over samples of per-sample MSE
    cosine_min: float | None = None  # smallest per-sample cosine similarity allowed
    task: TaskGate = field(default_factory=TaskGate)  # task-level thresholds (used when a task is set)
    per_output: dict[str, Tolerance] = field(default_factory=dict)  # elementwise overrides by output name
    allow_nonfinite: bool = (
        False  # NaN/Inf outputs fail the gate unless this opts in (NaN == NaN is no agreement)
    )

    def tolerance_for(self, output: str) -> Tolerance | None:
        return self.per_output.get(output, self.elementwise)

    def task_gate(self, task: str | None) -> TaskGate:
        """The task gate, with the MSE thresholds moved onto softmax probabilities for classification."""
        if task == "classification":
            return replace(self.task, prob_mse_mean=self.mse_mean, prob_mse_p99=self.mse_p99)
        return self.task

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["elementwise"] = self.elementwise.to_dict() if self.elementwise else None
        d["per_output"] = {k: v.to_dict() for k, v in self.per_output.items()}
        d["task"] = self.task.to_dict()
        return d


_DEFAULTS: dict[str, GatePolicy] = {
    "fp32": GatePolicy(
        "fp32",
        elementwise=PRECISION_TOLERANCES["fp32"],
        mse_mean=1e-4,
        mse_p99=5e-4,
        task=TaskGate(
            top1_mismatch_rate=0.01, map_delta=0.01, iou_p95_delta=0.01, decision_disagreement=0.01
        ),
    ),
    "fp16": GatePolicy(
        "fp16",
        mse_mean=5e-4,
        cosine_min=0.99,
        task=TaskGate(
            top1_mismatch_rate=0.02, map_delta=0.01, iou_p95_delta=0.01, decision_disagreement=0.02
        ),
    ),
    "int8": GatePolicy(
        "int8",
        task=TaskGate(
            top1_mismatch_rate=0.02, map_delta=0.02, iou_p95_delta=0.05, decision_disagreement=0.02
        ),
    ),
}
_INT8_NO_TASK_COSINE = 0.98
_OWN = ("mse_mean", "mse_p99", "cosine_min")
_TASK = tuple(f.name for f in fields(TaskGate) if not f.name.startswith("prob_"))
THRESHOLDS = _OWN + _TASK


def _tolerance(value: Any, where: str) -> Tolerance:
    if isinstance(value, Tolerance):
        return value
    if isinstance(value, dict) and value and set(value) <= {"atol", "rtol"}:
        parts = [value.get("atol", 0.0), value.get("rtol", 0.0)]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in parts):
            return Tolerance(float(parts[0]), float(parts[1]))  # checks finite and >= 0
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return Tolerance(float(value), 0.0)
    raise ConfigError(
        f"{where}: tolerance {value!r} is not understood",
        hint="give Tolerance(atol, rtol), {'atol': x, 'rtol': y} or a number (atol)",
    )


def resolve_policy(
    precision: str,
    task: str | None = None,
    *,
    tolerance: Any = None,
    per_output: dict[str, Any] | None = None,
    thresholds: dict[str, float | None] | None = None,
    allow_nonfinite: bool = False,
) -> GatePolicy:
    """The gate for a precision, with an overall elementwise tolerance, per-output overrides and threshold changes.

    Example:
        >>> resolve_policy("fp16", thresholds={"mse_mean": 1e-3}).mse_mean
        0.001
    """
    if precision not in _DEFAULTS:
        raise ConfigError(
            f"unknown precision {precision!r}", hint=f"valid precisions: {', '.join(PRECISIONS)}"
        )
    if task is not None and task not in TASKS:
        raise ConfigError(f"unknown task {task!r}", hint=f"valid tasks: {', '.join(TASKS)} (or none)")
    policy = replace(_DEFAULTS[precision], allow_nonfinite=bool(allow_nonfinite))
    if precision == "int8" and task is None:
        policy = replace(policy, cosine_min=_INT8_NO_TASK_COSINE)
    if tolerance is not None:
        policy = replace(policy, elementwise=_tolerance(tolerance, "tolerance"))
    if per_output:
        policy = replace(
            policy, per_output={k: _tolerance(v, f"tolerance of output {k!r}") for k, v in per_output.items()}
        )
    for key, value in (thresholds or {}).items():
        if key not in THRESHOLDS:
            raise ConfigError(
                f"unknown gate threshold {key!r}", hint=f"valid thresholds: {', '.join(THRESHOLDS)}"
            )
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
        ):
            raise ConfigError(f"threshold {key}={value!r} must be a non-negative number or None")
        if key in _TASK:
            if value is None:
                raise ConfigError(
                    f"task threshold {key} cannot be switched off", hint="give a number (1.0 = off)"
                )
            policy = replace(policy, task=replace(policy.task, **{key: float(value)}))
        else:
            policy = replace(policy, **{key: None if value is None else float(value)})
    return policy

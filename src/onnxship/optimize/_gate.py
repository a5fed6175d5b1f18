"""The gate every optimized variant goes through: the verification engine's policy for the variant's precision.

* The shape sweep (:func:`onnxship.verify.check_parity`) must run at every shape like the reference: an engine
  error, another output shape or NaN/inf in one engine only is a hard failure nothing can excuse. With an
  elementwise tolerance in the policy (fp32), every sweep shape must also be inside it.
* On ``task_samples`` samples (generated, or ``data``), each output is judged by the policy's MSE / cosine /
  elementwise gates (:class:`onnxship.verify._metrics.OutputAccumulator`), and the task output by the task gate
  (classification top-1, DeepLog top-g decisions).

Policies come from :func:`onnxship.verify._policy.resolve_policy` (fp32 elementwise; fp16 MSE + cosine + top-1;
int8 task agreement, or cosine without a task), so a variant passes here exactly when ``onnxship verify
--precision`` would judge those samples the same way. This module only decides which pieces apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from onnxship._errors import ConfigError
from onnxship.runtime._runners import Runner
from onnxship.spec._inputs import TensorSpec
from onnxship.verify._compare import PRECISION_TOLERANCES
from onnxship.verify._metrics import OutputAccumulator
from onnxship.verify._parity import ParityResult, check_parity
from onnxship.verify._policy import GatePolicy, resolve_policy
from onnxship.verify._tasks import ClassificationMetric, SequenceMetric

__all__ = ["TASKS", "GateConfig", "GateResult", "detect_task", "run_gate"]

TASKS = ("auto", "classification", "sequence", "none")
_SEQUENCE_MODEL_TYPES = ("deeplog",)


@dataclass(frozen=True)
class GateConfig:
    """How variants are judged."""

    task: str = "auto"  # auto | classification | sequence | none (auto: from metadata and the output shape)
    task_output: str | None = None  # output holding class/event scores (default: the first)
    task_samples: int = 256  # samples for the task metric
    task_batch: int = 32  # batch size for those samples when the batch dim is dynamic
    top_g: int = 9  # sequence: DeepLog's g
    tolerance: Any = (
        None  # elementwise tolerance overriding the policy's (Tolerance, {"atol", "rtol"} or atol)
    )
    thresholds: dict[str, float | None] = field(
        default_factory=dict
    )  # policy overrides, e.g. top1_mismatch_rate
    data: str | None = None  # verification data (anything `verify --data` takes) for the task metric
    seed: int = 1000  # its samples differ from the calibration samples, which are drawn from RNG state 0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task {self.task!r} is not known", hint=f"use one of {', '.join(TASKS)}")
        if self.task_samples < 1 or self.task_batch < 1 or self.top_g < 1:
            raise ConfigError("task_samples, task_batch and top_g must be >= 1")
        resolve_policy(
            "fp32", None, tolerance=self.tolerance, thresholds=self.thresholds
        )  # bad keys fail here

    def policy(self, precision: str, task: str | None) -> GatePolicy:
        return resolve_policy(precision, task, tolerance=self.tolerance, thresholds=self.thresholds)


@dataclass
class GateResult:
    """A variant's verdict, with the statistics behind it."""

    passed: bool
    precision: str
    task: str
    reason: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    parity: ParityResult | None = None
    task_result: Any = None  # ClassificationAgreement | SequenceAgreement | None
    hard_failure: bool = False  # the variant errs or gives other shapes/NaNs: no tolerance or exclusion helps

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "precision": self.precision,
            "task": self.task,
            "reason": self.reason,
            "hard_failure": self.hard_failure,
            "metrics": self.metrics,
            "parity": self.parity.to_dict() if self.parity else None,
            "task_result": self.task_result.to_dict() if self.task_result is not None else None,
        }


def detect_task(metadata: dict[str, Any], outputs: dict[str, np.ndarray], output: str | None) -> str:
    """``auto``: sequence for DeepLog-type models, classification for [N, C>1] float scores, else none."""
    declared = metadata.get("task")
    if declared in ("classification", "sequence"):
        return str(declared)
    arr = outputs[output] if output else next(iter(outputs.values()))
    if str(metadata.get("model_type", "")).lower() in _SEQUENCE_MODEL_TYPES:
        return "sequence"
    if arr.ndim == 2 and arr.shape[1] > 1 and np.issubdtype(arr.dtype, np.floating):
        return "classification"
    return "none"


def _task_batches(specs: Sequence[TensorSpec], config: GateConfig) -> list[Any]:
    from onnxship.runtime._data import SyntheticSource, open_source

    src = (
        open_source(config.data, list(specs))
        if config.data
        else SyntheticSource(list(specs), config.task_samples, seed=config.seed)
    )
    idx = np.arange(min(config.task_samples, len(src)))
    return list(src.batches(idx, config.task_batch))


def _parity_metrics(parity: ParityResult) -> dict[str, Any]:
    stats = [o for c in parity.checks for o in c.outputs]
    finite = [o for o in stats if np.isfinite(o.max_abs)]
    out: dict[str, Any] = {
        "shapes_checked": len(parity.checked),
        "shapes_failed": sum(c.status == "failed" for c in parity.checks),
    }
    if finite:
        out.update(
            max_abs=max(o.max_abs for o in finite),
            max_rel=max(o.max_rel for o in finite),
            mse=max(o.mse for o in finite),
            cosine_min=min(o.cosine for o in finite),
            min_passing_atol=max(o.min_passing_atol for o in finite),
        )
    return out


def _hard_failure(parity: ParityResult) -> str | None:
    """A sweep failure that no task gate can excuse: an engine error, a shape or NaN/inf mismatch."""
    for c in parity.checks:
        if c.status != "failed":
            continue
        if not c.outputs:
            return c.error
        bad = [o for o in c.outputs if not np.isfinite(o.max_abs)]
        if bad:
            return f"at dims {c.dims}: {bad[0].name}: {bad[0].reason}"
    return None


def run_gate(
    reference: Runner,
    candidate: Runner,
    specs: Sequence[TensorSpec],
    precision: str,
    config: GateConfig | None = None,
    metadata: dict[str, Any] | None = None,
) -> GateResult:
    """Judge ``candidate`` against ``reference`` with ``precision``'s policy (see the module docstring)."""
    config = config or GateConfig()
    metadata = metadata or {}
    if precision not in PRECISION_TOLERANCES:
        raise ConfigError(
            f"precision {precision!r} has no tolerance policy",
            hint=f"use one of {', '.join(PRECISION_TOLERANCES)}",
        )
    base_policy = config.policy(precision, None)
    # Without an elementwise gate (fp16, int8) the sweep still needs a tolerance for its statistics.
    parity = check_parity(
        reference,
        candidate,
        list(specs),
        tolerance=base_policy.elementwise or PRECISION_TOLERANCES[precision],
        seed=config.seed,
    )
    metrics = _parity_metrics(parity)
    hard = _hard_failure(parity)
    if hard:
        return GateResult(
            False,
            precision,
            config.task,
            f"the variant does not run like the reference: {hard}",
            metrics,
            parity,
            hard_failure=True,
        )

    task = config.task
    policy = base_policy
    accs: dict[str, OutputAccumulator] = {}
    metric: ClassificationMetric | SequenceMetric | None = None
    name = config.task_output
    for batch in _task_batches(specs, config):
        ref = reference.infer(batch.feeds)
        got = candidate.infer(batch.feeds)
        name = name or next(iter(ref))
        if name not in ref:
            raise ConfigError(
                f"task output {name!r} is not an output of the model (outputs: {list(ref)})",
                hint="pick one with task_output / --task-output",
            )
        if task == "auto":
            task = detect_task(metadata, ref, name)
        if not accs:
            policy = config.policy(precision, None if task == "none" else task)
            accs = {o: OutputAccumulator(o, policy.tolerance_for(o)) for o in ref}
            if task != "none":
                gate = policy.task_gate(task)
                metric = (
                    ClassificationMetric(gate)
                    if task == "classification"
                    else SequenceMetric(config.top_g, gate)
                )
        for o, acc in accs.items():
            acc.update(ref[o], got[o])
        if metric is not None:
            metric.update(ref[name], got[name], batch.labels)
    # Classification moves the MSE gate onto softmax probabilities (the task metric), as `verify` does.
    no_mse = replace(policy, mse_mean=None, mse_p99=None)
    summaries = [
        a.summary(no_mse if task == "classification" and o == name else policy) for o, a in accs.items()
    ]
    task_result = metric.result() if metric is not None else None
    metrics["policy"] = policy.to_dict()
    metrics["outputs"] = {
        s.name: {
            "mse_mean": s.mse_mean,
            "mse_p99": s.mse_p99,
            "cosine_min": s.cosine_min,
            "max_abs": s.max_abs,
            "passed": s.passed,
        }
        for s in summaries
    }
    if task_result is not None:
        metrics["task"] = task_result.to_dict()
    reasons = []
    if policy.elementwise is not None and not parity.passed:
        reasons.append(parity.reason or "the shape sweep failed")
    elif not parity.passed:
        metrics["elementwise_note"] = (
            f"outside the {precision} elementwise tolerance (not gated): {parity.reason}"
        )
    reasons += [f"output {s.name!r}: {s.failures[0]}" for s in summaries if not s.passed and s.failures]
    if task_result is not None and not task_result.passed:
        reasons.append(f"{task}: {task_result.reason}")
    return GateResult(not reasons, precision, task, "; ".join(reasons) or None, metrics, parity, task_result)

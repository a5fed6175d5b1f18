"""The sweep parity check: run reference and candidate at the export shape, at sweep shapes and at swept values.

This is the seed of the verification engine: ``onnxship.export`` accepts a candidate only when this passes.
Three things are checked besides the export shape:

* **shapes**: the sweep points of the declared dynamic dims;
* **values**: the export-shape inputs shifted, scaled and set to edge values (``verify/_values.py``), so a branch on
  tensor values that tracing froze is taken the other way;
* **finiteness**: NaN/Inf in either engine fails the check (NaN == NaN is not agreement) unless allowed.

A point where PyTorch itself fails is *not runnable in PyTorch*: recorded, never counted as verified, never counted
against the candidate. When PyTorch also rejects onnxship's own generated inputs at the export shape, the inputs are
the problem ("could not make valid inputs"), not the model or the candidate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxship import _progress
from onnxship.runtime._runners import Runner
from onnxship.spec._inputs import TensorSpec, complete_point, dim_table, sample_feeds, sweep_points
from onnxship.verify._compare import OutputStats, Tolerance, compare_outputs, nonfinite_finding
from onnxship.verify._values import value_variants

__all__ = ["ParityResult", "ShapeCheck", "check_parity", "sweep_summary"]

NOT_RUNNABLE = "not runnable in PyTorch"


@dataclass
class ShapeCheck:
    """The comparison at one point of the sweep (a shape, or the export shape with swept values)."""

    dims: dict[str, int]  # dynamic dim values at this point
    input_shapes: dict[str, list[int]]
    status: str  # passed | failed | skipped (skipped: not runnable in PyTorch, or no valid inputs)
    outputs: list[OutputStats] = field(default_factory=list)
    output_shapes: dict[str, list[int]] = field(default_factory=dict)  # reference output shapes
    error: str | None = None
    is_export_shape: bool = False
    kind: str = "shape"  # shape | values
    values: str | None = None  # the value variant ("x-3", "10x", ...) of a kind="values" check
    inputs_invalid: bool = False  # skipped because onnxship could not generate inputs PyTorch accepts

    @property
    def label(self) -> str:
        dims = ",".join(f"{k}={v}" for k, v in self.dims.items()) or "export shape"
        return f"values {self.values} at {dims}" if self.kind == "values" else dims

    def to_dict(self) -> dict[str, Any]:
        return {
            "dims": self.dims,
            "kind": self.kind,
            "values": self.values,
            "input_shapes": self.input_shapes,
            "status": self.status,
            "is_export_shape": self.is_export_shape,
            "error": self.error,
            "inputs_invalid": self.inputs_invalid,
            "output_shapes": self.output_shapes,
            "outputs": [o.to_dict() for o in self.outputs],
        }


@dataclass
class ParityResult:
    """All sweep points; truthy when every point that the reference could run passed."""

    passed: bool
    checks: list[ShapeCheck]
    reason: str | None = None
    seconds: float = 0.0
    inconclusive: bool = (
        False  # failed because too little could be checked, not because the candidate differs
    )

    def __bool__(self) -> bool:
        return self.passed

    @property
    def checked(self) -> list[ShapeCheck]:
        return [c for c in self.checks if c.status != "skipped"]

    @property
    def shape_checks(self) -> list[ShapeCheck]:
        return [c for c in self.checks if c.kind == "shape"]

    @property
    def value_checks(self) -> list[ShapeCheck]:
        return [c for c in self.checks if c.kind == "values"]

    def worst(self) -> OutputStats | None:
        stats = [o for c in self.checks for o in c.outputs]
        return max(stats, key=lambda o: o.max_abs, default=None)

    def summary(self) -> str:
        """``"3 of 4 sweep shapes verified, 1 not runnable in PyTorch; 5 of 5 value variants verified"``."""
        return sweep_summary(self.shape_checks, self.value_checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reason": self.reason,
            "summary": self.summary(),
            "inconclusive": self.inconclusive,
            "seconds": round(self.seconds, 3),
            "checks": [c.to_dict() for c in self.checks],
        }


def sweep_summary(shapes: list[Any], values: list[Any]) -> str:
    """Counts in words; works on ShapeChecks and on report group dicts (``status``, ``inputs_invalid``)."""

    def get(c: Any, key: str) -> Any:
        return c.get(key) if isinstance(c, dict) else getattr(c, key)

    def part(items: list[Any], what: str) -> str:
        ok = sum(get(c, "status") == "passed" for c in items)
        bad = sum(get(c, "status") == "failed" for c in items)
        invalid = sum(get(c, "status") == "skipped" and bool(get(c, "inputs_invalid")) for c in items)
        skipped = sum(get(c, "status") == "skipped" for c in items) - invalid
        text = f"{ok} of {len(items)} {what} verified"
        if bad:
            text += f", {bad} failed"
        if skipped:
            text += f", {skipped} {NOT_RUNNABLE}"
        if invalid:
            text += f", {invalid} without valid generated inputs"
        return text

    parts = [part(shapes, "sweep shapes")] if shapes else []
    if values:
        parts.append(part(values, "value variants"))
    return "; ".join(parts)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def _reference_nonfinite(ref: dict[str, np.ndarray]) -> str | None:
    found = [f for k, v in ref.items() if (f := nonfinite_finding(k, v, "PyTorch"))]
    return "; ".join(found) or None


def check_parity(
    reference: Runner,
    candidate: Runner,
    specs: list[TensorSpec] | tuple[TensorSpec, ...],
    *,
    tolerance: Tolerance | dict[str, Tolerance] | None = None,
    points: list[dict[str, int]] | None = None,
    seed: int = 0,
    min_other_points: int = 2,
    export_feeds: dict[str, np.ndarray] | None = None,
    values: bool = True,
    allow_nonfinite: bool = False,
) -> ParityResult:
    """Compare candidate to reference at each sweep point, then at swept values of the export-shape inputs.

    ``export_feeds`` (the user's sample tensors) are used at the export shape exactly as given; other points get
    generated inputs. A point where the reference itself fails is skipped and recorded as not runnable; the export
    point must run. With dynamic dims, at least ``min_other_points`` other points must be checked.
    """
    start = time.perf_counter()
    points = points if points is not None else sweep_points(specs)
    export_point = {n: d.value for s in specs for d in s.dims if d.name for n in [d.name]}
    checks: list[ShapeCheck] = []
    generated_ok: bool | None = None  # does PyTorch accept onnxship's generated inputs at the export shape?

    def generated_inputs_ok() -> bool:
        nonlocal generated_ok
        if generated_ok is None:  # a few draws: random structural values are sometimes valid by chance
            try:
                for k in range(3):
                    reference.infer(
                        sample_feeds(specs, export_point, seed=seed + 104729 + k, use_samples=False)
                    )
                generated_ok = True
            except Exception:
                generated_ok = False
        return generated_ok

    def run(check: ShapeCheck, feeds: dict[str, np.ndarray]) -> None:
        try:
            ref = reference.infer(feeds)
        except Exception as exc:
            where = "the export shape" if check.is_export_shape and check.kind == "shape" else check.label
            user_feeds = check.is_export_shape and export_feeds is not None
            if check.kind == "shape" and not user_feeds and not generated_inputs_ok():
                check.status, check.inputs_invalid = "skipped", True
                check.error = (
                    f"could not make valid inputs for shape {where}: give a value kind or --data "
                    f"({reference.name}: {_short(exc)})"
                )
            elif check.is_export_shape and check.kind == "shape":
                check.status = "failed"
                check.error = f"{reference.name} cannot run the export shape ({_short(exc)})"
            else:
                check.status = "skipped"
                check.error = f"{NOT_RUNNABLE} at {where} ({_short(exc)})"
            checks.append(check)
            return
        check.output_shapes = {k: list(np.shape(v)) for k, v in ref.items()}
        if check.kind == "values":
            bad = _reference_nonfinite(ref)
            if bad is not None:  # shifted values left the model's domain (log of a negative, ...)
                check.status, check.error = (
                    "skipped",
                    f"{NOT_RUNNABLE} with finite outputs at {check.label}: {bad}",
                )
                checks.append(check)
                return
        try:
            got = candidate.infer(feeds)
        except Exception as exc:
            check.status = "failed"
            check.error = f"{candidate.name} failed where {reference.name} runs: {_short(exc)}"
            checks.append(check)
            return
        check.outputs = compare_outputs(ref, got, tolerance, allow_nonfinite=allow_nonfinite)
        if not all(o.passed for o in check.outputs):
            check.status = "failed"
            bad_out = [o for o in check.outputs if not o.passed]
            check.error = "; ".join(f"{o.name}: {o.reason}" for o in bad_out)
        checks.append(check)

    base_feeds: dict[str, np.ndarray] | None = None
    shown = _progress.begin("verifying shape", total=len(points))
    for i, point in enumerate(points):
        shown.advance(detail=", ".join(f"{k}={v}" for k, v in point.items()))
        is_export = point == export_point
        feeds = (
            dict(export_feeds)
            if is_export and export_feeds is not None
            else sample_feeds(specs, point, seed=seed + i)
        )
        if is_export:
            base_feeds = feeds
        run(
            ShapeCheck(
                dims=dict(point),
                input_shapes={k: list(v.shape) for k, v in feeds.items()},
                status="passed",
                is_export_shape=is_export,
            ),
            feeds,
        )
    shown.close()
    # A point PyTorch cannot run moves several dims at once: move each of them alone as well, so a size rule on one
    # axis (a CNN's minimum height) does not leave the others (the batch) unverified.
    tried = [dict(p) for p in points]
    derived = {n: bool(d.parts) for n, d in dim_table(specs).items()}
    for c in [c for c in checks if c.kind == "shape" and c.status == "skipped" and not c.inputs_invalid]:
        for name, value in c.dims.items():
            if value == export_point.get(name):
                continue
            if derived.get(name):
                continue  # a derived dim (total=past+seq) moves with its parts
            probe = complete_point({**export_point, name: value}, specs)
            if probe in tried:
                continue
            tried.append(probe)
            feeds = sample_feeds(specs, probe, seed=seed + len(tried))
            run(
                ShapeCheck(
                    dims=probe, input_shapes={k: list(v.shape) for k, v in feeds.items()}, status="passed"
                ),
                feeds,
            )
    if values:
        if base_feeds is None:
            base_feeds = (
                dict(export_feeds)
                if export_feeds is not None
                else sample_feeds(specs, export_point, seed=seed)
            )
        for label, feeds in value_variants(specs, base_feeds):
            run(
                ShapeCheck(
                    dims=dict(export_point),
                    input_shapes={k: list(v.shape) for k, v in feeds.items()},
                    status="passed",
                    is_export_shape=True,
                    kind="values",
                    values=label,
                ),
                feeds,
            )
    failed = [c for c in checks if c.status == "failed"]
    shape_checks = [c for c in checks if c.kind == "shape"]
    others = [c for c in shape_checks if c.status == "passed" and not c.is_export_shape]
    invalid = [c for c in shape_checks if c.inputs_invalid]
    reason = None
    inconclusive = False
    if failed:
        first = next((c for c in failed if c.kind == "shape"), failed[0])
        where = (
            "at the export shape"
            if first.is_export_shape and first.kind == "shape"
            else (f"with values {first.values}" if first.kind == "values" else f"at dims {first.dims}")
        )
        reason = f"{len(failed)} of {len(checks)} checks failed; first {where}: {first.error}"
    elif invalid:  # generated values fail even at the export shape: passes elsewhere are luck, not evidence
        inconclusive = True
        reason = invalid[0].error
    elif export_point and len(others) < min(min_other_points, max(len(points) - 1, 0)):
        inconclusive = True
        why = invalid[0].error if invalid else "the reference model rejected the others"
        reason = (
            f"only {len(others)} shapes besides the export shape could be checked ({why}); "
            f"{sweep_summary(shape_checks, [])}"
        )
    return ParityResult(
        passed=reason is None,
        checks=checks,
        reason=reason,
        seconds=time.perf_counter() - start,
        inconclusive=inconclusive,
    )

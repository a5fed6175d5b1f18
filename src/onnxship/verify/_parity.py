"""The shape-sweep parity check: run reference and candidate at the export shape and at sweep shapes.

This is the seed of the verification engine: ``onnxship.export`` accepts a candidate only when this passes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxship import _progress
from onnxship.spec._inputs import TensorSpec, sample_feeds, sweep_points
from onnxship.verify._compare import OutputStats, Tolerance, compare_outputs
from onnxship.verify._runners import Runner

__all__ = ["ParityResult", "ShapeCheck", "check_parity"]


@dataclass
class ShapeCheck:
    """The comparison at one point of the sweep."""

    dims: dict[str, int]  # dynamic dim values at this point
    input_shapes: dict[str, list[int]]
    status: str  # passed | failed | skipped
    outputs: list[OutputStats] = field(default_factory=list)
    output_shapes: dict[str, list[int]] = field(default_factory=dict)  # reference output shapes
    error: str | None = None
    is_export_shape: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "dims": self.dims,
            "input_shapes": self.input_shapes,
            "status": self.status,
            "is_export_shape": self.is_export_shape,
            "error": self.error,
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

    def __bool__(self) -> bool:
        return self.passed

    @property
    def checked(self) -> list[ShapeCheck]:
        return [c for c in self.checks if c.status != "skipped"]

    def worst(self) -> OutputStats | None:
        stats = [o for c in self.checks for o in c.outputs]
        return max(stats, key=lambda o: o.max_abs, default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reason": self.reason,
            "seconds": round(self.seconds, 3),
            "checks": [c.to_dict() for c in self.checks],
        }


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def check_parity(
    reference: Runner,
    candidate: Runner,
    specs: list[TensorSpec] | tuple[TensorSpec, ...],
    *,
    tolerance: Tolerance | dict[str, Tolerance] | None = None,
    points: list[dict[str, int]] | None = None,
    seed: int = 0,
    min_other_points: int = 2,
) -> ParityResult:
    """Compare candidate to reference on random inputs at each sweep point.

    A point where the reference itself fails (a shape the model does not accept) is skipped and recorded; the
    export point must run. With dynamic dims, at least ``min_other_points`` other points must be checked.
    """
    start = time.perf_counter()
    points = points if points is not None else sweep_points(specs)
    export_point = {n: d.value for s in specs for d in s.dims if d.name for n in [d.name]}
    checks: list[ShapeCheck] = []
    shown = _progress.begin("verifying shape", total=len(points))
    for i, point in enumerate(points):
        shown.advance(detail=", ".join(f"{k}={v}" for k, v in point.items()))
        feeds = sample_feeds(specs, point, seed=seed + i)
        check = ShapeCheck(
            dims=dict(point),
            input_shapes={k: list(v.shape) for k, v in feeds.items()},
            status="passed",
            is_export_shape=(point == export_point),
        )
        try:
            ref = reference.infer(feeds)
        except Exception as exc:
            check.status = "skipped" if not check.is_export_shape else "failed"
            check.error = f"{reference.name} cannot run this shape ({_short(exc)})"
            checks.append(check)
            continue
        check.output_shapes = {k: list(np.shape(v)) for k, v in ref.items()}
        try:
            got = candidate.infer(feeds)
        except Exception as exc:
            check.status = "failed"
            check.error = f"{candidate.name} failed where {reference.name} runs: {_short(exc)}"
            checks.append(check)
            continue
        check.outputs = compare_outputs(ref, got, tolerance)
        if not all(o.passed for o in check.outputs):
            check.status = "failed"
            bad = [o for o in check.outputs if not o.passed]
            check.error = "; ".join(f"{o.name}: {o.reason}" for o in bad)
        checks.append(check)
    shown.close()
    failed = [c for c in checks if c.status == "failed"]
    others = [c for c in checks if c.status == "passed" and not c.is_export_shape]
    reason = None
    if failed:
        first = failed[0]
        where = "at the export shape" if first.is_export_shape else f"at dims {first.dims}"
        reason = f"{len(failed)} of {len(checks)} sweep shapes failed; first {where}: {first.error}"
    elif export_point and len(others) < min(min_other_points, max(len(points) - 1, 0)):
        reason = (
            f"only {len(others)} shapes besides the export shape could be checked "
            f"(the reference model rejected the others)"
        )
    return ParityResult(
        passed=reason is None, checks=checks, reason=reason, seconds=time.perf_counter() - start
    )

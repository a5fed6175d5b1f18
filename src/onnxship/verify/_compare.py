"""Compare two engines' outputs: error statistics, tolerance policy and the smallest tolerance that would pass."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["PRECISION_TOLERANCES", "OutputStats", "Tolerance", "compare_arrays", "compare_outputs"]

_REL_FLOOR = 1e-6  # denominators below this count as this, so max_rel stays finite where the reference is 0


@dataclass(frozen=True)
class Tolerance:
    """Elementwise gate |got - ref| <= atol + rtol * |ref| (numpy.allclose semantics)."""

    atol: float = 1e-4  # absolute part
    rtol: float = 1e-3  # relative part

    def to_dict(self) -> dict[str, float]:
        return {"atol": self.atol, "rtol": self.rtol}


# Defaults by precision; int8 is gated on task agreement by the verification engine.
PRECISION_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(1e-4, 1e-3),
    "fp16": Tolerance(1e-2, 1e-2),
    "int8": Tolerance(1e-1, 1e-1),
}


@dataclass
class OutputStats:
    """How one output of the candidate differs from the reference."""

    name: str
    ref_shape: list[int]
    got_shape: list[int]
    dtype: str
    passed: bool
    max_abs: float = 0.0
    max_rel: float = 0.0
    mse: float = 0.0
    cosine: float = 1.0
    mismatch_count: int = 0  # elements outside the tolerance
    min_passing_atol: float = 0.0  # the smallest atol that would pass with the same rtol
    worst_index: list[int] | None = None
    reason: str | None = None
    tolerance: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in self.__dict__.items()
        }


def compare_arrays(name: str, ref: np.ndarray, got: np.ndarray, tol: Tolerance) -> OutputStats:
    """Statistics and verdict for one output pair."""
    ref = np.asarray(ref)
    got = np.asarray(got)
    stats = OutputStats(
        name=name,
        ref_shape=list(ref.shape),
        got_shape=list(got.shape),
        dtype=str(ref.dtype),
        passed=False,
        tolerance=tol.to_dict(),
    )
    if ref.shape != got.shape:
        stats.reason = f"shape {list(got.shape)} != reference {list(ref.shape)}"
        stats.max_abs = stats.max_rel = stats.mse = float("inf")
        stats.cosine = float("nan")
        stats.min_passing_atol = float("inf")
        return stats
    if ref.size == 0:
        stats.passed = True
        return stats
    if ref.dtype == bool or np.issubdtype(ref.dtype, np.integer):
        diff_mask = ref != got
        stats.mismatch_count = int(diff_mask.sum())
        d = np.abs(ref.astype(np.float64) - got.astype(np.float64))
        stats.max_abs = float(d.max())
        stats.max_rel = float((d / np.maximum(np.abs(ref.astype(np.float64)), 1.0)).max())
        stats.mse = float((d**2).mean())
        stats.min_passing_atol = stats.max_abs
        stats.passed = stats.mismatch_count == 0
        if not stats.passed:
            stats.worst_index = [int(i) for i in np.unravel_index(int(np.argmax(d)), d.shape)]
            stats.reason = f"{stats.mismatch_count} of {ref.size} integer elements differ"
        return stats
    r = ref.astype(np.float64)
    g = got.astype(np.float64)
    nan_r, nan_g = np.isnan(r), np.isnan(g)
    if (nan_r != nan_g).any():
        n = int((nan_r != nan_g).sum())
        stats.reason = f"{n} elements are NaN in only one engine"
        stats.max_abs = stats.max_rel = stats.mse = stats.min_passing_atol = float("inf")
        stats.cosine = float("nan")
        stats.mismatch_count = n
        return stats
    valid = ~nan_r
    inf_r, inf_g = np.isinf(r) & valid, np.isinf(g) & valid
    if (inf_r != inf_g).any() or (r[inf_r] != g[inf_r]).any():
        stats.reason = "infinite values differ between engines"
        stats.max_abs = stats.max_rel = stats.mse = stats.min_passing_atol = float("inf")
        stats.cosine = float("nan")
        return stats
    finite = valid & ~inf_r
    rf, gf = r[finite], g[finite]
    if rf.size == 0:
        stats.passed = True
        return stats
    d = np.abs(gf - rf)
    rel = d / np.maximum(np.abs(rf), _REL_FLOOR)
    stats.max_abs = float(d.max())
    stats.max_rel = float(rel.max())
    stats.mse = float((d**2).mean())
    nr, ng = float(np.linalg.norm(rf)), float(np.linalg.norm(gf))
    stats.cosine = float(np.dot(rf, gf) / (nr * ng)) if nr > 0 and ng > 0 else (1.0 if nr == ng else 0.0)
    excess = d - tol.rtol * np.abs(rf)
    stats.min_passing_atol = float(max(excess.max(), 0.0))
    bad = excess > tol.atol
    stats.mismatch_count = int(bad.sum())
    stats.passed = stats.mismatch_count == 0
    if not stats.passed:
        full = np.full(r.shape, -np.inf)
        full[finite] = excess
        stats.worst_index = [int(i) for i in np.unravel_index(int(np.argmax(full)), r.shape)]
        stats.reason = (
            f"{stats.mismatch_count} of {rf.size} elements outside atol={tol.atol:g} rtol={tol.rtol:g} "
            f"(max abs {stats.max_abs:.3g}; would pass with atol={stats.min_passing_atol:.3g})"
        )
    return stats


def compare_outputs(
    ref: dict[str, np.ndarray],
    got: dict[str, np.ndarray],
    tol: Tolerance | dict[str, Tolerance] | None = None,
) -> list[OutputStats]:
    """Compare every reference output with the candidate's output of the same name (same order as ref)."""
    tol = tol or PRECISION_TOLERANCES["fp32"]
    results = []
    for name, r in ref.items():
        t = tol.get(name, PRECISION_TOLERANCES["fp32"]) if isinstance(tol, dict) else tol
        if name not in got:
            results.append(
                OutputStats(
                    name=name,
                    ref_shape=list(np.shape(r)),
                    got_shape=[],
                    dtype=str(np.asarray(r).dtype),
                    passed=False,
                    reason=f"output missing from candidate (has {sorted(got)})",
                    tolerance=t.to_dict(),
                )
            )
            continue
        results.append(compare_arrays(name, r, got[name], t))
    return results

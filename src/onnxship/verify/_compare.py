"""Compare two engines' outputs: error statistics, tolerance policy and the smallest tolerance that would pass."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "PRECISION_TOLERANCES",
    "OutputStats",
    "Tolerance",
    "compare_arrays",
    "compare_outputs",
    "nonfinite_finding",
]

_REL_FLOOR = 1e-6  # denominators below this count as this, so max_rel stays finite where the reference is 0


@dataclass(frozen=True)
class Tolerance:
    """Elementwise gate |got - ref| <= atol + rtol * |ref| (numpy.allclose semantics)."""

    atol: float = 1e-4  # absolute part
    rtol: float = 1e-3  # relative part

    def __post_init__(self) -> None:
        for key in ("atol", "rtol"):  # a NaN/negative tolerance would pass or fail everything silently
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                from onnxship._errors import ConfigError

                raise ConfigError(
                    f"tolerance {key}={v!r} is not a finite number >= 0", hint="e.g. atol=1e-4, rtol=1e-3"
                )

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
    nonfinite_reference: int = 0  # NaN/Inf elements in the reference output
    nonfinite_candidate: int = 0  # NaN/Inf elements in the candidate output

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in self.__dict__.items()
        }


def nonfinite_finding(name: str, arr: np.ndarray, engine: str) -> str | None:
    """Where an output holds NaN/Inf: counts, the first sample (axis 0) and the shape; None when all finite."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fc" or arr.size == 0:
        return None
    bad = ~np.isfinite(arr)
    if not bad.any():
        return None
    n_nan = int(np.isnan(arr).sum())
    n_inf = int(bad.sum()) - n_nan
    first = int(np.unravel_index(int(np.argmax(bad)), arr.shape)[0]) if arr.ndim else 0
    return (
        f"output {name!r} has {n_nan} NaN and {n_inf} Inf of {arr.size} values in {engine} "
        f"(first at sample {first}, shape {list(arr.shape)})"
    )


def compare_arrays(
    name: str, ref: np.ndarray, got: np.ndarray, tol: Tolerance, *, allow_nonfinite: bool = True
) -> OutputStats:
    """Statistics and verdict for one output pair.

    NaN/Inf at the same places in both engines count as agreement only with ``allow_nonfinite``; otherwise any
    non-finite value (in either engine) fails the output with a finding that says where.
    """
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
    stats.nonfinite_reference = int((~np.isfinite(r)).sum())
    stats.nonfinite_candidate = int((~np.isfinite(g)).sum())
    if not allow_nonfinite and (stats.nonfinite_reference or stats.nonfinite_candidate):
        findings = [
            f
            for f in (nonfinite_finding(name, ref, "PyTorch"), nonfinite_finding(name, got, "onnxruntime"))
            if f
        ]
        stats.reason = "; ".join(findings) + " (NaN/Inf is not agreement; --allow-nonfinite accepts it)"
        stats.max_abs = stats.max_rel = stats.mse = stats.min_passing_atol = float("inf")
        stats.cosine = float("nan")
        stats.mismatch_count = max(stats.nonfinite_reference, stats.nonfinite_candidate)
        return stats
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
    *,
    allow_nonfinite: bool = True,
) -> list[OutputStats]:
    """Compare every reference output with the candidate's output of the same name (same order as ref).

    The gates (``check_parity``, ``verify``) pass ``allow_nonfinite=False``: NaN == NaN is not agreement there.
    """
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
        results.append(compare_arrays(name, r, got[name], t, allow_nonfinite=allow_nonfinite))
    return results

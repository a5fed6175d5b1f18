"""Streaming per-output error statistics: one accumulator per output, fed batch by batch.

Memory stays flat: per batch only scalars and per-sample numbers (two floats per sample) are kept, never outputs.
The whole-array one-shot comparison the export core uses lives in ``_compare.py``; this module is the streaming
counterpart the verification engine uses over datasets and shape sweeps.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxship.verify._compare import Tolerance
from onnxship.verify._policy import GatePolicy

__all__ = ["HIST_EDGES", "BatchStats", "OutputAccumulator", "OutputSummary", "WorstSample", "batch_stats"]

_REL_FLOOR = 1e-6  # same zero-safe floor as _compare.py
# log10 bins of |got - ref| from 1e-12 to 1e2 (half-decade); exact zeros are counted apart.
HIST_EDGES = [float(x) for x in np.arange(-12.0, 2.01, 0.5)]
_DEFAULT_RTOL = 1e-3


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


@dataclass(order=True)
class WorstSample:
    """One sample with a large error (kept in a bounded heap)."""

    max_abs: float
    output: str = field(compare=False)
    index: int = field(compare=False)
    sample_id: str | None = field(compare=False, default=None)
    group: str = field(compare=False, default="")
    mse: float = field(compare=False, default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "index": self.index,
            "id": self.sample_id,
            "group": self.group,
            "max_abs": _finite(self.max_abs),
            "mse": _finite(self.mse),
        }


@dataclass
class OutputSummary:
    """Statistics and verdict of one output over every sample compared."""

    name: str
    samples: int
    elements: int
    dtype: str
    sample_shape: list[int]
    max_abs: float
    max_rel: float
    mse_mean: float
    mse_p99: float
    cosine_min: float
    cosine_mean: float
    nan_mismatches: int
    mismatch_count: int  # elements outside the elementwise tolerance (0 when not gated)
    tolerance: dict[str, float] | None
    min_passing_atol: float  # smallest atol that passes every element at the tolerance's rtol
    histogram: dict[str, Any]
    passed: bool
    failures: list[str] = field(default_factory=list)
    shape_errors: list[str] = field(default_factory=list)
    nonfinite_reference: int = 0  # NaN/Inf values in PyTorch's (or the golden) outputs
    nonfinite_candidate: int = 0  # NaN/Inf values in onnxruntime's outputs
    nonfinite_where: str | None = None  # the first: "sample synthetic#3 (data: x[8]), shape [4, 8]"

    def smallest_passing(self) -> dict[str, Any]:
        """The loosest-needed setting of each gate that would have passed this output."""
        rtol = (self.tolerance or {}).get("rtol", _DEFAULT_RTOL)
        return {
            "atol": _finite(self.min_passing_atol),
            "rtol": rtol,
            "mse_mean": _finite(self.mse_mean),
            "mse_p99": _finite(self.mse_p99),
            "cosine_min": _finite(self.cosine_min),
        }

    def to_dict(self) -> dict[str, Any]:
        d = {k: (_finite(v) if isinstance(v, float) else v) for k, v in self.__dict__.items()}
        d["smallest_passing"] = self.smallest_passing()
        return d


@dataclass
class BatchStats:
    """Error statistics of one batch of one output (per-sample arrays + batch aggregates)."""

    n: int
    dtype: str
    per_abs: np.ndarray  # per-sample max |got - ref| (inf where NaN/inf appear in one engine only)
    mse: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cos: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    elements: int = 0
    sample_shape: list[int] = field(default_factory=list)
    max_rel: float = 0.0
    min_passing_atol: float = 0.0
    nan_mismatches: int = 0
    mismatch_count: int = 0
    hist: np.ndarray = field(default_factory=lambda: np.zeros(len(HIST_EDGES) + 1, np.int64))
    zeros: int = 0
    shape_error: str | None = None
    nonfinite_ref: int = 0  # NaN/Inf values in the reference batch
    nonfinite_got: int = 0  # NaN/Inf values in the candidate batch
    nonfinite_first: int | None = None  # the first sample (row) holding one


def batch_stats(ref: np.ndarray, got: np.ndarray, tolerance: Tolerance | None) -> BatchStats:
    """Per-sample error statistics of one batch (axis 0 = samples); the one place the arithmetic happens."""
    ref, got = np.asarray(ref), np.asarray(got)
    if ref.shape != got.shape:
        n = ref.shape[0] if ref.ndim else 1
        return BatchStats(
            n,
            str(ref.dtype),
            np.full(n, np.inf),
            shape_error=f"shape {list(got.shape)} != reference {list(ref.shape)}",
        )
    if ref.ndim < 2:
        ref, got = ref.reshape(-1, 1), got.reshape(-1, 1)
    n = ref.shape[0]
    rtol = tolerance.rtol if tolerance else _DEFAULT_RTOL
    r = ref.reshape(n, -1).astype(np.float64)
    g = got.reshape(n, -1).astype(np.float64)
    st = BatchStats(n, str(ref.dtype), np.zeros(n), elements=r.size, sample_shape=list(ref.shape[1:]))
    if r.size == 0:
        st.mse, st.cos = np.zeros(n), np.ones(n, np.float32)
        return st
    bad_rows = None
    if np.isfinite(r).all() and np.isfinite(g).all():  # the common case: no masking needed
        d = np.abs(g - r)
        ar = np.abs(r)
        rf, gf = r, g
    else:
        fin_r, fin_g = np.isfinite(r), np.isfinite(g)
        st.nonfinite_ref = int((~fin_r).sum())
        st.nonfinite_got = int((~fin_g).sum())
        rows = np.flatnonzero(~(fin_r.all(axis=1) & fin_g.all(axis=1)))
        st.nonfinite_first = int(rows[0]) if rows.size else None
        nan_r, nan_g = np.isnan(r), np.isnan(g)
        bad = (nan_r != nan_g) | ((np.isinf(r) | np.isinf(g)) & (r != g) & ~nan_r & ~nan_g)
        same = (r == g) | (nan_r & nan_g)  # equal infinities and NaN pairs count as equal
        d = np.where(same | bad, 0.0, np.abs(g - r))
        ar = np.where(np.isfinite(r), np.abs(r), 0.0)
        ok = np.isfinite(r) & np.isfinite(g) & ~bad
        rf, gf = np.where(ok, r, 0.0), np.where(ok, g, 0.0)
        st.nan_mismatches = int(bad.sum())
        bad_rows = bad.any(axis=1)
    excess = d - rtol * ar
    st.per_abs = d.max(axis=1)
    st.max_rel = float((d / np.maximum(ar, _REL_FLOOR)).max())
    st.min_passing_atol = max(float(excess.max()), 0.0)
    if tolerance is not None:
        st.mismatch_count = int((excess > tolerance.atol).sum()) + st.nan_mismatches
    st.mse = np.einsum("ij,ij->i", d, d) / d.shape[1]
    nr = np.sqrt(np.einsum("ij,ij->i", rf, rf))
    ng = np.sqrt(np.einsum("ij,ij->i", gf, gf))
    dot = np.einsum("ij,ij->i", rf, gf)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where((nr > 0) & (ng > 0), dot / (nr * ng), np.where(nr == ng, 1.0, 0.0))
    st.cos = np.clip(cos, -1.0, 1.0).astype(np.float32)
    if bad_rows is not None and bad_rows.any():
        st.per_abs = np.where(bad_rows, np.inf, st.per_abs)
        st.mse = np.where(bad_rows, np.inf, st.mse)
        st.cos = np.where(bad_rows, -1.0, st.cos).astype(np.float32)
        st.min_passing_atol = math.inf
    nz = d[d > 0]
    st.zeros = int(d.size - nz.size)
    if nz.size:
        idx = np.searchsorted(HIST_EDGES, np.log10(nz), side="right")
        st.hist = np.bincount(idx, minlength=len(HIST_EDGES) + 1)[: len(HIST_EDGES) + 1].astype(np.int64)
    return st


class OutputAccumulator:
    """Running error statistics of one output; ``update`` per batch, ``summary`` at the end."""

    def __init__(self, name: str, tolerance: Tolerance | None, *, max_worst: int = 10) -> None:
        self.name = name
        self.tolerance = tolerance
        self.rtol = tolerance.rtol if tolerance else _DEFAULT_RTOL
        self.max_worst = max_worst
        self.samples = 0
        self.elements = 0
        self.dtype = ""
        self.sample_shape: list[int] = []
        self.max_abs = 0.0
        self.max_rel = 0.0
        self.min_passing_atol = 0.0
        self.nan_mismatches = 0
        self.mismatch_count = 0
        self.hist = np.zeros(len(HIST_EDGES) + 1, dtype=np.int64)  # [< 1e-12, bins..., >= 1e2]
        self.zeros = 0
        self._mse: list[np.ndarray] = []
        self._cos: list[np.ndarray] = []
        self._worst: list[WorstSample] = []
        self.shape_errors: list[str] = []
        self.nonfinite_reference = 0
        self.nonfinite_candidate = 0
        self.nonfinite_where: str | None = None

    def update(
        self,
        ref: np.ndarray,
        got: np.ndarray,
        *,
        indices: np.ndarray | None = None,
        ids: list[str] | None = None,
        group: str = "",
    ) -> np.ndarray:
        """Add one batch (axis 0 = samples; ``indices`` = their sample indices); returns the per-sample max abs."""
        return self.add(batch_stats(ref, got, self.tolerance), indices=indices, ids=ids, group=group)

    def add(
        self,
        st: BatchStats,
        *,
        indices: np.ndarray | None = None,
        ids: list[str] | None = None,
        group: str = "",
    ) -> np.ndarray:
        """Merge the statistics of one batch (computed once by :func:`batch_stats`, shared by several views)."""
        self.dtype = self.dtype or st.dtype
        self.samples += st.n
        if st.shape_error is not None:
            msg = st.shape_error + (f" at {group}" if group else "")
            if msg not in self.shape_errors:
                self.shape_errors.append(msg)
            return st.per_abs
        self.sample_shape = st.sample_shape
        self.elements += st.elements
        if st.elements == 0:
            return st.per_abs
        self.max_abs = max(self.max_abs, float(st.per_abs.max()))
        self.max_rel = max(self.max_rel, st.max_rel)
        self.min_passing_atol = max(self.min_passing_atol, st.min_passing_atol)
        self.nan_mismatches += st.nan_mismatches
        self.mismatch_count += st.mismatch_count
        self.nonfinite_reference += st.nonfinite_ref
        self.nonfinite_candidate += st.nonfinite_got
        if self.nonfinite_where is None and st.nonfinite_first is not None:
            i = st.nonfinite_first
            sid = ids[i] if ids and i < len(ids) else f"#{int(indices[i]) if indices is not None else i}"
            self.nonfinite_where = (
                f"sample {sid}"
                + (f" ({group})" if group else "")
                + f", output shape [{st.n}, "
                + ", ".join(str(d) for d in st.sample_shape)
                + "]"
            )
        self.hist += st.hist
        self.zeros += st.zeros
        self._mse.append(st.mse)
        self._cos.append(st.cos)
        for i in np.argsort(-st.per_abs)[: self.max_worst]:
            index = (
                int(indices[i]) if indices is not None and i < len(indices) else self.samples - st.n + int(i)
            )
            item = WorstSample(
                float(st.per_abs[i]),
                self.name,
                index,
                ids[i] if ids and i < len(ids) else None,
                group,
                float(st.mse[i]),
            )
            if len(self._worst) < self.max_worst:
                heapq.heappush(self._worst, item)
            elif item.max_abs > self._worst[0].max_abs:
                heapq.heapreplace(self._worst, item)
        return st.per_abs

    def worst(self) -> list[WorstSample]:
        return sorted(self._worst, key=lambda w: -w.max_abs)

    def summary(
        self, policy: GatePolicy, *, mse_override: tuple[float, float] | None = None
    ) -> OutputSummary:
        """Verdict under ``policy``; ``mse_override`` (mean, p99) replaces raw MSE (softmax MSE for classification)."""
        mse = np.concatenate(self._mse) if self._mse else np.zeros(0)
        cos = np.concatenate(self._cos) if self._cos else np.ones(0, np.float32)
        if mse.size and not np.isfinite(mse).all():
            mse_mean = mse_p99 = math.inf  # NaN/inf in one engine: no finite MSE describes it
        else:
            mse_mean = float(mse.mean()) if mse.size else 0.0
            mse_p99 = float(np.percentile(mse, 99)) if mse.size else 0.0
        if mse_override is not None:
            mse_mean, mse_p99 = mse_override
        failures: list[str] = list(self.shape_errors)
        if not policy.allow_nonfinite and (self.nonfinite_reference or self.nonfinite_candidate):
            failures.append(
                f"{self.nonfinite_reference} NaN/Inf values in the reference and {self.nonfinite_candidate} in "
                f"onnxruntime (first at {self.nonfinite_where}); NaN/Inf is not agreement "
                "(--allow-nonfinite accepts it)"
            )
        elif self.nan_mismatches:
            failures.append(f"{self.nan_mismatches} elements are NaN/inf in only one engine")
        tol = self.tolerance
        if tol is not None and self.mismatch_count:
            failures.append(
                f"{self.mismatch_count} of {self.elements} elements outside atol={tol.atol:g} "
                f"rtol={tol.rtol:g} (max abs {self.max_abs:.3g}; would pass with "
                f"atol={self.min_passing_atol:.3g})"
            )
        if policy.mse_mean is not None and mse_mean > policy.mse_mean:
            failures.append(f"MSE mean {mse_mean:.3g} > {policy.mse_mean:g}")
        if policy.mse_p99 is not None and mse_p99 > policy.mse_p99:
            failures.append(f"MSE p99 {mse_p99:.3g} > {policy.mse_p99:g}")
        cos_min = float(cos.min()) if cos.size else 1.0
        if policy.cosine_min is not None and cos_min < policy.cosine_min:
            failures.append(f"cosine similarity {cos_min:.5f} < {policy.cosine_min:g}")
        if self.samples == 0:
            failures.append("no samples were compared")
        labels = ["<1e-12"] + [f"1e{e:g}" for e in HIST_EDGES[1:]] + [">=1e2"]
        return OutputSummary(
            name=self.name,
            samples=self.samples,
            elements=self.elements,
            dtype=self.dtype,
            sample_shape=self.sample_shape,
            max_abs=self.max_abs,
            max_rel=self.max_rel,
            mse_mean=mse_mean,
            mse_p99=mse_p99,
            cosine_min=cos_min,
            cosine_mean=float(cos.mean()) if cos.size else 1.0,
            nan_mismatches=self.nan_mismatches,
            mismatch_count=self.mismatch_count,
            tolerance=tol.to_dict() if tol else None,
            min_passing_atol=self.min_passing_atol,
            histogram={
                "log10_edges": HIST_EDGES,
                "labels": labels,
                "counts": self.hist.tolist(),
                "zeros": self.zeros,
            },
            passed=not failures,
            failures=failures,
            shape_errors=list(self.shape_errors),
            nonfinite_reference=self.nonfinite_reference,
            nonfinite_candidate=self.nonfinite_candidate,
            nonfinite_where=self.nonfinite_where,
        )

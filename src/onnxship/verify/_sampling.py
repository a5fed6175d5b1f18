"""Sampling modes: smoke (N random), coverage (stratified by class), full (everything, streamed),
plus optional hardness bins that add samples near the decision boundary (by the reference's softmax margin)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from onnxship._errors import ConfigError

__all__ = ["MODES", "SampleConfig", "SamplePlan", "add_hard_samples", "plan_samples"]

MODES = ("smoke", "coverage", "full")


@dataclass(frozen=True)
class SampleConfig:
    """Which samples to compare (report.json ``compare``)."""

    mode: str = "smoke"  # smoke | coverage | full
    sample_count: int = 32  # smoke: random samples
    per_class_k: int = 1  # coverage: samples per class
    min_classes: int = 1000  # coverage: classes wanted (fewer in the data is recorded, not an error)
    max_total: int = 5000  # coverage: cap on samples
    hardness_bins: tuple[float, ...] | None = None  # e.g. (0.0, 0.3, 0.6, 0.85, 1.0) over 1 - margin
    hard_per_bin: int = 8  # samples added per hardness bin
    hardness_pool: int = 2000  # unselected samples scored by the reference to find hard ones
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}", hint=f"valid modes: {', '.join(MODES)}")
        for name in ("sample_count", "per_class_k", "max_total"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.hardness_bins is not None:
            b = list(self.hardness_bins)
            if len(b) < 2 or b != sorted(b) or b[0] < 0 or b[-1] > 1:
                raise ConfigError(
                    f"hardness bins {b} must be increasing edges within [0, 1]", hint="e.g. 0,0.3,0.6,0.85,1"
                )


@dataclass
class SamplePlan:
    """The chosen samples (None: all, streamed) and how they were chosen."""

    indices: np.ndarray | None
    policy: str  # random | stratified | all | golden
    total_available: int
    sampled_classes: int | None = None
    hard_bins: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return self.total_available if self.indices is None else int(self.indices.shape[0])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("indices")
        d["count"] = self.count
        return d


def plan_samples(n: int, labels: np.ndarray | None, config: SampleConfig) -> SamplePlan:
    """Choose sample indices for the mode; deterministic for a seed."""
    rng = np.random.default_rng(config.seed)
    if n == 0:
        raise ConfigError("the data source holds no samples", hint="point --data at a non-empty dataset")
    if config.mode == "full":
        classes = int(np.unique(labels).size) if labels is not None else None
        return SamplePlan(None, "all", n, classes)
    if config.mode == "smoke" or labels is None:
        plan_notes = []
        k = config.sample_count if config.mode == "smoke" else min(config.max_total, n)
        if config.mode == "coverage":
            plan_notes.append("coverage without labels: random samples up to max_total instead of per-class")
        idx = np.sort(rng.choice(n, size=min(k, n), replace=False))
        classes = int(np.unique(labels[idx]).size) if labels is not None else None
        return SamplePlan(idx, "random", n, classes, notes=plan_notes)
    classes, inverse = np.unique(labels, return_inverse=True)
    order = rng.permutation(len(classes))
    picked: list[np.ndarray] = []
    total = 0
    for ci in order:
        members = np.flatnonzero(inverse == ci)
        take = rng.choice(members, size=min(config.per_class_k, members.size), replace=False)
        if total + take.size > config.max_total:
            break
        picked.append(take)
        total += take.size
    idx = np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)
    sampled = len(picked)
    notes = ["stratified by class"]
    if sampled < config.min_classes:
        why = "max_total reached" if sampled < len(classes) else f"the data has {len(classes)} classes"
        notes.append(f"{sampled} classes sampled, fewer than min_classes={config.min_classes} ({why})")
    return SamplePlan(idx, "stratified", n, sampled, notes=notes)


def add_hard_samples(
    plan: SamplePlan, margins_of: Callable[[np.ndarray], np.ndarray], config: SampleConfig
) -> SamplePlan:
    """Add up to ``hard_per_bin`` unselected samples per hardness bin (hardness = 1 - reference softmax margin).

    ``margins_of(indices)`` runs the reference on those samples and returns their margins.
    """
    if config.hardness_bins is None or plan.indices is None:
        if config.hardness_bins is not None:
            plan.notes.append("hardness bins ignored in full mode (every sample is compared)")
        return plan
    rng = np.random.default_rng(config.seed + 1)
    rest = np.setdiff1d(np.arange(plan.total_available), plan.indices)
    if rest.size == 0:
        plan.notes.append("hardness bins: every sample is already selected")
        return plan
    pool = np.sort(rng.choice(rest, size=min(config.hardness_pool, rest.size), replace=False))
    hardness = 1.0 - np.asarray(margins_of(pool), dtype=np.float64)
    edges = list(config.hardness_bins)
    added: list[np.ndarray] = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        last = hi == edges[-1]
        members = pool[(hardness >= lo) & ((hardness <= hi) if last else (hardness < hi))]
        take = (
            rng.choice(members, size=min(config.hard_per_bin, members.size), replace=False)
            if members.size
            else np.zeros(0, np.int64)
        )
        added.append(take)
        plan.hard_bins.append({"low": lo, "high": hi, "pool": int(members.size), "added": int(take.size)})
    extra = np.concatenate(added) if added else np.zeros(0, np.int64)
    plan.indices = np.sort(np.concatenate([plan.indices, extra]).astype(np.int64))
    plan.notes.append(
        f"hardness bins enabled: {int(extra.size)} samples near the decision boundary added "
        f"from a pool of {pool.size}"
    )
    return plan

"""Classification agreement: top-1 decisions and probability MSE between two engines, streamed per batch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from onnxship._errors import ConfigError
from onnxship.verify._tasks._common import (
    TaskGate,
    _as_probs,
    _check_pair,
    _rows,
)

__all__ = ["ClassificationAgreement", "ClassificationMetric", "classification_agreement"]


@dataclass
class ClassificationAgreement:
    """Do both engines pick the same class? Plus probability MSE per sample (mse_mean / mse_p99)."""

    samples: int
    top1_mismatch_count: int
    top1_mismatch_rate: float
    top1_match_rate: float
    prob_mse_mean: float
    prob_mse_p99: float
    classes_seen: int  # distinct classes among the samples (by label, else by the reference's decision)
    per_class_top10: list[
        dict[str, Any]
    ]  # classes with the most mismatches: {"class", "mismatches", "samples", "rate"}
    label_accuracy: dict[str, float] | None = None  # {"reference", "candidate"} when labels were given
    # (reference class, ONNX class) counts among the samples with the largest probability error
    worst_confusion: list[dict[str, Any]] = field(default_factory=list)
    passed: bool = True
    reason: str | None = None
    gate: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"task": "classification", **asdict(self)}


def _worst_confusion(mse: np.ndarray, top1: list[np.ndarray], worst: int = 50) -> list[dict[str, Any]]:
    """How the ``worst`` samples by probability MSE were classified by each engine, as counted pairs."""
    if not top1 or not mse.size:
        return []
    pairs = np.concatenate(top1)[np.argsort(-mse, kind="stable")[:worst]]
    keys, counts = np.unique(pairs, axis=0, return_counts=True)
    rows = [
        {"reference": int(r), "onnx": int(g), "count": int(c)} for (r, g), c in zip(keys, counts, strict=True)
    ]
    return sorted(rows, key=lambda d: (d["reference"] == d["onnx"], -d["count"], d["reference"]))


class ClassificationMetric:
    """Streaming top-1 agreement; classes are keyed by label when given, else by the reference's top-1."""

    def __init__(self, gate: TaskGate | None = None) -> None:
        self.gate = gate or TaskGate()
        self._count: dict[int, int] = {}
        self._miss: dict[int, int] = {}
        self._mse: list[np.ndarray] = []
        self._top1: list[np.ndarray] = []  # (reference, candidate) top-1 per sample
        self._correct = [0, 0]
        self._labelled = 0
        self.samples = 0

    def update(self, ref: np.ndarray, got: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Add one batch; returns the per-sample mismatch mask."""
        _check_pair(ref, got, "classification outputs")
        r, g = _rows(ref, "reference logits"), _rows(got, "candidate logits")
        rt, gt = r.argmax(axis=1), g.argmax(axis=1)
        miss = rt != gt
        pr, pg = _as_probs(r), _as_probs(g)
        self._mse.append(((pr - pg) ** 2).mean(axis=1).astype(np.float32))
        self._top1.append(np.stack([rt, gt], axis=1).astype(np.int64))
        keys = rt
        if labels is not None:
            lab = np.asarray(labels).reshape(-1).astype(np.int64)
            if lab.shape[0] != r.shape[0]:
                raise ConfigError(
                    f"{lab.shape[0]} labels for {r.shape[0]} samples", hint="give one class label per sample"
                )
            keys = lab
            self._correct[0] += int((rt == lab).sum())
            self._correct[1] += int((gt == lab).sum())
            self._labelled += lab.shape[0]
        for k, m in zip(keys.tolist(), miss.tolist(), strict=True):
            self._count[k] = self._count.get(k, 0) + 1
            if m:
                self._miss[k] = self._miss.get(k, 0) + 1
        self.samples += r.shape[0]
        return miss

    def result(self) -> ClassificationAgreement:
        n = self.samples
        mse = np.concatenate(self._mse) if self._mse else np.zeros(0, np.float32)
        misses = sum(self._miss.values())
        rate = misses / n if n else 0.0
        top = sorted(self._miss.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        per_class = [
            {
                "class": int(c),
                "mismatches": int(m),
                "samples": int(self._count[c]),
                "rate": m / self._count[c],
            }
            for c, m in top
        ]
        res = ClassificationAgreement(
            samples=n,
            top1_mismatch_count=misses,
            top1_mismatch_rate=rate,
            top1_match_rate=1.0 - rate,
            prob_mse_mean=float(mse.mean()) if mse.size else 0.0,
            prob_mse_p99=float(np.percentile(mse, 99)) if mse.size else 0.0,
            classes_seen=len(self._count),
            per_class_top10=per_class,
            worst_confusion=_worst_confusion(mse, self._top1),
            gate={
                k: v
                for k, v in self.gate.to_dict().items()
                if k.startswith(("top1", "prob")) and v is not None
            },
        )
        if self._labelled:
            res.label_accuracy = {
                "reference": self._correct[0] / self._labelled,
                "candidate": self._correct[1] / self._labelled,
            }
        problems = []
        if n == 0:
            problems.append("no samples were compared")
        elif rate > self.gate.top1_mismatch_rate:
            problems.append(
                f"top-1 mismatch rate {rate:.4f} ({misses}/{n}) > {self.gate.top1_mismatch_rate:g}; "
                f"worst classes {[p['class'] for p in per_class[:3]]}"
            )
        if self.gate.prob_mse_mean is not None and res.prob_mse_mean > self.gate.prob_mse_mean:
            problems.append(f"probability MSE mean {res.prob_mse_mean:.3g} > {self.gate.prob_mse_mean:g}")
        if self.gate.prob_mse_p99 is not None and res.prob_mse_p99 > self.gate.prob_mse_p99:
            problems.append(f"probability MSE p99 {res.prob_mse_p99:.3g} > {self.gate.prob_mse_p99:g}")
        if problems:
            res.passed, res.reason = False, "; ".join(problems)
        return res


def classification_agreement(
    ref: np.ndarray, got: np.ndarray, labels: np.ndarray | None = None, gate: TaskGate | None = None
) -> ClassificationAgreement:
    """Top-1 agreement of two engines' class scores.

    Example:
        >>> classification_agreement(np.eye(3), np.eye(3)).top1_mismatch_rate
        0.0
    """
    m = ClassificationMetric(gate)
    m.update(ref, got, labels)
    return m.result()

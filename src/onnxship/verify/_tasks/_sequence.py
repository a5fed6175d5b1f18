"""Next-event sequence agreement (DeepLog): an event is normal when it is among the top ``g`` predictions; do both
engines flag the same anomalies?"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from onnxship._errors import ConfigError
from onnxship.verify._tasks._common import (
    TaskGate,
    _check_pair,
    _rows,
)

__all__ = ["SequenceAgreement", "SequenceMetric", "sequence_agreement"]


@dataclass
class SequenceAgreement:
    """DeepLog next-event agreement: is the true next event among the top g for both engines?"""

    samples: int
    top_g: int
    labels_source: (
        str  # "given" | "reference_top1" (no labels: the reference's top-1 stands in for the truth)
    )
    ref_in_top_g_rate: float  # fraction of samples whose true next event is in the reference's top g
    cand_in_top_g_rate: float
    decision_agreement: float  # both engines call the event normal, or both call it an anomaly
    decision_disagreement_count: int
    anomaly_rate_reference: float
    anomaly_rate_candidate: float
    top_g_set_agreement: float  # fraction of samples whose top-g sets are identical
    top1_agreement: float
    passed: bool = True
    reason: str | None = None
    gate: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"task": "sequence", **asdict(self)}


def _top_g(x: np.ndarray, g: int) -> np.ndarray:
    return np.argsort(-x, axis=1, kind="stable")[:, :g]


class SequenceMetric:
    """Streaming DeepLog top-g agreement."""

    def __init__(self, top_g: int = 9, gate: TaskGate | None = None) -> None:
        if top_g < 1:
            raise ConfigError(f"top_g={top_g} must be >= 1", hint="DeepLog uses g=9 for ~30 templates")
        self.top_g = top_g
        self.gate = gate or TaskGate()
        self.samples = 0
        self._sums = np.zeros(
            7, dtype=np.int64
        )  # ref_in, cand_in, agree, ref_anom, cand_anom, set_same, top1_same
        self._labels_given: bool | None = None

    def update(self, ref: np.ndarray, got: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Add one batch; returns the per-sample decision-disagreement mask."""
        _check_pair(ref, got, "sequence outputs")
        r, g = _rows(ref, "reference logits"), _rows(got, "candidate logits")
        k = min(self.top_g, r.shape[1])
        tr, tg = _top_g(r, k), _top_g(g, k)
        if labels is None:
            lab = tr[:, 0]
        else:
            lab = np.asarray(labels).reshape(-1).astype(np.int64)
            if lab.shape[0] != r.shape[0]:
                raise ConfigError(
                    f"{lab.shape[0]} next-event labels for {r.shape[0]} predictions",
                    hint="labels must have the model output's leading dims ([N] or [N, T])",
                )
        given = labels is not None
        if self._labels_given is not None and self._labels_given != given:
            raise ConfigError(
                "some batches have next-event labels and some do not",
                hint="give labels for every batch or for none",
            )
        self._labels_given = given
        ref_in = (tr == lab[:, None]).any(axis=1)
        cand_in = (tg == lab[:, None]).any(axis=1)
        same_set = (np.sort(tr, axis=1) == np.sort(tg, axis=1)).all(axis=1)
        disagree = ref_in != cand_in
        self._sums += np.array(
            [
                ref_in.sum(),
                cand_in.sum(),
                (~disagree).sum(),
                (~ref_in).sum(),
                (~cand_in).sum(),
                same_set.sum(),
                (tr[:, 0] == tg[:, 0]).sum(),
            ],
            dtype=np.int64,
        )
        self.samples += r.shape[0]
        return disagree

    def result(self) -> SequenceAgreement:
        n = max(self.samples, 1)
        s = self._sums
        res = SequenceAgreement(
            samples=self.samples,
            top_g=self.top_g,
            labels_source="given" if self._labels_given else "reference_top1",
            ref_in_top_g_rate=s[0] / n,
            cand_in_top_g_rate=s[1] / n,
            decision_agreement=s[2] / n,
            decision_disagreement_count=int(self.samples - s[2]),
            anomaly_rate_reference=s[3] / n,
            anomaly_rate_candidate=s[4] / n,
            top_g_set_agreement=s[5] / n,
            top1_agreement=s[6] / n,
            gate={"decision_disagreement": self.gate.decision_disagreement},
        )
        res.ref_in_top_g_rate, res.cand_in_top_g_rate = (
            float(res.ref_in_top_g_rate),
            float(res.cand_in_top_g_rate),
        )
        res.decision_agreement = float(res.decision_agreement)
        res.anomaly_rate_reference = float(res.anomaly_rate_reference)
        res.anomaly_rate_candidate = float(res.anomaly_rate_candidate)
        res.top_g_set_agreement, res.top1_agreement = (
            float(res.top_g_set_agreement),
            float(res.top1_agreement),
        )
        if self.samples == 0:
            res.passed, res.reason = False, "no samples were compared"
        elif 1.0 - res.decision_agreement > self.gate.decision_disagreement:
            res.passed = False
            res.reason = (
                f"anomaly decisions (true next event in top {self.top_g}) differ on "
                f"{res.decision_disagreement_count}/{self.samples} samples "
                f"(> {self.gate.decision_disagreement:g})"
            )
        return res


def sequence_agreement(
    ref: np.ndarray,
    got: np.ndarray,
    labels: np.ndarray | None = None,
    top_g: int = 9,
    gate: TaskGate | None = None,
) -> SequenceAgreement:
    """DeepLog top-g agreement of two engines' next-event logits.

    Example:
        >>> sequence_agreement(np.eye(4), np.eye(4), labels=np.arange(4), top_g=1).decision_agreement
        1.0
    """
    m = SequenceMetric(top_g, gate)
    m.update(ref, got, labels)
    return m.result()

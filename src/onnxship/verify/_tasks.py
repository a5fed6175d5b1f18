"""Task-level agreement between two engines, in numpy: classification, next-event sequences, detection.

Elementwise tolerances say whether numbers match; these metrics say whether *decisions* match, which is what a
user of an fp16/int8 variant cares about. Each metric is a streaming accumulator (``update`` per batch, ``result``
at the end) so the verification engine never holds a whole dataset; the ``*_agreement`` functions are one-shot
wrappers for callers that already have all outputs.

Conventions:
    classification  logits/probabilities ``[N, C]`` (extra leading dims are flattened); labels ``[N]`` optional.
    sequence        next-event logits ``[N, V]`` or ``[N, T, V]``; the true next event ``[N]`` / ``[N, T]``.
                    DeepLog: an event is *normal* when it is among the top ``g`` predictions, else an anomaly.
    detection       raw head outputs, decoded by :func:`decode_detections` into per-image boxes ``[K, 4]`` (xyxy)
                    and class scores ``[K, C]``; both engines then go through the *same* :func:`nms`. Raw layouts:
                    boxes + scores, ``[N, K, 4 + C]``, Ultralytics YOLOv8/11 ``[N, 4 + C, K]`` (``yolo``) and
                    YOLOv5 ``[N, K, 5 + C]`` (``yolov5``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from onnxship._errors import ConfigError

__all__ = [
    "ClassificationAgreement",
    "ClassificationMetric",
    "DetectionAgreement",
    "DetectionMetric",
    "Detections",
    "NmsConfig",
    "SequenceAgreement",
    "SequenceMetric",
    "TaskGate",
    "BOX_FORMATS",
    "box_iou",
    "classification_agreement",
    "decode_detections",
    "detection_agreement",
    "mean_average_precision",
    "nms",
    "sequence_agreement",
    "softmax",
    "softmax_margin",
]


@dataclass(frozen=True)
class TaskGate:
    """Task-level pass thresholds (seed 004 E-2)."""

    top1_mismatch_rate: float = 0.01  # classification: at most this fraction of top-1 decisions may differ
    map_delta: float = 0.01  # detection: |mAP@0.5 delta| and |mAP@0.5:0.95 delta| at most this
    iou_p95_delta: float = 0.01  # detection: p95 of (1 - IoU) over matched boxes at most this
    decision_disagreement: float = 0.01  # sequence: at most this fraction of anomaly decisions may differ
    prob_mse_mean: float | None = (
        None  # classification: mean per-sample MSE of softmax probabilities (None: off)
    )
    prob_mse_p99: float | None = None  # classification: p99 of the per-sample probability MSE (None: off)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float64."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _as_probs(x: np.ndarray) -> np.ndarray:
    """Rows that already are probabilities stay as they are; logits go through softmax."""
    x = np.asarray(x, dtype=np.float64)
    if x.size and x.min() >= 0.0 and np.allclose(x.sum(axis=-1), 1.0, atol=1e-3):
        return x
    return softmax(x)


def softmax_margin(logits: np.ndarray) -> np.ndarray:
    """Per-sample decision margin: top-1 minus top-2 probability, in [0, 1] (0 = on the decision boundary)."""
    p = _as_probs(_rows(logits, "logits"))
    if p.shape[1] < 2:
        return np.ones(p.shape[0])
    top2 = np.partition(p, -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def _rows(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 0:
        raise ConfigError(f"{what} is a scalar; expected [N, classes]", hint="pass the model's logits output")
    if x.ndim == 1:
        return x.reshape(1, -1)
    return x.reshape(-1, x.shape[-1])


def _check_pair(ref: np.ndarray, got: np.ndarray, what: str) -> None:
    if np.shape(ref) != np.shape(got):
        raise ConfigError(
            f"{what}: reference shape {list(np.shape(ref))} != candidate shape {list(np.shape(got))}",
            hint="both engines must answer the same batch",
        )


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


# --------------------------------------------------------------------------------------------- classification
@dataclass
class ClassificationAgreement:
    """Do both engines pick the same class? Plus probability MSE per sample (seed E-3's mse_mean / mse_p99)."""

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
    passed: bool = True
    reason: str | None = None
    gate: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"task": "classification", **asdict(self)}


class ClassificationMetric:
    """Streaming top-1 agreement; classes are keyed by label when given, else by the reference's top-1."""

    def __init__(self, gate: TaskGate | None = None) -> None:
        self.gate = gate or TaskGate()
        self._count: dict[int, int] = {}
        self._miss: dict[int, int] = {}
        self._mse: list[np.ndarray] = []
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


# --------------------------------------------------------------------------------------------------- sequence
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


# -------------------------------------------------------------------------------------------------- detection
@dataclass(frozen=True)
class NmsConfig:
    """The one post-processing applied to both engines' raw detections (seed E-3 ``postprocess.nms``)."""

    conf_threshold: float = 0.3  # drop candidates scoring below this
    iou_threshold: float = 0.5  # suppress a box overlapping a better one by more than this
    max_detections: int = 100  # per image, after NMS
    class_agnostic: bool = False  # True: suppress across classes

    def __post_init__(self) -> None:
        if not 0.0 <= self.iou_threshold <= 1.0 or not 0.0 <= self.conf_threshold <= 1.0:
            raise ConfigError(
                f"NMS thresholds must lie in [0, 1] (conf={self.conf_threshold}, iou={self.iou_threshold})"
            )
        if self.max_detections < 1:
            raise ConfigError(f"max_detections={self.max_detections} must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Detections:
    """Post-NMS detections of one image."""

    boxes: np.ndarray  # [K, 4] xyxy
    scores: np.ndarray  # [K]
    labels: np.ndarray  # [K] int


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: ``[A, 4] x [B, 4] -> [A, B]``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _nms_single(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        ious = box_iou(boxes[i : i + 1], boxes[order[1:]])[0]
        order = order[1:][ious <= iou_threshold]
    return keep


def nms(boxes: np.ndarray, scores: np.ndarray, config: NmsConfig | None = None) -> Detections:
    """Confidence filter + (per-class or class-agnostic) greedy NMS for one image.

    Args:
        boxes: ``[K, 4]`` xyxy.
        scores: ``[K, C]`` class scores (each candidate is labelled with its best class) or ``[K]`` (one class).
    """
    cfg = config or NmsConfig()
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        labels, best = np.zeros(scores.shape[0], np.int64), scores
    else:
        labels, best = scores.argmax(axis=1), scores.max(axis=1)
    if best.shape[0] != boxes.shape[0]:
        raise ConfigError(f"{boxes.shape[0]} boxes but {best.shape[0]} scores", hint="one score row per box")
    sel = np.nonzero(best >= cfg.conf_threshold)[0]
    boxes, best, labels = boxes[sel], best[sel], labels[sel]
    if cfg.class_agnostic:
        keep = _nms_single(boxes, best, cfg.iou_threshold)
    else:
        # Offset boxes per class so one NMS pass never suppresses across classes (same result as per-class NMS).
        span = float(np.abs(boxes).max()) + 1.0 if boxes.size else 1.0
        shifted = boxes + (labels.astype(np.float64) * span * 2)[:, None]
        keep = _nms_single(shifted, best, cfg.iou_threshold)
    keep = sorted(keep, key=lambda i: (-best[i], i))[: cfg.max_detections]
    idx = np.asarray(keep, dtype=np.int64)
    return Detections(boxes[idx], best[idx], labels[idx].astype(np.int64))


BOX_FORMATS = ("xyxy", "cxcywh", "yolo", "yolov5")


def decode_detections(
    outputs: dict[str, np.ndarray],
    *,
    boxes: str | None = None,
    scores: str | None = None,
    box_format: str = "xyxy",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split raw head outputs into per-image ``(boxes [K, 4] xyxy, scores [K, C])``.

    Layouts (``box_format``):

    * ``xyxy`` / ``cxcywh``: two outputs (``boxes`` ``[N, K, 4]`` and ``scores`` ``[N, K, C]``), or one output
      ``[N, K, 4 + C]`` (box then class scores). Without names, the first output of last-dim 4 is the boxes and the
      other the scores.
    * ``yolo``: Ultralytics' raw Detect output (YOLOv8/YOLO11, ``output0``): one tensor ``[N, 4 + C, K]``,
      channels first, boxes ``cx, cy, w, h`` in input pixels, then the C class scores (already sigmoid; no
      objectness).
    * ``yolov5``: YOLOv5's raw layout ``[N, K, 5 + C]``: ``cx, cy, w, h``, objectness, class scores; a
      candidate's class score is objectness x class probability.
    """
    if box_format not in BOX_FORMATS:
        raise ConfigError(f"unknown box format {box_format!r}", hint=f"valid: {', '.join(BOX_FORMATS)}")
    names = list(outputs)
    if box_format in ("yolo", "yolov5"):
        name = boxes or (names[0] if len(names) == 1 else None)
        if name is None or name not in outputs:
            raise ConfigError(
                f"box format {box_format!r} reads one raw output, got {names}",
                hint="name it: boxes=<the raw head output>, or export only the head output",
            )
        raw = np.asarray(outputs[name])
        need = 5 if box_format == "yolo" else 6
        axis = 1 if box_format == "yolo" else 2
        if raw.ndim != 3 or raw.shape[axis] < need:
            want = "[N, 4 + C, K]" if box_format == "yolo" else "[N, K, 5 + C]"
            raise ConfigError(
                f"detection output {name!r} has shape {list(raw.shape)}; box format {box_format!r} expects {want}",
                hint="yolo: Ultralytics YOLOv8/11 Detect output; yolov5: YOLOv5's [N, K, 5 + C]",
            )
        if box_format == "yolo":
            raw = np.swapaxes(raw, 1, 2)  # [N, K, 4 + C]
            b_all, s_all = raw[..., :4], raw[..., 4:]
        else:
            b_all, s_all = raw[..., :4], raw[..., 5:] * raw[..., 4:5]
    elif boxes is None and scores is None and len(names) == 1:
        raw = np.asarray(outputs[names[0]])
        if raw.ndim != 3 or raw.shape[-1] < 5:
            raise ConfigError(
                f"detection output {names[0]!r} has shape {list(raw.shape)}; expected [N, K, 4 + C]",
                hint="or give separate boxes [N, K, 4] and scores [N, K, C] outputs, or box_format='yolo' for "
                "Ultralytics' [N, 4 + C, K]",
            )
        b_all, s_all = raw[..., :4], raw[..., 4:]
    else:
        if boxes is None:
            boxes = next(
                (n for n in names if np.ndim(outputs[n]) == 3 and np.shape(outputs[n])[-1] == 4), None
            )
        if scores is None:
            scores = next((n for n in names if n != boxes), None)
        if boxes not in outputs or scores not in outputs:
            raise ConfigError(
                f"cannot find detection boxes/scores among outputs {names}",
                hint="name them: boxes=<[N, K, 4] output>, scores=<[N, K, C] output>",
            )
        b_all, s_all = np.asarray(outputs[boxes]), np.asarray(outputs[scores])
        if s_all.ndim == 2:
            s_all = s_all[..., None]
        if b_all.ndim != 3 or b_all.shape[-1] != 4 or s_all.shape[:2] != b_all.shape[:2]:
            raise ConfigError(
                f"boxes {list(b_all.shape)} / scores {list(s_all.shape)} do not fit [N, K, 4] / [N, K, C]"
            )
    b_all = b_all.astype(np.float64)
    if box_format != "xyxy":
        cx, cy, w, h = (b_all[..., i] for i in range(4))
        b_all = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)
    return [(b_all[i], s_all[i]) for i in range(b_all.shape[0])]


def _average_precision(tp: np.ndarray, scores: np.ndarray, n_gt: int) -> float:
    """COCO-style 101-point interpolated AP."""
    if n_gt == 0:
        return float("nan")
    if tp.size == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = tp[order].astype(np.float64)
    ctp, cfp = np.cumsum(tp), np.cumsum(1.0 - tp)
    recall = ctp / n_gt
    precision = ctp / np.maximum(ctp + cfp, 1e-12)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    points = np.linspace(0.0, 1.0, 101)
    idx = np.searchsorted(recall, points, side="left")
    return float(np.where(idx < precision.size, precision[np.minimum(idx, precision.size - 1)], 0.0).mean())


def mean_average_precision(
    dets: list[Detections], gts: list[Detections], iou_thresholds: tuple[float, ...] | np.ndarray = (0.5,)
) -> float:
    """mAP over classes present in the ground truth, averaged over ``iou_thresholds`` (greedy matching by score)."""
    if len(dets) != len(gts):
        raise ConfigError(f"{len(dets)} detection lists for {len(gts)} ground-truth lists")
    classes = sorted({int(c) for g in gts for c in g.labels.tolist()})
    if not classes:
        return float("nan")
    aps = []
    for thr in iou_thresholds:
        for c in classes:
            tps, scs, n_gt = [], [], 0
            for d, g in zip(dets, gts, strict=True):
                gb = g.boxes[g.labels == c]
                n_gt += gb.shape[0]
                dm = d.labels == c
                db, ds = d.boxes[dm], d.scores[dm]
                order = np.argsort(-ds, kind="stable")
                used = np.zeros(gb.shape[0], dtype=bool)
                ious = (
                    box_iou(db, gb) if gb.shape[0] and db.shape[0] else np.zeros((db.shape[0], gb.shape[0]))
                )
                tp = np.zeros(db.shape[0])
                for i in order:
                    if gb.shape[0] == 0:
                        break
                    cand = np.where(used, -1.0, ious[i])
                    j = int(cand.argmax())
                    if cand[j] >= thr:
                        used[j] = True
                        tp[i] = 1.0
                tps.append(tp)
                scs.append(ds)
            aps.append(_average_precision(np.concatenate(tps), np.concatenate(scs), n_gt))
    vals = [a for a in aps if not math.isnan(a)]
    return float(np.mean(vals)) if vals else float("nan")


@dataclass
class DetectionAgreement:
    """mAP deltas after one shared NMS, and how far matched boxes moved."""

    images: int
    nms: dict[str, Any]
    ground_truth: str  # "given" | "reference" (no labels: the reference's detections are the ground truth)
    map_0_5_reference: float | None
    map_0_5_candidate: float | None
    map_0_5_0_95_reference: float | None
    map_0_5_0_95_candidate: float | None
    map_0_5_delta: float | None
    map_0_5_0_95_delta: float | None
    iou_delta_p95: float | None  # p95 of 1 - IoU(reference box, candidate box) over matched pairs
    matched: int
    unmatched_reference: int
    unmatched_candidate: int
    detections_reference: int
    detections_candidate: int
    passed: bool = True
    reason: str | None = None
    gate: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {"task": "detection", **asdict(self)}
        return {k: (_finite(v) if isinstance(v, float) else v) for k, v in d.items()}


_COCO_IOUS = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2).tolist())


class DetectionMetric:
    """Streaming detection agreement; keeps only post-NMS detections (at most ``max_detections`` per image)."""

    def __init__(
        self,
        nms_config: NmsConfig | None = None,
        gate: TaskGate | None = None,
        boxes: str | None = None,
        scores: str | None = None,
        box_format: str = "xyxy",
    ) -> None:
        self.nms = nms_config or NmsConfig()
        self.gate = gate or TaskGate()
        self._decode = {"boxes": boxes, "scores": scores, "box_format": box_format}
        self._ref: list[Detections] = []
        self._got: list[Detections] = []
        self._gt: list[Detections] | None = None
        self._iou_deltas: list[float] = []
        self._unmatched = [0, 0]

    def update(
        self,
        ref: dict[str, np.ndarray],
        got: dict[str, np.ndarray],
        ground_truth: list[Detections] | None = None,
    ) -> None:
        """Add one batch of raw outputs (both engines), optionally with per-image ground truth."""
        for name in ref:
            if name in got:
                _check_pair(ref[name], got[name], f"detection output {name!r}")
        ref_imgs = decode_detections(ref, **self._decode)
        got_imgs = decode_detections(got, **self._decode)
        if ground_truth is not None:
            if len(ground_truth) != len(ref_imgs):
                raise ConfigError(f"{len(ground_truth)} ground-truth entries for {len(ref_imgs)} images")
            self._gt = (self._gt or []) + list(ground_truth)
        elif self._gt is not None:
            raise ConfigError("some batches have ground truth and some do not")
        for (rb, rs), (gb, gs) in zip(ref_imgs, got_imgs, strict=True):
            rd, gd = nms(rb, rs, self.nms), nms(gb, gs, self.nms)
            self._ref.append(rd)
            self._got.append(gd)
            self._match(rd, gd)

    def _match(self, rd: Detections, gd: Detections) -> None:
        used = np.zeros(gd.boxes.shape[0], dtype=bool)
        ious = box_iou(rd.boxes, gd.boxes) if rd.boxes.size and gd.boxes.size else None
        matched = 0
        for i in range(rd.boxes.shape[0]):
            if ious is None:
                break
            cand = np.where(used | (gd.labels != rd.labels[i]), -1.0, ious[i])
            j = int(cand.argmax())
            if cand[j] >= 0.5:
                used[j] = True
                matched += 1
                self._iou_deltas.append(1.0 - float(cand[j]))
        self._unmatched[0] += rd.boxes.shape[0] - matched
        self._unmatched[1] += gd.boxes.shape[0] - matched

    def result(self) -> DetectionAgreement:
        gts = self._gt if self._gt is not None else self._ref
        m50 = (mean_average_precision(self._ref, gts, (0.5,)), mean_average_precision(self._got, gts, (0.5,)))
        mall = (
            mean_average_precision(self._ref, gts, _COCO_IOUS),
            mean_average_precision(self._got, gts, _COCO_IOUS),
        )
        d50 = m50[1] - m50[0]
        dall = mall[1] - mall[0]
        p95 = float(np.percentile(self._iou_deltas, 95)) if self._iou_deltas else float("nan")
        res = DetectionAgreement(
            images=len(self._ref),
            nms=self.nms.to_dict(),
            ground_truth="given" if self._gt is not None else "reference",
            map_0_5_reference=m50[0],
            map_0_5_candidate=m50[1],
            map_0_5_0_95_reference=mall[0],
            map_0_5_0_95_candidate=mall[1],
            map_0_5_delta=d50,
            map_0_5_0_95_delta=dall,
            iou_delta_p95=p95,
            matched=len(self._iou_deltas),
            unmatched_reference=self._unmatched[0],
            unmatched_candidate=self._unmatched[1],
            detections_reference=sum(d.boxes.shape[0] for d in self._ref),
            detections_candidate=sum(d.boxes.shape[0] for d in self._got),
            gate={"map_delta": self.gate.map_delta, "iou_p95_delta": self.gate.iou_p95_delta},
        )
        problems = []
        if not self._ref:
            problems.append("no images were compared")
        for label, v in (("mAP@0.5", d50), ("mAP@0.5:0.95", dall)):
            if math.isfinite(v) and abs(v) > self.gate.map_delta:
                problems.append(f"{label} delta {v:+.4f} exceeds {self.gate.map_delta:g}")
        if math.isnan(d50) and res.detections_reference + res.detections_candidate > 0 and self._gt is None:
            problems.append(
                "the reference has no detections above the confidence threshold to compare against"
            )
        if math.isfinite(p95) and p95 > self.gate.iou_p95_delta:
            problems.append(f"p95 IoU delta of matched boxes {p95:.4f} exceeds {self.gate.iou_p95_delta:g}")
        if problems:
            res.passed, res.reason = False, "; ".join(problems)
        return res


def detection_agreement(
    ref: dict[str, np.ndarray],
    got: dict[str, np.ndarray],
    *,
    nms_config: NmsConfig | None = None,
    ground_truth: list[Detections] | None = None,
    gate: TaskGate | None = None,
    boxes: str | None = None,
    scores: str | None = None,
    box_format: str = "xyxy",
) -> DetectionAgreement:
    """mAP@0.5, mAP@0.5:0.95 and p95 IoU deltas of two engines' raw detection outputs after one shared NMS."""
    m = DetectionMetric(nms_config, gate, boxes=boxes, scores=scores, box_format=box_format)
    m.update(ref, got, ground_truth)
    return m.result()

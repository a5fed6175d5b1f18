"""Detection agreement: raw head layouts decoded to boxes and scores, the one shared NMS, and mAP deltas between
the two engines (and against ground truth when given)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from onnxship._errors import ConfigError
from onnxship.verify._tasks._common import (
    TaskGate,
    _check_pair,
    _finite,
)

__all__ = [
    "BOX_FORMATS",
    "DetectionAgreement",
    "DetectionMetric",
    "Detections",
    "NmsConfig",
    "box_iou",
    "decode_detections",
    "detection_agreement",
    "mean_average_precision",
    "nms",
]


@dataclass(frozen=True)
class NmsConfig:
    """The one post-processing applied to both engines' raw detections (the ``postprocess.nms`` settings)."""

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

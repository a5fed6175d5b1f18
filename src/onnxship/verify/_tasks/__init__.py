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

One module per task metric (``_classification``, ``_sequence``, ``_detection``); what they share is in
``_common``. This package re-exports all of it.
"""

from __future__ import annotations

from onnxship.verify._tasks._classification import (
    ClassificationAgreement,
    ClassificationMetric,
    classification_agreement,
)
from onnxship.verify._tasks._common import TaskGate, softmax, softmax_margin
from onnxship.verify._tasks._detection import (
    BOX_FORMATS,
    DetectionAgreement,
    DetectionMetric,
    Detections,
    NmsConfig,
    box_iou,
    decode_detections,
    detection_agreement,
    mean_average_precision,
    nms,
)
from onnxship.verify._tasks._sequence import SequenceAgreement, SequenceMetric, sequence_agreement

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

"""Task metrics: classification top-1, DeepLog top-g, detection NMS + mAP deltas (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxship._errors import ConfigError
from onnxship.verify import (
    ClassificationMetric,
    Detections,
    NmsConfig,
    SequenceMetric,
    TaskGate,
    box_iou,
    classification_agreement,
    detection_agreement,
    mean_average_precision,
    nms,
    sequence_agreement,
    softmax_margin,
)


def test_classification_identical_engines_pass():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((200, 12)).astype(np.float32)
    res = classification_agreement(logits, logits.copy())
    assert res.passed and res.top1_mismatch_count == 0 and res.top1_match_rate == 1.0
    assert res.prob_mse_mean == 0.0 and res.per_class_top10 == []


def test_classification_counts_mismatches_per_class():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((100, 5))
    got = ref.copy()
    labels = np.repeat(np.arange(5), 20)
    # Flip the decision of 3 samples of class 2 and 1 sample of class 4.
    for i in [40, 41, 42, 80]:
        top, second = np.argsort(-ref[i])[:2]
        got[i, top], got[i, second] = ref[i, second], ref[i, top]
    res = classification_agreement(ref, got, labels=labels)
    assert res.top1_mismatch_count == 4 and res.top1_mismatch_rate == pytest.approx(0.04)
    assert [p["class"] for p in res.per_class_top10] == [2, 4]
    assert res.per_class_top10[0] == {"class": 2, "mismatches": 3, "samples": 20, "rate": 0.15}
    assert not res.passed and "top-1 mismatch rate" in res.reason
    assert res.label_accuracy is not None and res.prob_mse_p99 > 0
    assert classification_agreement(ref, got, gate=TaskGate(top1_mismatch_rate=0.05)).passed


def test_classification_streams_like_one_shot():
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((90, 7))
    got = ref + rng.normal(0, 0.3, ref.shape)
    one = classification_agreement(ref, got)
    m = ClassificationMetric()
    for s in range(0, 90, 16):
        m.update(ref[s : s + 16], got[s : s + 16])
    streamed = m.result()
    assert streamed.top1_mismatch_count == one.top1_mismatch_count
    assert streamed.per_class_top10 == one.per_class_top10
    assert streamed.prob_mse_mean == pytest.approx(one.prob_mse_mean, rel=1e-6)


def test_classification_shape_mismatch_is_clear():
    with pytest.raises(ConfigError, match="reference shape"):
        classification_agreement(np.zeros((4, 3)), np.zeros((4, 2)))


def test_softmax_margin_is_zero_on_boundary():
    m = softmax_margin(np.array([[1.0, 1.0, -5.0], [10.0, 0.0, 0.0]]))
    assert m[0] == pytest.approx(0.0) and m[1] > 0.99


def test_sequence_topg_decision_agreement():
    ref = np.array([[5.0, 4.0, 3.0, 2.0, 1.0]] * 4)
    got = ref.copy()
    got[3] = [1.0, 2.0, 3.0, 4.0, 5.0]  # reversed ranking on the last sample
    labels = np.array([0, 1, 4, 0])  # sample 2 is an anomaly for both; sample 3 flips
    res = sequence_agreement(ref, got, labels=labels, top_g=2)
    assert res.labels_source == "given"
    assert res.decision_disagreement_count == 1 and res.decision_agreement == pytest.approx(0.75)
    assert res.anomaly_rate_reference == pytest.approx(0.25) and res.anomaly_rate_candidate == pytest.approx(
        0.5
    )
    assert res.top_g_set_agreement == pytest.approx(0.75) and not res.passed
    same = sequence_agreement(ref, ref.copy(), labels=labels, top_g=2)
    assert same.passed and same.decision_agreement == 1.0


def test_sequence_per_step_outputs_and_streaming():
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((6, 8, 30))
    got = ref + rng.normal(0, 1e-6, ref.shape)
    labels = rng.integers(0, 30, (6, 8))
    m = SequenceMetric(top_g=9)
    m.update(ref[:3], got[:3], labels[:3])
    m.update(ref[3:], got[3:], labels[3:])
    res = m.result()
    assert res.samples == 48 and res.passed and res.decision_agreement == 1.0
    with pytest.raises(ConfigError, match="labels"):
        m.update(ref[:1], got[:1])
    with pytest.raises(ConfigError, match="top_g"):
        SequenceMetric(top_g=0)


def test_box_iou_and_nms():
    a = np.array([[0, 0, 10, 10], [0, 0, 5, 10]], dtype=float)
    iou = box_iou(a, a)
    assert iou[0, 1] == pytest.approx(0.5) and iou[0, 0] == pytest.approx(1.0)
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]], dtype=float)
    scores = np.array([[0.9, 0.0], [0.8, 0.0], [0.7, 0.0], [0.0, 0.6]])
    d = nms(boxes, scores, NmsConfig(conf_threshold=0.3, iou_threshold=0.5))
    assert d.labels.tolist() == [0, 0, 1] and d.scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    agnostic = nms(boxes, scores, NmsConfig(class_agnostic=True))
    assert agnostic.scores.tolist() == pytest.approx([0.9, 0.7])
    assert nms(boxes, scores, NmsConfig(max_detections=1)).boxes.shape == (1, 4)
    with pytest.raises(ConfigError):
        NmsConfig(iou_threshold=1.5)


def _det_outputs(rng: np.random.Generator, n: int = 4, k: int = 20, c: int = 3) -> dict[str, np.ndarray]:
    xy = rng.uniform(0, 80, (n, k, 2))
    wh = rng.uniform(5, 20, (n, k, 2))
    boxes = np.concatenate([xy, xy + wh], axis=-1).astype(np.float32)
    scores = rng.uniform(0, 1, (n, k, c)).astype(np.float32)
    return {"boxes": boxes, "scores": scores}


def test_detection_identical_engines_have_zero_delta():
    out = _det_outputs(np.random.default_rng(4))
    res = detection_agreement(out, {k: v.copy() for k, v in out.items()})
    assert res.passed and res.map_0_5_delta == 0.0 and res.map_0_5_0_95_delta == 0.0
    assert res.map_0_5_reference == pytest.approx(1.0) and res.iou_delta_p95 == pytest.approx(0.0, abs=1e-9)
    assert res.to_dict()["nms"]["iou_threshold"] == 0.5


def test_detection_shifted_boxes_fail_gate():
    rng = np.random.default_rng(5)
    out = _det_outputs(rng)
    moved = {"boxes": out["boxes"] + 3.0, "scores": out["scores"]}
    res = detection_agreement(out, moved)
    assert not res.passed
    assert res.map_0_5_0_95_delta < -0.01 and res.iou_delta_p95 > 0.01
    assert "mAP@0.5:0.95" in res.reason


def test_detection_single_output_layout_and_ground_truth():
    gt = [Detections(np.array([[0, 0, 10, 10]], float), np.array([1.0]), np.array([0]))]
    raw = np.array([[[0, 0, 10, 10, 0.9, 0.1], [50, 50, 60, 60, 0.8, 0.1]]], dtype=np.float32)
    res = detection_agreement({"det": raw}, {"det": raw.copy()}, ground_truth=gt)
    assert res.ground_truth == "given" and res.map_0_5_reference == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="expected"):
        detection_agreement({"det": raw[..., :4]}, {"det": raw[..., :4]})


def test_map_with_false_positive_below_one():
    gts = [Detections(np.array([[0, 0, 10, 10]], float), np.ones(1), np.zeros(1, np.int64))]
    dets = [
        Detections(
            np.array([[50, 50, 60, 60], [0, 0, 10, 10]], float), np.array([0.9, 0.5]), np.zeros(2, np.int64)
        )
    ]
    assert 0.4 < mean_average_precision(dets, gts) < 0.6

"""detect: ONNX Runtime decisions on every window, P/R/F1 vs BGL alert labels next to PyTorch's, no torch needed."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from onnxship._errors import ConfigError
from onnxship.recipes.deeplog import DetectConfig, prf, top_g_decisions


def test_prf():
    m = prf(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool))
    assert (m["precision"], m["recall"], m["f1"], m["tp"], m["fp"], m["fn"], m["tn"]) == (
        0.5,
        0.5,
        0.5,
        1,
        1,
        1,
        1,
    )
    assert prf(np.zeros(3, bool), np.zeros(3, bool))["f1"] == 0.0


def test_top_g_ties_rank_lower_ids_first():
    logits = np.array([[1.0, 3.0, 3.0, 0.0]], dtype=np.float32)
    anomalous, top = top_g_decisions(logits, np.array([2]), 2)
    assert top.tolist() == [[1, 2]] and not anomalous[0]
    assert top_g_decisions(logits, np.array([0]), 2)[0][0]


def test_detect_on_bgl(bgl_pipeline):
    d, b = bgl_pipeline.detect, bgl_pipeline.build
    assert d.windows == d.scored == b.windows and d.unknown == 0 and d.session == "stream"
    assert d.top_g == 9 and d.seq_len == 10 and d.providers == ["CPUExecutionProvider"]
    out = pd.read_parquet(d.out)
    assert len(out) == d.windows and int(out["anomaly"].sum()) == d.anomalies
    assert set(out["reason"]) <= {"normal", "not_in_top_g"}
    m = d.metrics
    assert m["tp"] + m["fn"] == b.alert_windows and m["samples"] == d.windows
    assert m["tp"] + m["fp"] == d.anomalies
    assert 0.0 < m["recall"] <= 1.0 and 0.0 < m["precision"] <= 1.0
    # PyTorch on the same windows: identical decisions, identical scores
    t = d.torch
    assert t["agreement"]["decision_agreement"] == 1.0 and t["agreement"]["samples"] == d.scored
    assert t["anomalies"] == d.anomalies and t["metrics"] == m


def test_detect_matches_the_shipped_check(bgl_pipeline):
    # the same windows, the same g: detect's anomaly rate is ship's reference anomaly rate
    c = bgl_pipeline.ship.sequence_check
    assert bgl_pipeline.detect.anomalies == round(c["anomaly_rate_candidate"] * c["samples"])


def test_golden_windows_file(bgl_pipeline):
    g = json.loads(bgl_pipeline.detect.golden.read_text())
    vocab = json.loads(bgl_pipeline.build.vocab.read_text())
    assert g["top_g"] == 9 and g["seq_len"] == 10 and len(g["windows"]) == 32
    assert sum(w["anomaly"] for w in g["windows"]) == 16  # half anomalous when there are enough
    for w in g["windows"]:
        assert [vocab[t] for t in w["templates"]] == w["ids"] and vocab[w["next_template"]] == w["next"]
        assert (w["next"] not in w["top_g"]) == w["anomaly"]


def test_detect_imports_no_torch(bgl_pipeline):
    code = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from onnxship.recipes.deeplog import DetectConfig, detect_anomalies\n"
        f"r = detect_anomalies(DetectConfig(Path({str(bgl_pipeline.work / 'releases/deeplog/latest')!r}), "
        f"Path({str(bgl_pipeline.work / 'parsed.parquet')!r}), compare_torch='never'))\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'anomalies': r.anomalies}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res == {"torch": False, "anomalies": bgl_pipeline.detect.anomalies}


def test_unknown_templates_are_flagged(bgl_pipeline, tmp_path):
    from onnxship.recipes.deeplog import detect_anomalies

    df = pd.read_parquet(bgl_pipeline.work / "parsed.parquet")
    df.loc[df.index[:3], "template"] = "a template the model never saw <*>"
    parsed = tmp_path / "parsed.parquet"
    df.to_parquet(parsed, index=False)
    r = detect_anomalies(
        DetectConfig(
            bgl_pipeline.work / "releases/deeplog/latest",
            parsed,
            compare_torch="never",
            out=tmp_path / "d.parquet",
        )
    )
    assert r.unknown > 0 and r.scored + r.unknown == r.windows
    out = pd.read_parquet(tmp_path / "d.parquet")
    assert out.loc[out["reason"] == "unknown_template", "anomaly"].all()
    assert (out["reason"] == "unknown_template").sum() == r.unknown
    assert any("vocabulary does not know" in n for n in r.notes)


def test_not_a_release(bgl_pipeline, tmp_path):
    from onnxship._errors import PackagingError
    from onnxship.recipes.deeplog import detect_anomalies

    with pytest.raises(PackagingError, match="not a release"):
        detect_anomalies(DetectConfig(tmp_path, bgl_pipeline.work / "parsed.parquet"))
    with pytest.raises(ConfigError, match="--top-g 0"):
        DetectConfig(tmp_path, tmp_path, top_g=0)


def test_session_metrics_by_time(bgl_pipeline):
    from onnxship.recipes.deeplog import detect_anomalies

    # one-day sessions: a session is anomalous when any of its windows is flagged / holds an alert
    r = detect_anomalies(
        DetectConfig(
            bgl_pipeline.work / "releases/deeplog/latest",
            bgl_pipeline.work / "parsed.parquet",
            session="time",
            time_window=86400,
            compare_torch="never",
            out=bgl_pipeline.work / "by-day.parquet",
        )
    )
    assert r.session == "time" and bgl_pipeline.detect.session_metrics is None
    out = pd.read_parquet(bgl_pipeline.work / "by-day.parquet")
    per = out.groupby("session")[["anomaly", "window_alert"]].any()
    m = r.session_metrics
    assert m["samples"] == len(per) == out["session"].nunique()
    assert m["tp"] == int((per["anomaly"] & per["window_alert"]).sum())
    assert m["tp"] + m["fn"] == int(per["window_alert"].sum())

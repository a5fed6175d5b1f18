"""ship: a release through onnxship.ship with the vocab asset validated against the model, 100% real-window
top-g agreement, the user's metadata; id-keyed and wrong-size vocabularies refused before anything is written."""

from __future__ import annotations

import json

import pytest

from onnxship._errors import PackagingError
from onnxship.package import read_release
from onnxship.recipes.deeplog import DeepLogShipConfig, ship_deeplog


def test_release_bundle(bgl_pipeline):
    s, b = bgl_pipeline.ship, bgl_pipeline.build
    release = read_release(bgl_pipeline.work / "releases/deeplog/latest")
    assert release.version == s.release.version and s.latest_moved
    meta = release.meta
    assert meta["model_type"] == "deeplog" and meta["vocab_size"] == b.vocab_size and meta["seq_len"] == 10
    assert meta["top_g"] == 9
    # the user's "notes" travel in the ONNX file's metadata_props (the sidecar's "notes" holds the export notes)
    import onnx

    props = {
        p.key: p.value for p in onnx.load(str(release.model_path), load_external_data=False).metadata_props
    }
    assert "dynamic sequence lengths" in props["notes"]
    assert (props["model_type"], props["vocab_size"], props["seq_len"]) == (
        "deeplog",
        str(b.vocab_size),
        "10",
    )
    assert meta["inputs"][0]["spec"] == f"input_sequence:batch=2..64 x seq=10..64:int64:0..{b.vocab_size}"
    assert meta["output_names"] == ["predictions"]
    vocab = json.loads(release.asset("vocab").read_text())
    assert vocab == json.loads(b.vocab.read_text())
    portable = json.loads((release.path / "assets/vocab.portable.json").read_text())
    assert portable == {str(i): t for t, i in vocab.items()} and list(portable) == [
        str(i) for i in range(len(vocab))
    ]


def test_real_window_top_g_agreement_is_total(bgl_pipeline):
    c = bgl_pipeline.ship.sequence_check
    assert c["samples"] == bgl_pipeline.build.windows  # every real window, not a sample
    assert c["labels_source"] == "given" and c["top_g"] == 9
    assert c["decision_agreement"] == 1.0 and c["decision_disagreement_count"] == 0
    report = json.loads((bgl_pipeline.ship.release.path / "report.json").read_text())
    assert report["task_metrics"]["decision_agreement"] == 1.0


def _releases(root):
    return sorted(p.name for p in (root / "deeplog").iterdir()) if (root / "deeplog").exists() else []


def test_id_keyed_vocab_is_refused(bgl_pipeline, tmp_path):
    vocab = json.loads(bgl_pipeline.build.vocab.read_text())
    bad = tmp_path / "vocab.json"
    bad.write_text(json.dumps({str(i + 1): i for i in range(len(vocab))}))  # keyed by template_id: refused
    with pytest.raises(PackagingError, match="keys are ids") as exc:
        ship_deeplog(
            DeepLogShipConfig(
                bgl_pipeline.train.checkpoint, bad, releases=tmp_path / "releases", strategy="torchscript"
            )
        )
    assert "template" in exc.value.hint
    assert _releases(tmp_path / "releases") == []


def test_vocab_size_mismatch_is_refused(bgl_pipeline, tmp_path):
    vocab = json.loads(bgl_pipeline.build.vocab.read_text())
    last = max(vocab, key=vocab.get)
    del vocab[last]
    bad = tmp_path / "vocab.json"
    bad.write_text(json.dumps(vocab))
    with pytest.raises(PackagingError, match=f"{len(vocab)} entries but the model") as exc:
        ship_deeplog(
            DeepLogShipConfig(
                bgl_pipeline.train.checkpoint, bad, releases=tmp_path / "releases", strategy="torchscript"
            )
        )
    assert "trained with" in exc.value.hint
    assert _releases(tmp_path / "releases") == []


def test_same_size_other_vocab_is_refused(bgl_pipeline, tmp_path):
    vocab = json.loads(bgl_pipeline.build.vocab.read_text())
    swapped = {t: (len(vocab) - 1 - i) for t, i in vocab.items()}  # same templates, other ids
    bad = tmp_path / "vocab.json"
    bad.write_text(json.dumps(swapped))
    with pytest.raises(PackagingError, match="not the templates/ids it was trained with"):
        ship_deeplog(
            DeepLogShipConfig(
                bgl_pipeline.train.checkpoint, bad, releases=tmp_path / "releases", strategy="torchscript"
            )
        )


def test_other_top_g_runs_its_own_sequence_check(bgl_pipeline):
    # ship's report was computed at g=9; another g goes through onnxship.verify with a 0% disagreement gate
    import torch

    from onnxship.recipes.deeplog import default_model_spec
    from onnxship.recipes.deeplog._ship import _sequence_check
    from onnxship.spec import parse_model_spec

    module = parse_model_spec(default_model_spec(), checkpoint=bgl_pipeline.train.checkpoint).load().model
    cfg = DeepLogShipConfig(bgl_pipeline.train.checkpoint, bgl_pipeline.build.vocab, top_g=5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        check = _sequence_check(cfg, bgl_pipeline.build.sequences, bgl_pipeline.ship.release, module)
    finally:
        torch.set_num_threads(threads)
    assert check["source"] == "onnxship.verify" and check["top_g"] == 5
    assert check["samples"] == bgl_pipeline.build.windows and check["decision_agreement"] == 1.0
    assert check["gate"]["decision_disagreement"] == 0.0
    # a smaller g flags at least as many windows as g=9 did
    assert check["anomaly_rate_reference"] >= bgl_pipeline.ship.sequence_check["anomaly_rate_reference"]

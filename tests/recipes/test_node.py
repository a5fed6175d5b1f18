"""A second consumer outside Python: onnxruntime-node loads the release's .onnx + portable vocab + meta and
reproduces the Python anomaly decisions on the golden windows (examples/deeplog/node/detect.js)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

NODE_DIR = Path(__file__).resolve().parents[2] / "examples/deeplog/node"


def _run_node(node: str, release, golden) -> subprocess.CompletedProcess:
    return subprocess.run(
        [node, str(NODE_DIR / "detect.js"), str(release), str(golden)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=NODE_DIR,
    )


def test_node_reproduces_python_decisions(node_ort, bgl_pipeline):
    release = bgl_pipeline.ship.release.path
    golden_path = bgl_pipeline.detect.golden
    out = _run_node(node_ort, release, golden_path)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    golden = json.loads(golden_path.read_text())
    assert res["runtime"] == "onnxruntime-node 1.30.0" and res["release"] == bgl_pipeline.ship.release.version
    assert res["windows"] == len(golden["windows"]) == 32
    # the template strings mapped through the portable vocab give the Python ids
    assert res["ids_agree"] == res["windows"]
    assert res["decisions"] == [w["anomaly"] for w in golden["windows"]]
    assert res["agree"] == res["windows"] and res["disagree"] == 0
    assert res["top_g_set_agree"] == res["windows"]
    assert 0 < res["anomalies"] < res["windows"]  # both kinds of decisions are exercised


def test_node_needs_the_portable_vocab(node_ort, bgl_pipeline, tmp_path):
    import shutil

    copy = tmp_path / "release"
    shutil.copytree(bgl_pipeline.ship.release.path, copy)
    (copy / "assets/vocab.portable.json").unlink()
    out = _run_node(node_ort, copy, bgl_pipeline.detect.golden)
    assert out.returncode == 1 and "portable vocab (ship with --portable)" in out.stderr


def test_node_refuses_a_vocab_that_does_not_fit(node_ort, bgl_pipeline, tmp_path):
    import shutil

    copy = tmp_path / "release"
    shutil.copytree(bgl_pipeline.ship.release.path, copy)
    portable = json.loads((copy / "assets/vocab.portable.json").read_text())
    portable.pop(str(len(portable) - 1))
    (copy / "assets/vocab.portable.json").write_text(json.dumps(portable))
    out = _run_node(node_ort, copy, bgl_pipeline.detect.golden)
    assert out.returncode == 1 and "meta.vocab_size" in out.stderr

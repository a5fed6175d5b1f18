"""The dynamo exporter's real hazards, caught (these tests run the dynamo exporter: a few seconds each)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import onnxship
from onnxship import ExportError
from onnxship.testing import DataDependentBranch, GRUTagger, ShapeArithmetic
from onnxship.verify import OnnxRuntimeRunner

pytestmark = pytest.mark.slow


def test_gru_tagger_declared_output_dim_is_fixed(tmp_path):
    torch.manual_seed(0)
    model = GRUTagger()
    result = onnxship.export(
        model,
        inputs=["tokens:batch=2 x seq=10:int64"],
        out=tmp_path,
        name="gru",
        strategy="dynamo",
        opsets=(18,),
    )
    assert result.strategy == "dynamo"
    # the exporter declared the seq dim of the output static (10); the sweep saw it vary
    fix = next(f for f in result.dim_fixes if f["output"] == "output_0" and f["axis"] == 1)
    assert fix["declared"] == 10 and fix["fixed"] == "seq"
    assert onnxship.inspect_model(result.path).outputs[0]["shape"] == ["batch", "seq", 5]
    assert any(d.code == "ONX142" for d in result.diagnostics)
    x = np.random.default_rng(0).integers(0, 20, size=(3, 17)).astype(np.int64)
    got = OnnxRuntimeRunner(result.path).infer({"tokens": x})["output_0"]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(torch.from_numpy(x)).numpy(), atol=1e-5, rtol=1e-4)


def test_auto_rejects_silent_specialisation_and_frozen_trace(tmp_path):
    with pytest.raises(ExportError) as info:
        onnxship.export(
            ShapeArithmetic(), inputs=["x:batch=2 x seq=8:float32"], out=tmp_path, name="arith", opsets=(18,)
        )
    dyn, ts = info.value.candidates
    assert (dyn.strategy, dyn.outcome) == ("dynamo", "rejected")
    assert "dim 'seq'" in dyn.reason and "exported static" in dyn.reason
    assert any(d.code == "ONX109" for d in dyn.diagnostics)
    assert (ts.strategy, ts.outcome) == ("torchscript", "rejected")
    assert "parity check failed" in ts.reason
    assert list(tmp_path.iterdir()) == []


def test_auto_data_dependent_branch(tmp_path):
    with pytest.raises(ExportError) as info:
        onnxship.export(
            DataDependentBranch(), inputs=["x:batch=2 x 4:float32"], out=tmp_path, name="dd", opsets=(18,)
        )
    dyn = info.value.candidates[0]
    assert dyn.outcome == "failed" and "data-dependent" in dyn.reason
    assert any(d.code == "ONX108" and d.severity == "error" for d in dyn.diagnostics)
    assert info.value.candidates[1].outcome == "rejected"


def test_auto_remembers_a_dynamo_failure_for_the_same_code(tmp_path):
    spec = ["x:batch=2 x seq=8:float32"]
    with pytest.raises(ExportError) as first:
        onnxship.export(ShapeArithmetic(), inputs=spec, out=tmp_path / "a", name="arith", opsets=(18,))
    assert first.value.candidates[0].outcome == "rejected"
    result = onnxship.export(
        ShapeArithmetic(), inputs=spec, out=tmp_path / "b", name="arith", opsets=(18,), allow_static=True
    )
    dyn = result.candidates[0]
    assert (dyn.strategy, dyn.outcome) == ("dynamo", "skipped")
    assert dyn.reason.startswith("cached: rejected") and "--no-cache" in dyn.reason
    assert dyn.export_seconds == 0
    again = onnxship.export(
        ShapeArithmetic(),
        inputs=spec,
        out=tmp_path / "c",
        name="arith",
        opsets=(18,),
        allow_static=True,
        use_cache=False,
    )
    assert again.candidates[0].outcome == "rejected"  # --no-cache tries dynamo again
    other = onnxship.export(
        ShapeArithmetic(),
        inputs=["x:batch=2 x seq=8:float32:0..1"],
        out=tmp_path / "d",
        name="arith",
        opsets=(18,),
        allow_static=True,
    )
    assert other.candidates[0].outcome == "rejected"  # other specs: another fingerprint

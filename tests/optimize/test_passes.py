"""Passes: each does one thing to a ModelProto; a sequence names the pass that failed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxship._errors import OptimizeError
from onnxship.optimize import Fp16Pass, Int8DynamicPass, Int8StaticPass, PassSequence, SimplifyPass
from onnxship.runtime import SessionConfig, create_session

CPU = SessionConfig(providers=("cpu",), intra_op_threads=1)


def _load(result) -> onnx.ModelProto:
    return onnx.load(str(result.path))


def _run(model: onnx.ModelProto, feeds):
    return create_session(model.SerializeToString(), CPU).run(None, feeds)[0]


FEEDS = {"input_sequence": np.random.default_rng(0).integers(0, 10, (4, 12)).astype(np.int64)}


def test_simplify_shrinks_graph_and_keeps_metadata(deeplog_export):
    _, result = deeplog_export
    base = _load(result)
    res = SimplifyPass()(base)
    assert res.modified and len(res.model.graph.node) < len(base.graph.node)
    assert {p.key for p in base.metadata_props} <= {p.key for p in res.model.metadata_props}
    np.testing.assert_allclose(_run(res.model, FEEDS), _run(base, FEEDS), atol=1e-5)


@pytest.mark.parametrize("keep_io", [True, False])
def test_fp16_io_types(outlier_export, keep_io):
    _, result = outlier_export
    res = Fp16Pass(keep_io_types=keep_io)(_load(result))
    elem = res.model.graph.input[0].type.tensor_type.elem_type
    assert elem == (onnx.TensorProto.FLOAT if keep_io else onnx.TensorProto.FLOAT16)
    assert res.model.graph.output[0].type.tensor_type.elem_type == elem
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in res.model.graph.initializer)


def test_int8_dynamic_quantizes_lstm_and_shrinks(deeplog_export):
    _, result = deeplog_export
    base = _load(result)
    res = Int8DynamicPass()(base)
    ops = {n.op_type for n in res.model.graph.node}
    assert "DynamicQuantizeLSTM" in ops
    assert res.model.ByteSize() < base.ByteSize() * 0.75  # tiny model: metadata is a good part of the bytes
    got, ref = _run(res.model, FEEDS), _run(base, FEEDS)
    assert np.abs(got - ref).max() < 0.05


def test_int8_dynamic_exclusion_by_name(outlier_export):
    _, result = outlier_export
    prepared = Int8DynamicPass.prepare(_load(result))
    names = [n.name for n in prepared.graph.node if n.op_type == "MatMul"]
    assert len(names) == 2  # Gemm split up front so names survive quantization
    res = Int8DynamicPass(nodes_to_exclude=[names[0]])(prepared)
    kept = [n.name for n in res.model.graph.node if n.op_type == "MatMul"]
    assert kept == [names[0]]


def test_int8_static_with_calibration(outlier_export):
    _, result = outlier_export
    rng = np.random.default_rng(0)
    batches = [{"x": rng.standard_normal((8, 32)).astype(np.float32)} for _ in range(4)]
    res = Int8StaticPass(batches)(_load(result))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in res.model.graph.node}
    assert "calibrated on 4 batches" in res.notes[0]


def test_sequence_names_the_failing_pass(outlier_export):
    _, result = outlier_export
    wrong = [{"not_an_input": np.zeros((8, 32), np.float32)}]
    seq = PassSequence([SimplifyPass(), Int8StaticPass(wrong)])
    with pytest.raises(OptimizeError, match=r"pass 2/2 'int8-static' failed"):
        seq(_load(result))


def test_static_without_calibration_is_refused():
    with pytest.raises(OptimizeError, match="calibration"):
        Int8StaticPass([])


def test_simplify_lets_the_quantizer_reach_weights_shared_behind_identity(tmp_path):
    """TorchScript dedups identical layer weights behind Identity nodes; the quantizer skips those MatMuls."""
    import torch

    import onnxship
    from onnxship.testing import SmallTransformer

    torch.manual_seed(0)
    res = onnxship.export(
        SmallTransformer(layers=2),
        inputs=["tokens:batch=2..8 x 16:int64:0..100"],
        out=tmp_path,
        name="tf",
        strategy="torchscript",
    )
    raw = _load(res)
    assert any(n.op_type == "Identity" for n in raw.graph.node)

    def quantized(m: onnx.ModelProto) -> int:
        return sum(n.op_type == "MatMulInteger" for n in Int8DynamicPass()(m).model.graph.node)

    assert quantized(SimplifyPass()(raw).model) > quantized(raw)

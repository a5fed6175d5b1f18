"""model_specs(): an exported model's own input specs, else what the graph declares."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from onnxship._errors import CheckError
from onnxship.runtime import model_specs


def _model(elem: int, dims: list) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", elem, dims)],
        [helper.make_tensor_value_info("y", elem, dims)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_graph_dims_become_specs():
    (spec,) = model_specs(_model(TensorProto.INT64, ["batch", None, 7]))
    assert spec.dtype == "int64"
    assert [(d.name, d.value) for d in spec.dims] == [("batch", 2), ("x_dim1", 2), (None, 7)]


def test_exported_metadata_wins(deeplog_export):
    _, result = deeplog_export
    (spec,) = model_specs(result.path)
    assert str(spec).startswith("input_sequence:batch=2..16 x seq=10..32:int64")


def test_unfeedable_input_type():
    with pytest.raises(CheckError, match="element type"):
        model_specs(_model(TensorProto.STRING, [2]))

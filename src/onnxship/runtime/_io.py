"""What an ONNX file expects as input: the specs an export embedded (metadata ``inputs``), else the graph's own.

Needs onnx and numpy only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxship._errors import CheckError
from onnxship.spec._inputs import DimSpec, TensorSpec

if TYPE_CHECKING:
    import onnx

__all__ = ["model_metadata", "model_specs"]

# ONNX TensorProto element types -> TensorSpec dtype names.
_ELEM = {
    1: "float32",
    2: "uint8",
    3: "int8",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    16: "bfloat16",
}


def model_metadata(model: onnx.ModelProto) -> dict[str, Any]:
    """metadata_props with JSON values decoded."""
    from onnxship.onnxfile import read_metadata

    return read_metadata(model)


def model_specs(model: onnx.ModelProto | str | Path) -> list[TensorSpec]:
    """Input specs of a model: the exported ``inputs`` metadata, or the graph inputs (symbolic dims stay dynamic,
    sample value 2; unnamed dynamic dims are named ``<input>_dim<axis>``).

    Raises:
        CheckError: an input has an element type onnxship cannot generate data for.
    """
    if not hasattr(model, "graph"):
        from onnxship.inspect import load_onnx_checked

        model = load_onnx_checked(model)
    meta = model_metadata(model)
    records = meta.get("inputs")
    if isinstance(records, list) and records:
        return [TensorSpec.from_dict(r) for r in records]
    inits = {i.name for i in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        t = vi.type.tensor_type
        dtype = _ELEM.get(t.elem_type)
        if dtype is None:
            raise CheckError(
                f"input {vi.name!r} has ONNX element type {t.elem_type}, which onnxship cannot feed",
                hint=f"supported: {sorted(set(_ELEM.values()))}",
            )
        dims = []
        for axis, d in enumerate(t.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(DimSpec(value=int(d.dim_value)))
            else:
                dims.append(DimSpec(value=2, name=d.dim_param or f"{vi.name}_dim{axis}"))
        specs.append(TensorSpec(name=vi.name, dims=tuple(dims), dtype=dtype))
    return specs

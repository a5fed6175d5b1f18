"""ONNX file handling after an exporter ran: declared dims, checks, metadata, external data, atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from onnxship._errors import CheckError
from onnxship._util import atomic_write
from onnxship.spec._inputs import TensorSpec

__all__ = [
    "ONNX_DTYPES",
    "DimFix",
    "declared_io",
    "all_tensors",
    "external_data_files",
    "external_data_locations",
    "file_sha256",
    "finalize_model",
    "decode_meta_value",
    "encode_meta_value",
    "fix_output_dims",
    "read_metadata",
    "set_metadata",
    "specialized_dims",
]

PROTO_LIMIT = 2**31 - 2**24  # stay clear of protobuf's 2 GiB limit

ONNX_DTYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.BOOL: "bool",
    onnx.TensorProto.STRING: "string",
    onnx.TensorProto.UINT16: "uint16",
    onnx.TensorProto.UINT32: "uint32",
    onnx.TensorProto.UINT64: "uint64",
}


@dataclass
class DimFix:
    """A declared output dim corrected to match what the sweep observed."""

    output: str
    axis: int
    declared: str | int
    fixed: str
    observed: list[int]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _dims(value_info: onnx.ValueInfoProto) -> list[str | int | None]:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return []
    return [
        d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else None)
        for d in t.shape.dim
    ]


def declared_io(model: onnx.ModelProto) -> dict[str, list[dict[str, Any]]]:
    """Graph inputs (without initializers) and outputs with their declared dims and dtypes."""
    inits = {i.name for i in model.graph.initializer}

    def one(v: onnx.ValueInfoProto) -> dict[str, Any]:
        return {
            "name": v.name,
            "dtype": ONNX_DTYPES.get(v.type.tensor_type.elem_type, "unknown"),
            "shape": _dims(v),
        }

    return {
        "inputs": [one(v) for v in model.graph.input if v.name not in inits],
        "outputs": [one(v) for v in model.graph.output],
    }


def specialized_dims(model: onnx.ModelProto, specs: list[TensorSpec]) -> list[str]:
    """Requested dynamic dims that the exported graph declares static (dynamo's silent specialization)."""
    declared = {v["name"]: v["shape"] for v in declared_io(model)["inputs"]}
    problems = []
    for spec in specs:
        shape = declared.get(spec.name)
        if shape is None:
            problems.append(f"input {spec.name!r} is missing from the graph (inputs: {sorted(declared)})")
            continue
        if len(shape) != len(spec.dims):
            problems.append(
                f"input {spec.name!r} has rank {len(shape)} in the graph, expected {len(spec.dims)}"
            )
            continue
        for axis, d in enumerate(spec.dims):
            if d.name and isinstance(shape[axis], int):
                problems.append(
                    f"dim {d.name!r} (axis {axis} of {spec.name!r}) was exported static = {shape[axis]}"
                )
    return problems


def fix_output_dims(
    model: onnx.ModelProto,
    observed: dict[str, list[list[int]]],
    specs: list[TensorSpec],
    points: list[dict[str, int]],
) -> list[DimFix]:
    """Make declared output dims symbolic where the sweep saw them vary; name them after the input dim they follow.

    ``observed[output]`` holds the reference output shape at each point of ``points`` (same order).
    """
    fixes: list[DimFix] = []
    dim_names = sorted({d.name for s in specs for d in s.dims if d.name})
    for out in model.graph.output:
        shapes = observed.get(out.name)
        if not shapes or not out.type.tensor_type.HasField("shape"):
            continue
        dims = out.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            values = [s[axis] for s in shapes if len(s) > axis]
            varies = len(set(values)) > 1
            follows = [
                n
                for n in dim_names
                if all(p.get(n) == v for p, v in zip(points, values, strict=False))
                and len(points) == len(values)
            ]
            target = follows[0] if (varies and follows) else (f"{out.name}_dim{axis}" if varies else None)
            if target is None:
                continue
            declared: str | int = dim.dim_param if dim.dim_param else dim.dim_value
            if dim.dim_param and (dim.dim_param == target or not follows):
                continue  # already symbolic with a good name
            dim.Clear()
            dim.dim_param = target
            fixes.append(DimFix(out.name, axis, declared, target, values))
    return fixes


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):
            yield attr.sparse_tensor.values
            yield attr.sparse_tensor.indices
        for sparse in attr.sparse_tensors:
            yield sparse.values
            yield sparse.indices
        if attr.HasField("g"):  # If branches, Loop and Scan bodies
            yield from _graph_tensors(attr.g)
        for sub in attr.graphs:
            yield from _graph_tensors(sub)


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a model holds: initializers (dense and sparse) and tensor attributes of the main graph, of every
    subgraph (If/Loop/Scan bodies, at any depth) and of every local function body."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def external_data_locations(model: onnx.ModelProto, what: str = "model") -> list[tuple[str, str]]:
    """``(tensor name, location)`` of every tensor stored outside the file (see :func:`all_tensors`), each location
    refused unless it is a relative path that stays in the model's folder (CVE-2024-27318/27319).

    Raises:
        CheckError: a location is missing, absolute or climbs out of the folder with ``..``.
    """
    found: list[tuple[str, str]] = []
    for t in all_tensors(model):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        loc = next((e.value for e in t.external_data if e.key == "location"), None)
        if not loc:
            raise CheckError(f"{what}: tensor {t.name!r} has external data without a location")
        if (
            os.path.isabs(loc)
            or loc.startswith(("/", "\\"))
            or "\x00" in loc
            or ".." in Path(loc.replace("\\", "/")).parts
            or (len(loc) > 1 and loc[1] == ":")
        ):
            raise CheckError(
                f"{what}: external data location {loc!r} leaves the model folder (tensor {t.name!r})",
                hint="refusing to open it; re-export the model or fix the location to a file beside it",
            )
        found.append((t.name, loc))
    return found


def external_data_files(path: Path, model: onnx.ModelProto | None = None) -> list[Path]:
    """External data files a model references (main graph, subgraphs and function bodies), refusing locations that
    leave its folder, also through symlinks (CVE-2024-27318/27319)."""
    model = model if model is not None else onnx.load(str(path), load_external_data=False)
    base = path.resolve().parent
    found: list[Path] = []
    for _, loc in external_data_locations(model, path.name):
        target = (base / loc).resolve()
        if base not in target.parents and target != base:
            raise CheckError(
                f"{path.name}: external data location {loc!r} resolves outside the model folder",
                hint="symlinks out of the model folder are refused",
            )
        if target not in found:
            found.append(target)
    return found


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def encode_meta_value(value: Any) -> str:
    """A metadata_props value: strings stay plain text unless they would read back as JSON ("2381546", "true"),
    then they are JSON-quoted; everything else is JSON. decode_meta_value() inverts it exactly."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return value
        return json.dumps(value)
    return json.dumps(value, sort_keys=True, default=str)


def decode_meta_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def read_metadata(model: onnx.ModelProto) -> dict[str, Any]:
    """metadata_props as Python values."""
    return {p.key: decode_meta_value(p.value) for p in model.metadata_props}


def set_metadata(model: onnx.ModelProto, values: dict[str, Any], *, replace: bool = False) -> None:
    """Write ``values`` into metadata_props (merged with what is there unless ``replace``), keys kept in order."""
    props = {} if replace else {p.key: p.value for p in model.metadata_props}
    props.update({k: encode_meta_value(v) for k, v in values.items()})
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def finalize_model(
    candidate: Path,
    dest: Path,
    *,
    metadata: dict[str, Any],
    observed: dict[str, list[list[int]]] | None = None,
    specs: list[TensorSpec] | None = None,
    points: list[dict[str, int]] | None = None,
) -> tuple[list[DimFix], list[str]]:
    """Write the accepted candidate to ``dest`` with metadata embedded, dims fixed, checked, atomically.

    Weights go inline below ~2 GB and to ``<dest>.data`` above it; stray empty ``.data`` files are not copied.
    Returns the dim fixes and the shape-inference notes worth reporting.
    """
    model = onnx.load(str(candidate), load_external_data=True)
    fixes = fix_output_dims(model, observed or {}, specs or [], points or []) if observed else []
    if isinstance(metadata.get("dynamic_axes"), dict) and not metadata.get("static"):
        for out in model.graph.output:
            axes = {str(i): d.dim_param for i, d in enumerate(out.type.tensor_type.shape.dim) if d.dim_param}
            if axes:
                metadata["dynamic_axes"][out.name] = axes
    set_metadata(model, metadata, replace=True)
    notes: list[str] = []
    try:
        large = model.ByteSize() > PROTO_LIMIT
    except Exception:
        large = True
    if not large:
        try:
            onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        except Exception as exc:
            notes.append(f"onnx shape inference: {str(exc).splitlines()[0][:300]}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    data_name = dest.name + ".data"

    def write(tmp: str) -> None:
        if large:
            onnx.save_model(
                model,
                tmp,
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=1024,
            )
        else:
            onnx.save_model(model, tmp)
        try:
            onnx.checker.check_model(tmp, full_check=True)
        except Exception as exc:
            raise CheckError(
                f"onnx.checker rejected the exported model: {str(exc).splitlines()[0][:300]}",
                hint="this is an exporter bug; try --strategy torchscript or another --opset",
            ) from exc

    atomic_write(dest, write)
    stale = dest.parent / data_name
    if not large and stale.exists():
        stale.unlink()  # a previous export's data file would be misleading
    return fixes, notes

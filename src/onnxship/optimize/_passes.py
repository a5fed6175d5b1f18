"""Optimization passes: ``pass_(model) -> PassResult(model, modified)``, run in a sequence that names the failing pass.

Each pass takes and returns an ``onnx.ModelProto``; onnxruntime's quantizers work on files, so those passes go
through a private temp folder. DO NOT import onnxruntime or onnxslim at module level.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from onnxship._errors import MissingDependencyError, OnnxshipError, OptimizeError, require
from onnxship._util import scratch_dir

if TYPE_CHECKING:
    import numpy as np
    import onnx

__all__ = [
    "QUANTIZABLE_OP_TYPES",
    "Fp16Pass",
    "Int8DynamicPass",
    "Int8StaticPass",
    "Pass",
    "PassResult",
    "PassSequence",
    "SimplifyPass",
    "name_unnamed_nodes",
]

# Ops that onnxruntime's quantizers turn into integer kernels (the candidates for sensitivity analysis).
QUANTIZABLE_OP_TYPES = (
    "MatMul",
    "Gemm",
    "Conv",
    "ConvTranspose",
    "LSTM",
    "GRU",
    "Attention",
    "Gather",
    "EmbedLayerNormalization",
)


@dataclass
class PassResult:
    """What a pass returns: the (new) model and whether it changed anything."""

    model: onnx.ModelProto
    modified: bool
    notes: list[str] = field(default_factory=list)  # what the pass did, for the report


class Pass:
    """Base class: subclasses set ``name`` and implement :meth:`call`."""

    name = "pass"

    def call(self, model: onnx.ModelProto) -> PassResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, model: onnx.ModelProto) -> PassResult:
        return self.call(model)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PassSequence(Pass):
    """Run passes in order; an exception in one becomes an OptimizeError that names it."""

    name = "sequence"

    def __init__(self, passes: Sequence[Pass]) -> None:
        self.passes = list(passes)

    def call(self, model: onnx.ModelProto) -> PassResult:
        modified = False
        notes: list[str] = []
        for i, p in enumerate(self.passes):
            try:
                res = p(model)
            except MissingDependencyError:
                raise
            except OnnxshipError as exc:
                raise OptimizeError(
                    f"pass {i + 1}/{len(self.passes)} '{p.name}' failed: {exc.message}", hint=exc.hint
                ) from exc
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                raise OptimizeError(
                    f"pass {i + 1}/{len(self.passes)} '{p.name}' failed: {type(exc).__name__}: {first}",
                    hint="run without this pass, or report the model to onnxship",
                ) from exc
            model = res.model
            modified = modified or res.modified
            notes.extend(f"{p.name}: {n}" for n in res.notes)
        return PassResult(model, modified, notes)


def name_unnamed_nodes(model: onnx.ModelProto) -> int:
    """Give every unnamed node a unique name (``<op>_<index>``) so nodes can be excluded by name; returns how many."""
    used = {n.name for n in model.graph.node if n.name}
    count = 0
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)
            count += 1
    return count


def _copy_metadata(src: onnx.ModelProto, dst: onnx.ModelProto) -> None:
    have = {p.key for p in dst.metadata_props}
    for p in src.metadata_props:
        if p.key not in have:
            dst.metadata_props.add(key=p.key, value=p.value)


class SimplifyPass(Pass):
    """Constant folding and graph cleanup with onnxslim."""

    name = "simplify"

    def call(self, model: onnx.ModelProto) -> PassResult:
        require("onnxslim", "optimize")
        import onnxslim

        before = len(model.graph.node)
        out = onnxslim.slim(model)
        if out is None:
            raise OptimizeError("onnxslim returned no model")
        _copy_metadata(model, out)
        after = len(out.graph.node)
        return PassResult(out, after != before, [f"{before} -> {after} nodes"])


class Fp16Pass(Pass):
    """Float32 weights and activations to float16 (onnxruntime.transformers.float16)."""

    name = "fp16"

    def __init__(self, keep_io_types: bool = True, op_block_list: Iterable[str] | None = None) -> None:
        self.keep_io_types = keep_io_types  # keep float32 graph inputs/outputs (Casts inside the graph)
        self.op_block_list = list(op_block_list) if op_block_list else None  # ops kept in float32

    def call(self, model: onnx.ModelProto) -> PassResult:
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

        blocked = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(self.op_block_list or []))
        out = convert_float_to_float16(model, keep_io_types=self.keep_io_types, op_block_list=blocked)
        _copy_metadata(model, out)
        io = "float32 inputs/outputs kept" if self.keep_io_types else "inputs/outputs are float16"
        return PassResult(out, True, [io])


class _DropAdvice(logging.Filter):
    """onnxruntime's quantizer logs "consider pre-processing" advice on the root logger for every model."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _quantize_via_files(model: onnx.ModelProto, run: Callable[[Path, Path], None]) -> onnx.ModelProto:
    import onnx

    root = logging.getLogger()
    advice = _DropAdvice()
    with tempfile.TemporaryDirectory(prefix="onnxship-q-", dir=scratch_dir.get()) as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save_model(model, str(src))
        root.addFilter(advice)
        try:
            run(src, dst)
        finally:
            root.removeFilter(advice)
        if not dst.is_file():
            raise OptimizeError("the quantizer wrote no model")
        out = onnx.load(str(dst))
    _copy_metadata(model, out)
    return out


class Int8DynamicPass(Pass):
    """INT8 weights, activations quantized at run time (onnxruntime.quantization.quantize_dynamic)."""

    name = "int8-dynamic"

    def __init__(
        self,
        nodes_to_exclude: Iterable[str] = (),
        nodes_to_quantize: Iterable[str] | None = None,
        per_channel: bool = False,
        op_types: Iterable[str] | None = None,
    ) -> None:
        self.nodes_to_exclude = list(nodes_to_exclude)  # node names kept in float32
        self.nodes_to_quantize = (
            list(nodes_to_quantize) if nodes_to_quantize is not None else None
        )  # None: all
        self.per_channel = per_channel
        self.op_types = list(op_types) if op_types else None

    @staticmethod
    def prepare(model: onnx.ModelProto) -> onnx.ModelProto:
        """Split Gemm into MatMul + Add up front, as the dynamic quantizer would do internally: node names then
        stay the same before and after quantization, so nodes can be ranked and excluded by name."""
        import onnx
        from onnxruntime.quantization.onnx_model import ONNXModel

        out = onnx.ModelProto()
        out.CopyFrom(model)
        if any(n.op_type == "Gemm" for n in out.graph.node):
            ONNXModel(out).replace_gemm_with_matmul()
        name_unnamed_nodes(out)
        return out

    def call(self, model: onnx.ModelProto) -> PassResult:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        model = self.prepare(model)

        def run(src: Path, dst: Path) -> None:
            quantize_dynamic(
                src,
                dst,
                weight_type=QuantType.QInt8,
                per_channel=self.per_channel,
                nodes_to_exclude=self.nodes_to_exclude or None,
                nodes_to_quantize=self.nodes_to_quantize,
                op_types_to_quantize=self.op_types,
            )

        out = _quantize_via_files(model, run)
        notes = [f"excluded {self.nodes_to_exclude}"] if self.nodes_to_exclude else []
        return PassResult(out, True, notes)


class Int8StaticPass(Pass):
    """INT8 weights and activations with scales calibrated on data (QDQ format, MinMax calibration)."""

    name = "int8-static"

    def __init__(
        self,
        calibration: Sequence[dict[str, np.ndarray]],
        nodes_to_exclude: Iterable[str] = (),
        nodes_to_quantize: Iterable[str] | None = None,
        per_channel: bool = False,
        op_types: Iterable[str] | None = None,
    ) -> None:
        if not calibration:
            raise OptimizeError(
                "int8-static needs calibration batches, got none",
                hint="pass --calibration DATA.npz, or let onnxship generate samples from the specs",
            )
        self.calibration = list(calibration)
        self.nodes_to_exclude = list(nodes_to_exclude)
        self.nodes_to_quantize = list(nodes_to_quantize) if nodes_to_quantize is not None else None
        self.per_channel = per_channel
        self.op_types = list(op_types) if op_types else None

    def call(self, model: onnx.ModelProto) -> PassResult:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        from onnxship.optimize._calibration import calibration_reader

        name_unnamed_nodes(model)
        reader = calibration_reader(self.calibration)

        def run(src: Path, dst: Path) -> None:
            quantize_static(
                src,
                dst,
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=self.per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=self.nodes_to_exclude or None,
                nodes_to_quantize=self.nodes_to_quantize,
                op_types_to_quantize=self.op_types,
            )

        out = _quantize_via_files(model, run)
        notes = [f"calibrated on {len(self.calibration)} batches"]
        if self.nodes_to_exclude:
            notes.append(f"excluded {self.nodes_to_exclude}")
        return PassResult(out, True, notes)

"""The two exporters behind one call shape: dynamo (torch.export) and TorchScript (tracing).

One dims spec drives both: named dynamic dims become ``torch.export.Dim`` objects for dynamo and ``dynamic_axes``
names for TorchScript. DO NOT import torch at module level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxship.spec._inputs import TensorSpec, dim_table

if TYPE_CHECKING:
    import torch

    from onnxship.spec._binding import Binding

__all__ = ["STRATEGIES", "ExportCall", "TORCHSCRIPT_MAX_OPSET", "export_dynamo", "export_torchscript"]

TORCHSCRIPT_MAX_OPSET = 20  # torch.onnx._constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET in torch 2.13


@dataclass
class ExportCall:
    """Everything one exporter invocation needs."""

    model: torch.nn.Module
    values: dict[str, Any]  # input name -> torch tensor (export dummy)
    binding: Binding
    specs: list[TensorSpec]
    output_names: list[str]
    opset: int
    path: Path
    dynamic: bool = True  # False: a static export (every dim fixed at its export value)


def _dynamic_shapes(call: ExportCall) -> dict[str, Any] | None:
    from torch.export import Dim

    table = dim_table(call.specs)
    if not call.dynamic or not table:
        return None
    dims = {}
    for name, d in table.items():
        kw: dict[str, int] = {}
        if d.max is not None:
            kw["max"] = d.max
        dims[name] = Dim(name, **kw)
    shapes: dict[str, Any] = {}
    for spec in call.specs:
        param = call.binding.params.get(spec.name, spec.name)
        axes = {i: dims[d.name] for i, d in enumerate(spec.dims) if d.name}
        shapes[param] = axes or None
    return shapes


# The onnxscript optimizer (optimize=True) is the slowest stage of a dynamo export; optimize=False followed by onnxslim
# was faster and verified the same on every architecture in benchmarks/results/export_time.json ("dynamo_stages"),
# with as few or fewer nodes. onnxslim works on an in-memory proto (< 2 GB), so big models keep optimize=True.
SLIM_MAX_PARAM_BYTES = 1 << 30


def _slim_instead(model: torch.nn.Module) -> bool:
    import importlib.util

    if importlib.util.find_spec("onnxslim") is None:
        return False
    size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return size < SLIM_MAX_PARAM_BYTES


def export_dynamo(call: ExportCall) -> None:
    """torch.onnx.export(dynamo=True) with dynamic_shapes from the named dims, then onnxslim where it fits."""
    import torch

    args, kwargs = call.binding.call_args(call.values)
    ds = _dynamic_shapes(call)
    slim = _slim_instead(call.model)
    program = torch.onnx.export(
        call.model,
        args,
        None,
        kwargs=kwargs or None,
        input_names=list(call.binding.order),
        output_names=call.output_names,
        opset_version=call.opset,
        dynamo=True,
        dynamic_shapes=ds,
        optimize=not slim,
        verify=False,
        report=False,
    )
    if program is None:
        raise RuntimeError("torch.onnx.export(dynamo=True) returned no program")
    if not slim:
        program.save(str(call.path), external_data=True)
        return
    import onnx
    import onnxslim

    slimmed = onnxslim.slim(program.model_proto)
    if slimmed is None:
        raise RuntimeError("onnxslim returned no model for the dynamo export")
    onnx.save_model(
        slimmed,
        str(call.path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=call.path.name + ".data",
    )


def export_torchscript(call: ExportCall) -> None:
    """torch.onnx.export(dynamo=False) with dynamic_axes from the named dims (same opset)."""
    import torch

    args, kwargs = call.binding.call_args(call.values)
    full_args: tuple[Any, ...] = args + ((kwargs,) if kwargs else ())
    dynamic_axes = None
    if call.dynamic:
        dynamic_axes = {
            s.name: {i: n for i, n in s.dynamic_axes.items()} for s in call.specs if s.dynamic_axes
        }
    torch.onnx.export(
        call.model,
        full_args,
        str(call.path),
        input_names=list(call.binding.order),
        output_names=call.output_names,
        opset_version=call.opset,
        dynamo=False,
        dynamic_axes=dynamic_axes or None,
        do_constant_folding=True,
    )


STRATEGIES: dict[str, Callable[[ExportCall], None]] = {
    "dynamo": export_dynamo,
    "torchscript": export_torchscript,
}

"""``onnxship.export``: a model plus sample inputs in, a verified ONNX file plus its story out.

DO NOT import torch at module level.
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxship._errors import ConfigError
from onnxship._util import check_name, work_dir
from onnxship.export._config import ExportConfig, ExportResult
from onnxship.export._diagnostics import (
    merge_diagnostics,
)
from onnxship.export._inputs_from_model import (
    bump_dummy_dims,
    default_int_ranges,
    dummy_values,
    specs_from_samples,
    to_specs,
)
from onnxship.export._pipeline import (
    Plan,
    finalise,
    keep_candidates,
    note_diagnostics,
    plan_sizes,
    reference,
    search,
    write_sidecar,
)
from onnxship.spec._binding import Binding, bind_inputs, flat_module
from onnxship.spec._inputs import DimSpec, TensorSpec, dim_table
from onnxship.spec._model import LoadedModel, ModelSpec, ensure_module, parse_model_spec, state_dict_sha256

if TYPE_CHECKING:
    import torch

__all__ = ["export"]


def _load(model: Any) -> tuple[LoadedModel, bool]:
    """Resolve a model argument; returns the loaded model and the training flag to restore afterwards."""
    import torch

    if isinstance(model, str):
        model = parse_model_spec(model)
    if isinstance(model, ModelSpec):
        return model.load(), False
    module = ensure_module(model, "the model argument")
    was_training = module.training
    from onnxship.spec._model import to_cpu_eval

    module = to_cpu_eval(module)
    return LoadedModel(
        model=module, spec=None, weights_sha256=state_dict_sha256(module), torch_version=torch.__version__
    ), was_training


def _order_specs(specs: list[TensorSpec], binding: Binding) -> list[TensorSpec]:
    by_name = {s.name: s for s in specs}
    return [by_name[n] for n in binding.order]


def export(
    model: Any,
    sample_inputs: Any = None,
    *,
    out: str | Path = "out",
    name: str | None = None,
    inputs: list[str | TensorSpec] | None = None,
    dynamic: dict[str, dict[int, str]] | None = None,
    kinds: dict[str, str] | None = None,
    config: ExportConfig | None = None,
    **overrides: Any,
) -> ExportResult:
    """Export a PyTorch model to ONNX and accept it only if it matches PyTorch at several shapes.

    Args:
        model: an ``nn.Module``, a ``ModelSpec`` or a spec string ``"file.py:factory"``.
        sample_inputs: a tensor, a tuple of tensors, or a dict ``name -> tensor`` (names become ONNX input names and
            bind to forward()'s parameters by name; a nested dict feeds a dict parameter, its entries become inputs
            named ``inputs.image``). Alternatively give ``inputs``.
        out: folder for ``<name>.onnx`` and ``<name>.onnx.meta.json``.
        name: model name (default: from the spec or the class name).
        inputs: input specs (``"x:batch=2 x seq=10..64:int64:0..30"``) instead of sample tensors.
        dynamic: with sample tensors, the dynamic axes: ``{"x": {0: "batch", 1: "seq..64"}}``; also
            ``"height..512/16"`` (sizes multiples of 16) and ``"total=past+seq"`` (a sum of other dims).
        kinds: with sample tensors, value kinds of inputs: ``{"attention_mask": "mask", "offsets": "offsets(n)"}``
            (the obvious ones are inferred). At the sample's shape the sample itself is used as given.
        config: an ExportConfig; keyword overrides replace its fields (``strategy="torchscript"``).

    Returns:
        ExportResult with the path, the winning candidate, every candidate tried and the diagnostics.

    Raises:
        ExportError: no candidate verified (the error lists each candidate and why it was rejected).

    Example:
        >>> result = onnxship.export(model, {"input_sequence": x}, dynamic={"input_sequence": {0: "batch"}})  # doctest: +SKIP
    """
    start = time.perf_counter()
    config = replace(config or ExportConfig(), **overrides) if overrides else (config or ExportConfig())
    if (sample_inputs is None) == (inputs is None):
        raise ConfigError(
            "give either sample_inputs or inputs (input specs)",
            hint="e.g. inputs=['input_sequence:batch=2 x seq=10:int64'] or sample_inputs=torch.randint(...)",
        )
    loaded, restore_training = _load(model)
    module = loaded.model
    notes: list[str] = []
    if not config.fp16 and _is_half(module):  # every entry point (trace_pytorch too) gets the fp16 gate
        config = replace(config, fp16=True)
        notes.append("the model's weights are float16: exported and verified as fp16 (fp16 tolerances)")
    try:
        if inputs is not None:
            specs, samples = to_specs(list(inputs)), {}
        else:
            specs, samples = specs_from_samples(sample_inputs, dynamic, kinds)
        dim_table(specs)  # shared dims must agree
        _refuse_bfloat16(module, specs)
        specs, range_notes = default_int_ranges(module, specs)
        sample_specs = specs  # the user's shapes: a static candidate is exported at these (batch 1 stays 1)
        specs, bump_notes = bump_dummy_dims(specs)
        notes += range_notes + bump_notes
        binding = bind_inputs(module, [s.name for s in specs])
        if binding.by_position:
            notes.append(
                f"input names {list(binding.order)} do not match forward()'s parameters; bound by position "
                f"({', '.join(f'{k}->{v}' for k, v in binding.params.items())})"
            )
        specs = _order_specs(specs, binding)
        if binding.groups:  # forward(self, inputs: dict): export a wrapper that takes one tensor per entry
            groups = sorted(binding.groups)
            module, binding = flat_module(module, binding)
            notes.append(
                f"dict parameters {groups} of forward() are exported as one ONNX input per entry "
                f"({', '.join(binding.order)})"
            )
        static_specs = [_static_spec(s) for s in _order_specs(sample_specs, binding)]
        if config.fp16:
            module = copy.deepcopy(module).half()  # the caller's model keeps its dtype
            specs = [replace(s, dtype="float16") if s.dtype == "float32" else s for s in specs]
            static_specs = [replace(s, dtype="float16") if s.dtype == "float32" else s for s in static_specs]
        values = dummy_values(specs, samples, config.seed, config.fp16)
        static = (static_specs, dummy_values(static_specs, samples, config.seed, config.fp16))
        return _run(module, loaded, specs, values, binding, config, Path(out), name, notes, start, static)
    finally:
        if restore_training:
            loaded.model.train(True)


def _static_spec(spec: TensorSpec) -> TensorSpec:
    """Every dim fixed at the user's sample size (what a static candidate is exported and verified at)."""
    return replace(spec, dims=tuple(DimSpec(value=d.value) for d in spec.dims))


def _is_half(module: torch.nn.Module) -> bool:
    import torch

    floats = [p.dtype for p in module.parameters() if p.is_floating_point()]
    return bool(floats) and all(d == torch.float16 for d in floats)


def _refuse_bfloat16(module: torch.nn.Module, specs: list[TensorSpec]) -> None:
    """bfloat16 has no numpy dtype and the checks compare in numpy: refuse it before any work, clearly."""
    import torch

    where = [s.name for s in specs if s.dtype == "bfloat16"]
    params = any(p.dtype == torch.bfloat16 for p in module.parameters())
    if where or params:
        what = f"inputs {where}" if where else "the model's weights"
        raise ConfigError(
            f"{what} are bfloat16, which onnxship cannot verify (numpy and most ONNX runtimes have no bfloat16)",
            hint="export in float32 (model.float(), sample.float()) or float16 (fp16=True / --fp16)",
        )


def _model_name(name: str | None, loaded: LoadedModel) -> str:
    if name:
        return name
    if loaded.spec is not None:
        return loaded.spec.default_name()
    return type(loaded.model).__name__.lower()


def _run(
    module: torch.nn.Module,
    loaded: LoadedModel,
    specs: list[TensorSpec],
    values: dict[str, Any],
    binding: Binding,
    config: ExportConfig,
    out: Path,
    name: str | None,
    notes: list[str],
    start: float,
    static_inputs: tuple[list[TensorSpec], dict[str, Any]] | None = None,
) -> ExportResult:
    """The export's steps (export/_pipeline.py): reference, candidate search, finalisation, sidecar."""
    name = _model_name(name, loaded)
    check_name(name, "model name (--name)")
    static_specs, static_values = static_inputs or (specs, values)
    plan = Plan(module, loaded, specs, values, binding, config, out, name, notes, static_specs, static_values)
    plan_sizes(plan, reference(plan))
    if static_inputs is None:
        plan.static_specs = plan.specs
    work = work_dir(out, f"{name}-candidates", what="to --out")  # removed below; a killed run's by the next
    try:
        found = search(plan, work)
        final = finalise(plan, found)
        diagnostics = merge_diagnostics(
            [d for c in found.candidates for d in c.diagnostics]
            + note_diagnostics(plan.notes, final.static, final.specs)
        )
        meta_path, sha = write_sidecar(plan, found, final, diagnostics)
        if config.keep_candidates:
            keep_candidates(plan, work)
        record = found.record
        return ExportResult(
            name=name,
            path=final.dest,
            meta_path=meta_path,
            strategy=record.strategy,
            opset=record.file_opset or record.opset,
            static=final.static,
            inputs=final.specs,
            outputs=final.io["outputs"],
            candidates=found.candidates,
            diagnostics=diagnostics,
            metadata=final.metadata,
            dim_fixes=[f.to_dict() for f in final.fixes],
            notes=plan.notes,
            sha256=sha,
            seconds=time.perf_counter() - start,
            sweep_summary=final.parity.summary() if final.parity is not None else "",
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

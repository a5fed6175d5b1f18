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

import onnx

from onnxship import _progress
from onnxship._errors import ConfigError, ExportError, OnnxshipError, is_disk_full
from onnxship._util import atomic_write_json, check_name, git_sha, utc_now, work_dir
from onnxship._version import __version__
from onnxship.export import _cache
from onnxship.export._config import DEFAULT_OPSETS, CandidateRecord, ExportConfig, ExportResult
from onnxship.export._diagnostics import (
    Diagnostic,
    capture_diagnostics,
    classify,
    merge_diagnostics,
    root_cause,
)
from onnxship.export._inputs_from_model import (
    bump_dummy_dims,
    default_int_ranges,
    dummy_values,
    specs_from_samples,
    to_specs,
)
from onnxship.export._strategies import STRATEGIES, TORCHSCRIPT_MAX_OPSET, ExportCall
from onnxship.onnxfile import declared_io, file_sha256, finalize_model, specialized_dims
from onnxship.runtime._runners import OnnxRuntimeRunner, TorchRunner
from onnxship.spec._binding import Binding, bind_inputs, flat_module
from onnxship.spec._inputs import DimSpec, TensorSpec, dim_table
from onnxship.spec._model import LoadedModel, ModelSpec, ensure_module, parse_model_spec, state_dict_sha256
from onnxship.spec._probe import plan_sweep
from onnxship.verify._compare import PRECISION_TOLERANCES
from onnxship.verify._parity import ParityResult, check_parity

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


def _diag(code: str, severity: str, title: str, message: str, advice: str) -> Diagnostic:
    return Diagnostic(code, severity, title, message, advice, source="onnxship")


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
    name = _model_name(name, loaded)
    check_name(name, "model name (--name)")
    torch_runner = TorchRunner(module, binding)
    try:
        ref = torch_runner.infer({k: v.numpy() for k, v in values.items()})
    except OnnxshipError:
        raise
    except Exception as exc:
        raise ExportError(
            f"the model fails in PyTorch on the export inputs: {type(exc).__name__}: {exc}",
            hint="check the --input shapes and dtypes against forward()",
        ) from exc
    n_out = len(ref)
    if n_out == 0:
        raise ExportError(
            "the model returned no tensors", hint="forward() must return a tensor or a tuple of them"
        )
    output_names = list(config.output_names) if config.output_names else [f"output_{i}" for i in range(n_out)]
    if len(output_names) != n_out:
        raise ConfigError(
            f"{len(output_names)} output names given but the model returns {n_out} tensors",
            hint=f"give {n_out} names, e.g. {','.join(f'output_{i}' for i in range(n_out))}",
        )
    torch_runner.output_names = output_names
    tolerance = config.tolerance or PRECISION_TOLERANCES["fp16" if config.fp16 else "fp32"]
    # Size rules PyTorch itself imposes (multiples, minimums, dims that move together) before any candidate.
    sweep = plan_sweep(torch_runner, specs, seed=config.seed, probe=config.verify)
    specs, points = sweep.specs, sweep.points
    notes += sweep.notes
    if sweep.problem and not config.allow_static:
        raise ExportError(
            sweep.problem,
            hint="declare size rules (height=224..512/16), value kinds (mask, offsets(n), lengths(seq)) or give "
            "--data; a dim no other size of which works should be static",
        )
    static_specs, static_values = static_inputs or (specs, values)
    strategies = ["dynamo", "torchscript"] if config.strategy == "auto" else [config.strategy]
    work = work_dir(out, f"{name}-candidates", what="to --out")  # removed below; a killed run's by the next
    candidates: list[CandidateRecord] = []
    winner: tuple[CandidateRecord, Path] | None = None
    try:
        has_dynamic = bool(dim_table(specs))
        modes = [True] + ([False] if has_dynamic and config.allow_static else [])
        for dynamic in modes:
            for strategy in strategies:
                cache_key = None
                if strategy == "dynamo" and config.strategy == "auto" and config.use_cache:
                    cache_key = _cache.fingerprint(
                        module, specs, config.opsets_for("dynamo"), dynamic, loaded.torch_version
                    )
                    hit = _cache.recall(cache_key)
                    if hit:
                        candidates.append(
                            CandidateRecord(
                                strategy="dynamo",
                                opset=config.opsets_for("dynamo")[0],
                                outcome="skipped",
                                dynamic=dynamic,
                                reason=f"cached: {hit['outcome']} for this model code on {hit.get('when')} "
                                f"({hit.get('reason')}); --no-cache tries again",
                            )
                        )
                        continue
                first = len(candidates)
                winner = _try_strategy(
                    strategy,
                    dynamic,
                    module,
                    specs if dynamic else static_specs,
                    values if dynamic else static_values,
                    binding,
                    output_names,
                    config,
                    work,
                    torch_runner,
                    tolerance,
                    points,
                    candidates,
                )
                if cache_key and not winner and candidates[first:]:
                    last = candidates[-1]
                    if last.outcome in ("failed", "rejected"):
                        _cache.remember(
                            cache_key,
                            last.outcome,
                            last.reason,
                            sum(c.export_seconds + c.verify_seconds for c in candidates[first:]),
                        )
                if winner:
                    break
            if winner:
                break
        if winner is None:
            raise _no_candidate_error(candidates, has_dynamic, config)
        record, cand_path = winner
        static = not record.dynamic and has_dynamic
        if static:
            specs = static_specs
        parity = record.parity
        observed: dict[str, list[list[int]]] = {}
        used_points: list[dict[str, int]] = []
        if parity is not None:
            for c in parity.checks:
                if c.status == "passed" and c.kind == "shape":
                    used_points.append(c.dims)
                    for o, shp in c.output_shapes.items():
                        observed.setdefault(o, []).append(shp)
            specs = _verified_minimums(specs, used_points, notes)
        dest = out / f"{name}.onnx"
        metadata = _metadata(name, loaded, specs, output_names, record, static, config, used_points)
        fixes, check_notes = finalize_model(
            cand_path, dest, metadata=metadata, observed=observed, specs=specs, points=used_points
        )
        notes += check_notes
        final = onnx.load(str(dest), load_external_data=False)
        io = declared_io(final)
        if fixes:
            notes.append(
                "declared output dims corrected to match the sweep: "
                + ", ".join(f"{f.output}[{f.axis}] {f.declared!r} -> {f.fixed!r}" for f in fixes)
            )
        diagnostics = merge_diagnostics(
            [d for c in candidates for d in c.diagnostics] + _note_diags(notes, static, specs)
        )
        sidecar = {
            **metadata,
            "outputs": io["outputs"],
            "onnx_file": dest.name,
            "onnx_sha256": file_sha256(dest),
            "size_bytes": dest.stat().st_size
            + sum(p.stat().st_size for p in dest.parent.glob(dest.name + ".data")),
            "candidates": [c.to_dict() | {"parity": None} for c in candidates],
            "dim_fixes": [f.to_dict() for f in fixes],
            "diagnostics": [d.to_dict() for d in diagnostics],
            "export_notes": notes,  # onnxship's notes; "notes" stays the user's own sidecar field
        }
        meta_path = out / f"{name}.onnx.meta.json"
        atomic_write_json(meta_path, sidecar)
        if config.keep_candidates:
            keep = out / "candidates"
            keep.mkdir(exist_ok=True)
            for p in work.glob("*.onnx*"):
                shutil.copy2(p, keep / p.name)
        return ExportResult(
            name=name,
            path=dest,
            meta_path=meta_path,
            strategy=record.strategy,
            opset=record.file_opset or record.opset,
            static=static,
            inputs=specs,
            outputs=io["outputs"],
            candidates=candidates,
            diagnostics=diagnostics,
            metadata=metadata,
            dim_fixes=[f.to_dict() for f in fixes],
            notes=notes,
            sha256=sidecar["onnx_sha256"],
            seconds=time.perf_counter() - start,
            sweep_summary=parity.summary() if parity is not None else "",
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _verified_minimums(
    specs: list[TensorSpec], points: list[dict[str, int]], notes: list[str]
) -> list[TensorSpec]:
    """Each dynamic dim's ``min`` raised to the smallest size that was verified (serve refuses smaller ones)."""
    if not points:
        return specs
    smallest: dict[str, int] = {}
    for p in points:
        for k, v in p.items():
            smallest[k] = min(v, smallest.get(k, v))
    out = []
    raised: dict[str, int] = {}
    for s in specs:
        dims = []
        for d in s.dims:
            low = smallest.get(d.name) if d.name else None
            if low is not None and low > d.min:
                raised[d.name] = low  # type: ignore[index]
                d = replace(d, min=low)
            dims.append(d)
        out.append(replace(s, dims=tuple(dims)))
    if raised:
        notes.append(
            "smallest verified sizes: "
            + ", ".join(f"{k} >= {v}" for k, v in raised.items())
            + " (smaller sizes did not run in PyTorch; the metadata and the server refuse them)"
        )
    return out


def _note_diags(notes: list[str], static: bool, specs: list[TensorSpec]) -> list[Diagnostic]:
    out = []
    for n in notes:
        if "export dummy uses" in n:
            out.append(
                _diag(
                    "ONX140",
                    "info",
                    "dummy size bumped",
                    n,
                    "Nothing to do: onnxship exports with size 2 and still verifies size 1.",
                )
            )
        elif "bound by position" in n:
            out.append(
                _diag(
                    "ONX141",
                    "info",
                    "inputs bound by position",
                    n,
                    "Name inputs after forward()'s parameters to bind them by name.",
                )
            )
        elif n.startswith("declared output dims corrected"):
            out.append(
                _diag(
                    "ONX142",
                    "warning",
                    "declared output dims were wrong",
                    n,
                    "The exporter declared static output dims that vary; onnxship fixed the declaration. "
                    "Tools that read declared shapes (Triton, MLflow signatures) now see the right dims.",
                )
            )
    if static:
        dyn = sorted({d.name for s in specs for d in s.dims if d.name})
        out.append(
            _diag(
                "ONX150",
                "error",
                "STATIC export",
                f"no dynamic candidate verified; dims {dyn} are fixed at their export values",
                "The model only accepts the export shape. Fix the model "
                "(see the rejected candidates) to get dynamic dims back.",
            )
        )
    return out


def _try_strategy(
    strategy: str,
    dynamic: bool,
    module: torch.nn.Module,
    specs: list[TensorSpec],
    values: dict[str, Any],
    binding: Binding,
    output_names: list[str],
    config: ExportConfig,
    work: Path,
    torch_runner: TorchRunner,
    tolerance: Any,
    points: list[dict[str, int]],
    candidates: list[CandidateRecord],
) -> tuple[CandidateRecord, Path] | None:
    opsets = list(config.opsets_for(strategy))
    i = 0
    while i < len(opsets):
        opset = opsets[i]
        i += 1
        rec = CandidateRecord(strategy=strategy, opset=opset, outcome="failed", dynamic=dynamic)
        candidates.append(rec)
        if strategy == "torchscript" and opset > TORCHSCRIPT_MAX_OPSET:
            rec.outcome, rec.reason = (
                "skipped",
                f"the TorchScript exporter supports opset <= {TORCHSCRIPT_MAX_OPSET}",
            )
            continue
        path = work / f"{strategy}-{opset}-{'dyn' if dynamic else 'static'}.onnx"
        call = ExportCall(module, values, binding, specs, output_names, opset, path, dynamic=dynamic)
        t0 = time.perf_counter()
        with capture_diagnostics(stage=rec.label) as cap:
            try:
                with _progress.stage(f"{rec.label}: export"):
                    STRATEGIES[strategy](call)
                error = None
            except Exception as exc:  # exporter failures are data here: classified and recorded
                if is_disk_full(exc):  # not the model's fault: no other candidate would fit either
                    raise ExportError(
                        f"cannot write {path.name} to {str(work)!r}: no space left on device",
                        hint="free space there (or ship to a bigger disk with --releases) and run again",
                    ) from None
                error = exc
        rec.export_seconds = time.perf_counter() - t0
        rec.diagnostics = cap.diagnostics()
        # the user's own lines first: a warning inside torch.nn.functional points at the library, not the model
        rec.frozen = sorted(cap.frozen, key=lambda site: "site-packages" in site)
        if error is not None:
            inner = root_cause(error)
            d = classify(
                f"{type(inner).__name__}: {inner}", type(inner).__name__, source="exception", stage=rec.label
            )
            if d.code == "ONX199" and inner is not error:  # the wrapper may say more than its cause
                outer = classify(f"{error}", type(error).__name__, source="exception", stage=rec.label)
                d = replace(outer, message=d.message) if outer.code != "ONX199" else d
            rec.diagnostics = merge_diagnostics(rec.diagnostics + [d])
            rec.reason = f"export failed: {type(inner).__name__}: {_one_line(str(inner))}"
            if d.code == "ONX107" and i < len(opsets):
                continue  # an operator missing at this opset: try the next one
            return None  # another opset will not help; next strategy
        rec.outcome = "rejected"
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            rec.reason = f"the exporter wrote an unreadable file: {exc}"
            return None
        rec.file_opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        n_graph_out = len(model.graph.output)
        if n_graph_out != len(output_names):
            rec.reason = f"graph has {n_graph_out} outputs, PyTorch returns {len(output_names)}"
            return None
        if dynamic:
            rec.specialized = specialized_dims(model, specs)
            if rec.specialized:
                rec.reason = "requested dynamic dims were made static: " + "; ".join(rec.specialized)
                rec.diagnostics = merge_diagnostics(
                    rec.diagnostics
                    + [
                        classify(
                            "Constraints violated: dynamic dim specialized",
                            None,
                            source="onnxship",
                            stage=rec.label,
                        )
                    ]
                )
                return None
        t1 = time.perf_counter()
        try:
            ort_runner = OnnxRuntimeRunner(path)
        except OnnxshipError as exc:
            rec.reason = f"onnxruntime cannot load it: {exc.message}"
            rec.verify_seconds = time.perf_counter() - t1
            load = classify(exc.message, None, source="onnxruntime", stage=rec.label)
            if load.code != "ONX199":
                rec.diagnostics = merge_diagnostics(rec.diagnostics + [load])
            # An opset conversion that wrote a file onnxruntime refuses (dynamo at 17: "Unrecognized attribute
            # num_outputs for operator Split"): another opset may load; the exporter's own opset last of all.
            native = DEFAULT_OPSETS[strategy][0]
            if i >= len(opsets) and native not in opsets:
                opsets.append(native)
            if i < len(opsets):
                rec.reason += f"; retrying at opset {opsets[i]}"
                continue
            return None
        if config.verify:
            use_points = points if dynamic else [{}]
            parity: ParityResult = check_parity(
                torch_runner,
                ort_runner,
                specs,
                tolerance=tolerance,
                points=use_points,
                seed=config.seed,
                export_feeds={k: v.detach().cpu().numpy() for k, v in values.items()},
                values=config.value_sweep,
                allow_nonfinite=config.allow_nonfinite,
            )
        else:
            parity = ParityResult(passed=True, checks=[], reason="verification disabled")
        rec.parity = parity
        frozen_reason = _frozen_verdict(rec.frozen, parity, config) if config.verify else None
        if not parity or frozen_reason:
            rec.verify_seconds = time.perf_counter() - t1
            rec.reason = frozen_reason or (
                f"not verified (the checks, not the candidate, fell short): {parity.reason}"
                if parity.inconclusive
                else f"parity check failed: {parity.reason}"
            )
            if rec.frozen and not frozen_reason:
                rec.reason += (
                    f"; tracing froze a value at {rec.frozen[0]}: keep sizes as tensors "
                    "(x.size(1) without float()/int())"
                )
            if frozen_reason:
                rec.diagnostics = merge_diagnostics(
                    rec.diagnostics
                    + [
                        _diag(
                            "ONX151",
                            "error",
                            "a Python branch on tensor values was frozen by tracing",
                            frozen_reason,
                            _FROZEN_ADVICE,
                        )
                    ]
                )
            return None
        if config.verify:
            gate = _precision_gate(path, module, specs, config)
            rec.gate = gate.to_dict()
            if not gate.passed:
                rec.verify_seconds = time.perf_counter() - t1
                rec.reason = f"verification gate failed: {gate.failure_reason}"
                return None
        rec.verify_seconds = time.perf_counter() - t1
        rec.outcome, rec.reason = "accepted", None
        return rec, path
    return None


_FROZEN_ADVICE = (
    "Tracing records only the branch the export inputs took. Rewrite the branch so both sides are in the graph: "
    "torch.where(cond, a, b) for element-wise choices, or torch.cond(pred, true_fn, false_fn, (x,)) with the "
    "dynamo exporter (strategy='dynamo'). If the value cannot change at run time, compute it outside forward()."
)


def _one_line(text: str, limit: int = 300) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[0] if lines else "")[:limit]


def _frozen_verdict(frozen: list[str], parity: ParityResult, config: ExportConfig) -> str | None:
    """A trace that froze a tensor into a Python bool/int is accepted only when the value sweep proves it right.

    Returns the refusal when the frozen value is a branch on tensor values (a value variant fails), or when no value
    variant could run to show it right; None otherwise (a shape-derived freeze is judged by the shape sweep).
    """
    if not frozen:
        return None
    where = "; ".join(frozen[:3])
    values = parity.value_checks
    bad_values = [c for c in values if c.status == "failed"]
    if bad_values:
        first = bad_values[0]
        return (
            f"the trace froze a Python branch on tensor values at {where}: with values {first.values} it answers "
            f"wrong ({first.error}); rewrite it with torch.where or torch.cond"
        )
    if not parity or not config.value_sweep:
        return None
    if values and not any(c.status == "passed" for c in values):
        return (
            f"the trace froze a Python branch on tensor values at {where}, and no value variant could run in "
            "PyTorch to show that the frozen branch is right; rewrite it with torch.where or torch.cond"
        )
    return None


def _precision_gate(
    path: Path, module: torch.nn.Module, specs: list[TensorSpec], config: ExportConfig
) -> Any:
    """The verification engine's precision-aware gate (MSE, cosine, task agreement) on random samples.

    The shape sweep above proves the dims; this proves the numbers under the same policy `onnxship verify` uses.
    """
    from onnxship.verify import VerifyConfig, verify

    vconfig = VerifyConfig(
        precision="fp16" if config.fp16 else "fp32",
        task=config.task,
        sweep=False,
        sample_count=config.gate_samples,
        synthetic_count=config.gate_samples,
        batch_size=max(1, config.gate_samples),
        seed=config.seed + 1000,
        tolerance=config.tolerance,
        allow_nonfinite=config.allow_nonfinite,
        value_sweep=False,  # the parity check above already swept the values
    )
    return verify(path, model=module, inputs=specs, config=vconfig)


def _dims_are_the_problem(c: CandidateRecord) -> bool:
    """The candidate is right at the export shape and wrong (or static) elsewhere: a static export would do."""
    if c.specialized:
        return True
    p = c.parity
    if p is None or p.passed or p.inconclusive:
        return False
    failed = [x for x in p.checks if x.status == "failed"]
    export_ok = any(x.is_export_shape and x.kind == "shape" and x.status == "passed" for x in p.checks)
    return export_ok and bool(failed) and all(x.kind == "shape" and not x.is_export_shape for x in failed)


def _no_candidate_error(
    candidates: list[CandidateRecord], has_dynamic: bool, config: ExportConfig
) -> ExportError:
    """One error that lists every candidate, with a hint that matches the causes (never a generic "fix it")."""
    lines = [f"{c.label}: {c.outcome} — {c.reason}" for c in candidates]
    hints: list[str] = []
    frozen = [f for c in candidates for f in c.frozen if c.reason and "Python branch" in c.reason]
    if frozen:
        hints.append(
            f"forward() branches on tensor values at {frozen[0]}: rewrite it with torch.where, or torch.cond "
            "(dynamo exporter)"
        )
    unsupported = [d for c in candidates for d in c.diagnostics if d.code in ("ONX107", "ONX120", "ONX122")]
    if unsupported:
        hints.append(
            f"an operator has no ONNX translation ({unsupported[0].message[:160]}): try another opset "
            "(--opset 18, 20), replace the op in forward(), or register a custom translation "
            "(torch.onnx.export(custom_translation_table=...) / a custom op in onnxruntime)"
        )
    numeric = [c for c in candidates if c.parity is not None and not c.parity and not c.parity.inconclusive]
    if numeric and not frozen:
        worst = [
            f"{o.name} (max abs {o.max_abs:.3g}, atol={o.tolerance.get('atol', 0):g} "
            f"rtol={o.tolerance.get('rtol', 0):g})"
            for c in numeric
            for x in c.parity.checks  # type: ignore[union-attr]
            for o in x.outputs
            if not o.passed
        ]
        if worst:
            hints.append("outputs differ from PyTorch: " + ", ".join(dict.fromkeys(worst[:3])))
    inconclusive = [c for c in candidates if c.parity is not None and c.parity.inconclusive]
    if inconclusive and not numeric:
        hints.append(
            "the checks could not run enough shapes: give each input a value kind or range, a dim step "
            "(name=N..MAX/STEP), or real samples (--data); the candidate itself was not found wrong"
        )
    if has_dynamic and not config.allow_static and any(_dims_are_the_problem(c) for c in candidates):
        hints.append(
            "the dims are the problem: pass --allow-static to accept a static model (recorded loudly)"
        )
    return ExportError(
        "no export candidate produced a verified ONNX model:\n  " + "\n  ".join(lines),
        hint="; ".join(hints) or "see the candidates above; each reason says what failed",
        candidates=candidates,
    )


def _metadata(
    name: str,
    loaded: LoadedModel,
    specs: list[TensorSpec],
    output_names: list[str],
    record: CandidateRecord,
    static: bool,
    config: ExportConfig,
    points: list[dict[str, int]],
) -> dict[str, Any]:
    import onnxruntime

    dyn_in = {
        s.name: {str(a): n for a, n in s.dynamic_axes.items()} for s in specs if s.dynamic_axes and not static
    }
    meta: dict[str, Any] = {
        "onnxship_version": __version__,
        "model_name": name,
        "model_type": name,
        "exporter": record.strategy,
        "opset": record.file_opset or record.opset,  # the opset in the file, not the one asked for
        "static": static,
        "torch_version": loaded.torch_version,
        "onnx_version": onnx.__version__,
        "onnxruntime_version": onnxruntime.__version__,
        "inputs": [s.to_dict() for s in specs],
        "output_names": output_names,
        "dynamic_axes": dyn_in,
        "verified_dims": points,
        "git_sha": git_sha(),
        "exported_at_utc": utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "weights_sha256": loaded.weights_sha256,
        "checkpoint": str(loaded.spec.checkpoint) if loaded.spec and loaded.spec.checkpoint else None,
        "precision": "fp16" if config.fp16 else "fp32",
    }
    for k, v in loaded.checkpoint_meta.items():
        meta.setdefault(k, v)
    meta.update(config.metadata)
    return meta

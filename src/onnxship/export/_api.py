"""``onnxship.export``: a model plus sample inputs in, a verified ONNX file plus its story out.

DO NOT import torch at module level.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from onnxship import _progress
from onnxship._errors import ConfigError, ExportError, OnnxshipError, is_disk_full
from onnxship._util import atomic_write_json, git_sha, utc_now
from onnxship._version import __version__
from onnxship.export import _cache
from onnxship.export._config import CandidateRecord, ExportConfig, ExportResult
from onnxship.export._diagnostics import Diagnostic, capture_diagnostics, classify, merge_diagnostics
from onnxship.export._inputs_from_model import (
    bump_dummy_dims,
    default_int_ranges,
    dummy_values,
    specs_from_samples,
    to_specs,
)
from onnxship.export._onnxfile import declared_io, file_sha256, finalize_model, specialized_dims
from onnxship.export._strategies import STRATEGIES, TORCHSCRIPT_MAX_OPSET, ExportCall
from onnxship.spec._binding import Binding, bind_inputs
from onnxship.spec._inputs import TensorSpec, dim_table, sweep_points
from onnxship.spec._model import LoadedModel, ModelSpec, ensure_module, parse_model_spec, state_dict_sha256
from onnxship.verify._compare import PRECISION_TOLERANCES
from onnxship.verify._parity import ParityResult, check_parity
from onnxship.verify._runners import OnnxRuntimeRunner, TorchRunner

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
    config: ExportConfig | None = None,
    **overrides: Any,
) -> ExportResult:
    """Export a PyTorch model to ONNX and accept it only if it matches PyTorch at several shapes.

    Args:
        model: an ``nn.Module``, a ``ModelSpec`` or a spec string ``"file.py:factory"``.
        sample_inputs: a tensor, a tuple of tensors, or a dict ``name -> tensor`` (names become ONNX input names and
            bind to forward()'s parameters by name). Alternatively give ``inputs``.
        out: folder for ``<name>.onnx`` and ``<name>.onnx.meta.json``.
        name: model name (default: from the spec or the class name).
        inputs: input specs (``"x:batch=2 x seq=10..64:int64:0..30"``) instead of sample tensors.
        dynamic: with sample tensors, the dynamic axes: ``{"x": {0: "batch", 1: "seq..64"}}``.
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
    try:
        if inputs is not None:
            specs, samples = to_specs(list(inputs)), {}
        else:
            specs, samples = specs_from_samples(sample_inputs, dynamic)
        dim_table(specs)  # shared dims must agree
        specs, range_notes = default_int_ranges(module, specs)
        specs, bump_notes = bump_dummy_dims(specs)
        notes += range_notes + bump_notes
        binding = bind_inputs(module, [s.name for s in specs])
        if binding.by_position:
            notes.append(
                f"input names {list(binding.order)} do not match forward()'s parameters; bound by position "
                f"({', '.join(f'{k}->{v}' for k, v in binding.params.items())})"
            )
        specs = _order_specs(specs, binding)
        if config.fp16:
            module = copy.deepcopy(module).half()  # the caller's model keeps its dtype
            specs = [replace(s, dtype="float16") if s.dtype == "float32" else s for s in specs]
        values = dummy_values(specs, samples, config.seed, config.fp16)
        return _run(module, loaded, specs, values, binding, config, Path(out), name, notes, start)
    finally:
        if restore_training:
            loaded.model.train(True)


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
) -> ExportResult:
    name = _model_name(name, loaded)
    if not name.replace("-", "_").replace(".", "_").isidentifier():
        raise ConfigError(
            f"model name {name!r} is not usable as a file name",
            hint="use letters, digits, '-', '_' (pass --name)",
        )
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
    points = sweep_points(specs)
    strategies = ["dynamo", "torchscript"] if config.strategy == "auto" else [config.strategy]
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}-candidates-", dir=out))
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
                        module, specs, config.opsets, dynamic, loaded.torch_version
                    )
                    hit = _cache.recall(cache_key)
                    if hit:
                        candidates.append(
                            CandidateRecord(
                                strategy="dynamo",
                                opset=config.opsets[0],
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
                    specs,
                    values,
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
        parity = record.parity
        observed: dict[str, list[list[int]]] = {}
        used_points: list[dict[str, int]] = []
        if parity is not None:
            for c in parity.checks:
                if c.status == "passed":
                    used_points.append(c.dims)
                    for o, shp in c.output_shapes.items():
                        observed.setdefault(o, []).append(shp)
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
            opset=record.opset,
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
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


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
    for opset in config.opsets:
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
        unsupported = False
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
        if error is not None:
            d = classify(
                f"{type(error).__name__}: {error}", type(error).__name__, source="exception", stage=rec.label
            )
            rec.diagnostics = merge_diagnostics(rec.diagnostics + [d])
            rec.reason = (
                f"export failed: {d.message}"
                if d.code != "ONX199"
                else f"export failed: {type(error).__name__}: {d.message}"
            )
            unsupported = d.code == "ONX107"
            if unsupported:
                continue  # an operator missing at this opset: try the next one
            return None  # another opset will not help; next strategy
        rec.outcome = "rejected"
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            rec.reason = f"the exporter wrote an unreadable file: {exc}"
            return None
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
            return None
        if config.verify:
            use_points = points if dynamic else [points[0]]
            parity: ParityResult = check_parity(
                torch_runner, ort_runner, specs, tolerance=tolerance, points=use_points, seed=config.seed
            )
        else:
            parity = ParityResult(passed=True, checks=[], reason="verification disabled")
        rec.parity = parity
        if not parity:
            rec.verify_seconds = time.perf_counter() - t1
            rec.reason = f"parity check failed: {parity.reason}"
            return None
        if config.verify and dynamic and dim_table(specs):  # a static graph takes only its export batch
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
    )
    return verify(path, model=module, inputs=specs, config=vconfig)


def _no_candidate_error(
    candidates: list[CandidateRecord], has_dynamic: bool, config: ExportConfig
) -> ExportError:
    lines = [f"{c.label}: {c.outcome} — {c.reason}" for c in candidates]
    hint = "see the candidates above; each reason says what failed"
    if has_dynamic and not config.allow_static:
        hint = (
            "no candidate kept the dynamic dims working; fix the model (see reasons), or pass --allow-static to "
            "accept a static model (recorded loudly)"
        )
    return ExportError(
        "no export candidate produced a verified ONNX model:\n  " + "\n  ".join(lines),
        hint=hint,
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
        "opset": record.opset,
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

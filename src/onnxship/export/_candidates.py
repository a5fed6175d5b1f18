"""One export candidate: an exporter at its opsets, then the full gate (shape sweep, value sweep, precision gate).

``try_candidate`` is what a worker process runs (export/_concurrent.py) and what runs in-process when only one
candidate is left. It never raises for the model's faults: exporter failures, unreadable files and failed checks
become CandidateRecords; only a full disk (no other candidate would fit either) raises.

DO NOT import torch at module level.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from onnxship import _progress
from onnxship._errors import ExportError, OnnxshipError, is_disk_full
from onnxship.export._config import DEFAULT_OPSETS, CandidateRecord, ExportConfig
from onnxship.export._diagnostics import (
    Diagnostic,
    capture_diagnostics,
    classify,
    merge_diagnostics,
    root_cause,
)
from onnxship.export._strategies import STRATEGIES, TORCHSCRIPT_MAX_OPSET, ExportCall
from onnxship.onnxfile import specialized_dims
from onnxship.runtime._runners import OnnxRuntimeRunner, TorchRunner
from onnxship.runtime._session import SessionConfig
from onnxship.spec._binding import Binding
from onnxship.spec._inputs import TensorSpec
from onnxship.verify._parity import ParityResult, check_parity

if TYPE_CHECKING:
    import torch

__all__ = ["CandidateJob", "CandidateOutcome", "try_candidate"]


@dataclass
class CandidateJob:
    """Everything one candidate (an exporter, dynamic or static) needs; picklable for a spawned worker."""

    strategy: str
    dynamic: bool
    module: torch.nn.Module
    specs: list[TensorSpec]
    values: dict[str, Any]  # input name -> torch tensor (the export dummy)
    binding: Binding
    output_names: list[str]
    config: ExportConfig
    work: Path
    tolerance: Any
    points: list[dict[str, int]]


@dataclass
class CandidateOutcome:
    """The records of one candidate's attempts (one per opset tried) and the verified file, if any."""

    records: list[CandidateRecord]
    path: Path | None = None

    @property
    def accepted(self) -> CandidateRecord | None:
        return self.records[-1] if self.path is not None and self.records else None


def try_candidate(job: CandidateJob, torch_runner: TorchRunner | None = None) -> CandidateOutcome:
    """Export and gate one candidate; every attempt is recorded with its wall-clock start and finish."""
    runner = torch_runner or TorchRunner(job.module, job.binding, job.output_names)
    records: list[CandidateRecord] = []
    try:
        won = _try_strategy(
            job.strategy,
            job.dynamic,
            job.module,
            job.specs,
            job.values,
            job.binding,
            job.output_names,
            job.config,
            job.work,
            runner,
            job.tolerance,
            job.points,
            records,
        )
    finally:
        now = time.time()
        for rec in records:
            rec.finished_at = rec.finished_at or now
    return CandidateOutcome(records, won[1] if won else None)


def _diag(code: str, severity: str, title: str, message: str, advice: str) -> Diagnostic:
    return Diagnostic(code, severity, title, message, advice, source="onnxship")


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
        if candidates:
            candidates[-1].finished_at = candidates[-1].finished_at or time.time()
        rec = CandidateRecord(strategy=strategy, opset=opset, outcome="failed", dynamic=dynamic)
        rec.started_at = time.time()
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
            # no spinning: PyTorch and onnxruntime take turns in the gate, and a spinning pool idles on the cores
            # the other one needs (a concurrent candidate shares them too)
            ort_runner = OnnxRuntimeRunner(path, SessionConfig(allow_spinning=False))
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

"""The steps of one export after its inputs are settled, each with one job.

``reference`` runs the model once in PyTorch (the outputs every candidate is compared with); ``search`` runs the
candidates (dynamic first, then static where allowed) with the dynamo-failure cache, concurrently where there are
several (export/_concurrent.py); ``finalise`` writes the winning file with its metadata and corrected output dims;
``write_sidecar`` writes ``<name>.onnx.meta.json``. ``export()`` in export/_api.py strings them together.

DO NOT import torch at module level.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from onnxship._errors import ConfigError, ExportError, OnnxshipError
from onnxship._util import atomic_write_json, git_sha, utc_now
from onnxship._version import __version__
from onnxship.export import _cache
from onnxship.export._candidates import CandidateJob
from onnxship.export._concurrent import run_group
from onnxship.export._config import PREFERENCE, CandidateRecord, ExportConfig
from onnxship.export._diagnostics import Diagnostic
from onnxship.export._refusal import no_candidate_error
from onnxship.onnxfile import declared_io, file_sha256, finalize_model
from onnxship.runtime._runners import TorchRunner
from onnxship.spec._binding import Binding
from onnxship.spec._inputs import TensorSpec, dim_table
from onnxship.spec._model import LoadedModel
from onnxship.spec._probe import plan_sweep
from onnxship.verify._compare import PRECISION_TOLERANCES
from onnxship.verify._parity import ParityResult

if TYPE_CHECKING:
    import torch

__all__ = [
    "Plan",
    "Search",
    "Final",
    "finalise",
    "reference",
    "search",
    "note_diagnostics",
    "keep_candidates",
    "write_sidecar",
]


@dataclass
class Plan:
    """What the export works from: the model, its bound inputs (dynamic and static), the config and the names."""

    module: torch.nn.Module
    loaded: LoadedModel
    specs: list[TensorSpec]
    values: dict[str, Any]
    binding: Binding
    config: ExportConfig
    out: Path
    name: str
    notes: list[str]
    static_specs: list[TensorSpec]
    static_values: dict[str, Any]
    output_names: list[str] = field(default_factory=list)
    points: list[dict[str, int]] = field(default_factory=list)  # the sweep shapes (plan_sizes)

    @property
    def has_dynamic(self) -> bool:
        return bool(dim_table(self.specs))


@dataclass
class Search:
    """Every candidate tried, in preference order, and the verified one (record and file)."""

    candidates: list[CandidateRecord]
    record: CandidateRecord
    path: Path


@dataclass
class Final:
    """The written ONNX file and what finalisation learnt on the way."""

    dest: Path
    specs: list[TensorSpec]
    static: bool
    metadata: dict[str, Any]
    io: dict[str, Any]
    fixes: list[Any]
    parity: ParityResult | None


def reference(plan: Plan) -> TorchRunner:
    """Run the model once in PyTorch on the export inputs; settle the output names (a user-code boundary)."""
    runner = TorchRunner(plan.module, plan.binding)
    try:
        ref = runner.infer({k: v.numpy() for k, v in plan.values.items()})
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
    config = plan.config
    names = list(config.output_names) if config.output_names else [f"output_{i}" for i in range(n_out)]
    if len(names) != n_out:
        raise ConfigError(
            f"{len(names)} output names given but the model returns {n_out} tensors",
            hint=f"give {n_out} names, e.g. {','.join(f'output_{i}' for i in range(n_out))}",
        )
    runner.output_names = plan.output_names = names
    return runner


def plan_sizes(plan: Plan, runner: TorchRunner) -> None:
    """Size rules PyTorch itself imposes (multiples, minimums, dims that move together), before any candidate."""
    config = plan.config
    sweep = plan_sweep(runner, plan.specs, seed=config.seed, probe=config.verify)
    plan.specs, plan.points = sweep.specs, sweep.points
    plan.notes += sweep.notes
    if sweep.problem and not config.allow_static:
        raise ExportError(
            sweep.problem,
            hint="declare size rules (height=224..512/16), value kinds (mask, offsets(n), lengths(seq)) or give "
            "--data; a dim no other size of which works should be static",
        )


def _strategies(config: ExportConfig) -> list[str]:
    return list(PREFERENCE) if config.strategy in ("auto", "fastest") else [config.strategy]


def _cached_skip(plan: Plan, strategy: str, dynamic: bool) -> tuple[str | None, CandidateRecord | None]:
    """The dynamo-failure cache: (the key to remember a failure under, a "skipped" record when it is known)."""
    config = plan.config
    if strategy != "dynamo" or config.strategy not in ("auto", "fastest") or not config.use_cache:
        return None, None
    key = _cache.fingerprint(
        plan.module, plan.specs, config.opsets_for("dynamo"), dynamic, plan.loaded.torch_version
    )
    hit = _cache.recall(key)
    if not hit:
        return key, None
    return key, CandidateRecord(
        strategy="dynamo",
        opset=config.opsets_for("dynamo")[0],
        outcome="skipped",
        dynamic=dynamic,
        reason=f"cached: {hit['outcome']} for this model code on {hit.get('when')} "
        f"({hit.get('reason')}); --no-cache tries again",
    )


def search(plan: Plan, work: Path) -> Search:
    """Run the candidates, dynamic first and then static (with --allow-static); raise when none verifies."""
    config = plan.config
    tolerance = config.tolerance or PRECISION_TOLERANCES["fp16" if config.fp16 else "fp32"]
    points = plan.points
    modes = [True] + ([False] if plan.has_dynamic and config.allow_static else [])
    policy = "fastest" if config.strategy == "fastest" else "preference"
    candidates: list[CandidateRecord] = []
    for dynamic in modes:
        specs, values = (plan.specs, plan.values) if dynamic else (plan.static_specs, plan.static_values)
        slots: list[CandidateRecord | CandidateJob] = []
        keys: dict[int, str] = {}
        for strategy in _strategies(config):
            key, skipped = _cached_skip(plan, strategy, dynamic)
            if skipped is not None:
                slots.append(skipped)
                continue
            if key:
                keys[len(slots)] = key
            job = CandidateJob(
                strategy, dynamic, plan.module, specs, values, plan.binding, plan.output_names, config, work,
                tolerance, points,
            )  # fmt: skip
            slots.append(job)
        jobs = [s for s in slots if isinstance(s, CandidateJob)]
        group = run_group(jobs, policy)
        outcomes = iter(group.outcomes)
        winner: Search | None = None
        for slot_index, slot in enumerate(slots):
            if isinstance(slot, CandidateRecord):
                candidates.append(slot)
                continue
            outcome = next(outcomes, None)
            if outcome is None:  # a sequential run stopped at an earlier verified candidate
                continue
            candidates.extend(outcome.records)
            if (
                outcome.path is not None
                and group.chosen is not None
                and group.outcomes[group.chosen] is outcome
            ):
                winner = Search(candidates, outcome.records[-1], outcome.path)
            elif outcome.path is None and slot_index in keys and outcome.records:
                last = outcome.records[-1]
                if last.outcome in ("failed", "rejected"):
                    seconds = sum(c.export_seconds + c.verify_seconds for c in outcome.records)
                    _cache.remember(keys[slot_index], last.outcome, last.reason, seconds)
        if winner is not None:
            return winner
    raise no_candidate_error(candidates, plan.has_dynamic, config)


def finalise(plan: Plan, found: Search) -> Final:
    """Write <name>.onnx: the verified minimums, the metadata, output dims corrected to what the sweep saw."""
    record = found.record
    static = not record.dynamic and plan.has_dynamic
    specs = plan.static_specs if static else plan.specs
    parity = record.parity
    observed: dict[str, list[list[int]]] = {}
    used_points: list[dict[str, int]] = []
    if parity is not None:
        for c in parity.checks:
            if c.status == "passed" and c.kind == "shape":
                used_points.append(c.dims)
                for o, shp in c.output_shapes.items():
                    observed.setdefault(o, []).append(shp)
        specs = _verified_minimums(specs, used_points, plan.notes)
    dest = plan.out / f"{plan.name}.onnx"
    metadata = _metadata(
        plan.name, plan.loaded, specs, plan.output_names, record, static, plan.config, used_points
    )
    fixes, check_notes = finalize_model(
        found.path, dest, metadata=metadata, observed=observed, specs=specs, points=used_points
    )
    plan.notes += check_notes
    io = declared_io(onnx.load(str(dest), load_external_data=False))
    if fixes:
        plan.notes.append(
            "declared output dims corrected to match the sweep: "
            + ", ".join(f"{f.output}[{f.axis}] {f.declared!r} -> {f.fixed!r}" for f in fixes)
        )
    return Final(dest, specs, static, metadata, io, fixes, parity)


def write_sidecar(plan: Plan, found: Search, final: Final, diagnostics: list[Diagnostic]) -> tuple[Path, str]:
    """Write <name>.onnx.meta.json (metadata, hashes, every candidate, diagnostics); returns its path and the sha."""
    dest = final.dest
    sha = file_sha256(dest)
    sidecar = {
        **final.metadata,
        "outputs": final.io["outputs"],
        "onnx_file": dest.name,
        "onnx_sha256": sha,
        "size_bytes": dest.stat().st_size
        + sum(p.stat().st_size for p in dest.parent.glob(dest.name + ".data")),
        "candidates": [c.to_dict() | {"parity": None} for c in found.candidates],
        "dim_fixes": [f.to_dict() for f in final.fixes],
        "diagnostics": [d.to_dict() for d in diagnostics],
        "export_notes": plan.notes,  # onnxship's notes; "notes" stays the user's sidecar field
    }
    meta_path = plan.out / f"{plan.name}.onnx.meta.json"
    atomic_write_json(meta_path, sidecar)
    return meta_path, sha


def keep_candidates(plan: Plan, work: Path) -> None:
    """--keep-candidates: copy every candidate file to <out>/candidates/."""
    keep = plan.out / "candidates"
    keep.mkdir(exist_ok=True)
    for p in work.glob("*.onnx*"):
        shutil.copy2(p, keep / p.name)


def _diag(code: str, severity: str, title: str, message: str, advice: str) -> Diagnostic:
    return Diagnostic(code, severity, title, message, advice, source="onnxship")


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


def note_diagnostics(notes: list[str], static: bool, specs: list[TensorSpec]) -> list[Diagnostic]:
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

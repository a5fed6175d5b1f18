"""``onnxship.optimize``: an exported FP32 ONNX model in, re-verified variants (simplified, fp16, int8) out.

Every variant is built by a pass sequence, then judged by :func:`onnxship.optimize._gate.run_gate` against the
FP32 PyTorch model (or, without one, the FP32 ONNX model). A variant that fails its gate is not kept: its file is
deleted (or renamed ``*.rejected.onnx`` with ``keep_rejected``) and the reason is in the result.

DO NOT import torch or onnxruntime at module level.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxship._errors import ConfigError, DiskFullError, OptimizeError, is_disk_full
from onnxship._util import atomic_write, atomic_write_json, force_rmtree, scratch_dir, work_dir
from onnxship.optimize._gate import GateConfig, GateResult, run_gate
from onnxship.optimize._passes import (
    Fp16Pass,
    Int8DynamicPass,
    Int8StaticPass,
    Pass,
    PassSequence,
    SimplifyPass,
    name_unnamed_nodes,
)
from onnxship.optimize._sensitivity import NodeSensitivity, rank_sensitivity
from onnxship.runtime._io import model_metadata, model_specs
from onnxship.runtime._variants import VARIANTS, normalize_variant
from onnxship.spec._inputs import TensorSpec

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from onnxship.runtime._runners import Runner
    from onnxship.runtime._session import SessionConfig

__all__ = [
    "VARIANTS",
    "OptimizeConfig",
    "OptimizeResult",
    "VariantResult",
    "build_variants",
    "normalize_variant",
    "optimize",
]


@dataclass
class OptimizeConfig:
    """Which variants to build and how to judge them."""

    variants: tuple[str, ...] = (
        "int8-dynamic",
    )  # fp32 (simplified only) | fp16 | int8-dynamic | int8-static
    # Run onnxslim before every variant. On by default: the TorchScript exporter shares identical weights behind
    # Identity nodes, which onnxruntime's quantizer skips (measured on a 4-layer transformer: 5 of 20 MatMuls
    # quantized without it, 17 with it).
    simplify: bool = True
    keep_io_types: bool = True  # fp16: keep float32 graph inputs/outputs
    calibration: str | Path | None = (
        None  # int8-static: data (like `verify --data`); None: generated from specs
    )
    calibration_samples: int = 64  # samples used for calibration
    per_channel: bool = False  # int8: per-channel weight scales
    exclude_nodes: tuple[str, ...] = ()  # int8: node names always kept in float32
    exclude_sensitive: bool = (
        True  # int8: when the gate fails, keep the most sensitive nodes in float32 and retry
    )
    max_excluded: int = 8  # ... at most this many
    gate: GateConfig = field(default_factory=GateConfig)
    out_dir: Path | None = None  # default: <onnx folder>/variants
    keep_rejected: bool = False  # keep a failed variant as <name>.<variant>.rejected.onnx
    session: SessionConfig | None = None  # how the variants are run during the gate

    def __post_init__(self) -> None:
        if isinstance(self.variants, str):
            self.variants = tuple(v for v in self.variants.split(",") if v.strip())
        self.variants = tuple(dict.fromkeys(normalize_variant(v) for v in self.variants))
        if not self.variants:
            raise ConfigError("no variant asked for", hint=f"ask for one of {', '.join(VARIANTS)}")
        if self.calibration_samples < 1 or self.max_excluded < 0:
            raise ConfigError("calibration_samples must be >= 1 and max_excluded >= 0")
        if self.out_dir is not None:
            self.out_dir = Path(self.out_dir)


@dataclass
class VariantResult:
    """One variant: where it is, what it is, and whether it passed its gate."""

    variant: str
    precision: str
    status: str  # kept | rejected
    path: Path | None  # the kept file (or the .rejected.onnx with keep_rejected); None when deleted
    size_bytes: int = 0
    reason: str | None = None  # why it was rejected
    passes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    excluded_nodes: list[str] = field(default_factory=list)  # kept in float32
    sensitivity: list[NodeSensitivity] = field(default_factory=list)  # when the exclusion search ran
    gate: GateResult | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "kept"

    @property
    def metrics(self) -> dict[str, Any]:
        return self.gate.metrics if self.gate is not None else {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "precision": self.precision,
            "status": self.status,
            "path": str(self.path) if self.path else None,
            "size_bytes": self.size_bytes,
            "reason": self.reason,
            "passes": self.passes,
            "notes": self.notes,
            "excluded_nodes": self.excluded_nodes,
            "sensitivity": [s.to_dict() for s in self.sensitivity[:20]],
            "gate": self.gate.to_dict() if self.gate is not None else None,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class OptimizeResult:
    """All variants of one source model; truthy when every variant passed its gate."""

    source: Path
    source_size_bytes: int
    reference: str  # torch | onnxruntime-fp32
    variants: list[VariantResult]
    report_path: Path | None = None

    def __bool__(self) -> bool:
        return all(v.passed for v in self.variants)

    @property
    def kept(self) -> list[VariantResult]:
        return [v for v in self.variants if v.passed]

    @property
    def rejected(self) -> list[VariantResult]:
        return [v for v in self.variants if not v.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "source_size_bytes": self.source_size_bytes,
            "reference": self.reference,
            "passed": bool(self),
            "variants": [v.to_dict() for v in self.variants],
        }


def _set_meta(model: onnx.ModelProto, values: dict[str, Any]) -> None:
    from onnxship.onnxfile import set_metadata

    set_metadata(model, values)


def _save(model: onnx.ModelProto, dest: Path) -> None:
    """Write through a temp file in the same folder and a rename: a reader never sees half a model."""
    import onnx

    atomic_write(dest, lambda tmp: onnx.save_model(model, tmp))


class _Builder:
    """Builds one variant's pass list (the precision pass depends on the nodes kept in float32)."""

    def __init__(
        self, variant: str, config: OptimizeConfig, calibration: Callable[[], list[dict[str, np.ndarray]]]
    ):
        self.variant, self.config, self.calibration = variant, config, calibration

    def precision_pass(self, exclude: Sequence[str] = (), only: Sequence[str] | None = None) -> Pass | None:
        c = self.config
        if self.variant == "fp16":
            return Fp16Pass(keep_io_types=c.keep_io_types)
        if self.variant == "int8-dynamic":
            return Int8DynamicPass(
                nodes_to_exclude=exclude, nodes_to_quantize=only, per_channel=c.per_channel
            )
        if self.variant == "int8-static":
            return Int8StaticPass(
                self.calibration(),
                nodes_to_exclude=exclude,
                nodes_to_quantize=only,
                per_channel=c.per_channel,
            )
        return None  # fp32: simplify only


def _reference(
    model: Any, source: Path, specs: list[TensorSpec], output_names: list[str], session: SessionConfig | None
) -> tuple[Runner, str]:
    from onnxship.runtime._engines import onnx_runner, torch_runner

    if model is not None:
        return torch_runner(model, specs, output_names), "torch"
    return onnx_runner(source, session), "onnxruntime-fp32"


def optimize(
    onnx_path: str | Path,
    config: OptimizeConfig | None = None,
    *,
    model: Any = None,
    specs: Sequence[TensorSpec] | None = None,
) -> OptimizeResult:
    """Build the asked variants of an FP32 ONNX model; keep those that pass their precision's gate.

    Args:
        onnx_path: the exported FP32 model (input specs are read from its ``inputs`` metadata).
        config: variants, calibration, gate thresholds, output folder.
        model: the FP32 PyTorch model (nn.Module, ModelSpec or ``file.py:factory``) to verify against; None
            verifies against the FP32 ONNX model through onnxruntime.
        specs: input specs, when the ONNX file carries none.

    Example:
        >>> res = optimize("out/deeplog.onnx", OptimizeConfig(variants=("int8-dynamic",)))  # doctest: +SKIP
        >>> [(v.variant, v.status, v.reason) for v in res.variants]  # doctest: +SKIP
        [('int8-dynamic', 'kept', None)]
    """
    import onnx

    from onnxship.inspect import load_onnx_checked
    from onnxship.onnxfile import file_sha256
    from onnxship.optimize._calibration import calibration_batches

    config = config or OptimizeConfig()
    source = Path(onnx_path)
    load_onnx_checked(source)  # clear errors for missing/truncated files before the full load
    base = onnx.load(str(source))
    meta = model_metadata(base)
    precision = str(meta.get("precision", "fp32"))
    if precision != "fp32":
        raise ConfigError(
            f"{source.name} is a {precision} model; variants are built from the FP32 export",
            hint="pass the FP32 .onnx that `onnxship export` wrote",
        )
    specs = list(specs) if specs else model_specs(base)
    output_names = [o.name for o in base.graph.output]
    name_unnamed_nodes(base)
    out_dir = config.out_dir or source.parent / "variants"
    reference, ref_name = _reference(model, source, specs, output_names, config.session)
    source_sha = file_sha256(source)

    cache: dict[str, list[dict[str, np.ndarray]]] = {}

    def calibration() -> list[dict[str, np.ndarray]]:
        if "batches" not in cache:
            cache["batches"] = calibration_batches(
                config.calibration, specs, samples=config.calibration_samples
            )
        return cache["batches"]

    # Bad data is a user error for the whole call, not a reason to reject one variant: check it up front.
    if "int8-static" in config.variants:
        calibration()
    if config.gate.data:
        from onnxship.runtime._data import open_source

        open_source(config.gate.data, specs)
    work = work_dir(out_dir, f"{source.stem}-optimize", what="variants to")  # gate files; removed below

    prepared: dict[bool, tuple[Any, list[str]]] = {}

    def prefix(simplified: bool) -> tuple[onnx.ModelProto, list[str]]:
        """The base every precision pass starts from (simplified once, shared by the variants)."""
        if simplified not in prepared:
            m = onnx.ModelProto()
            m.CopyFrom(base)
            notes: list[str] = []
            if simplified:
                out = PassSequence([SimplifyPass()]).call(m)
                m, notes = out.model, out.notes
                name_unnamed_nodes(m)
            prepared[simplified] = (m, notes)
        return prepared[simplified]

    results = []
    token = scratch_dir.set(work)  # the quantizer's temp files go there too
    try:
        for variant in config.variants:
            results.append(
                _one_variant(
                    variant,
                    config,
                    prefix,
                    calibration,
                    reference,
                    specs,
                    meta,
                    out_dir,
                    source,
                    source_sha,
                    work,
                )
            )
        result = OptimizeResult(
            source=source, source_size_bytes=source.stat().st_size, reference=ref_name, variants=results
        )
        result.report_path = atomic_write_json(out_dir / f"{source.stem}.optimize.json", result.to_dict())
    except OSError as exc:
        if isinstance(exc, DiskFullError) or not is_disk_full(exc):
            raise
        raise DiskFullError(
            f"cannot write the variants to {str(out_dir)!r}: no space left on device (no half-written variant "
            "was kept)",
            hint="free space there or pass --out-dir on a bigger disk, then run again",
        ) from None
    finally:
        scratch_dir.reset(token)
        force_rmtree(work)
    return result


def build_variants(
    onnx_path: Path, variants: tuple[str, ...], model: Any, specs: Sequence[TensorSpec]
) -> dict[str, dict[str, Any]]:
    """Build and gate the variants ``bench`` found no file for (``onnxship.runtime.bench``'s ``build_variants``)."""
    res = optimize(onnx_path, OptimizeConfig(variants=variants), model=model, specs=specs)
    found: dict[str, dict[str, Any]] = {}
    for vr in res.variants:
        found[vr.variant] = {
            "path": str(vr.path) if vr.passed else None,
            "size_bytes": vr.size_bytes,
            "source": "built by optimize()",
            "gate_passed": vr.passed,
            "reason": vr.reason,
            "excluded_nodes": vr.excluded_nodes,
        }
        if not vr.passed:
            found[vr.variant]["skipped"] = f"rejected by its gate: {vr.reason}"
    return found


def _one_variant(
    variant: str,
    config: OptimizeConfig,
    prefix: Callable[[bool], tuple[Any, list[str]]],
    calibration: Callable[[], list[dict[str, np.ndarray]]],
    reference: Runner,
    specs: list[TensorSpec],
    meta: dict[str, Any],
    out_dir: Path,
    source: Path,
    source_sha: str,
    work: Path,
) -> VariantResult:
    start = time.perf_counter()
    precision = VARIANTS[variant]
    res = VariantResult(variant=variant, precision=precision, status="rejected", path=None)
    res.passes = (["simplify"] if config.simplify or variant == "fp32" else []) + (
        [variant] if variant != "fp32" else []
    )
    builder = _Builder(variant, config, calibration)
    dest = out_dir / f"{source.stem}.{variant}.onnx"
    try:
        base, base_notes = prefix("simplify" in res.passes)
        if variant == "int8-dynamic":
            base = Int8DynamicPass.prepare(base)
        excluded = list(config.exclude_nodes)
        model, notes = _build(builder, base, excluded)
        notes = base_notes + notes
        gate = _judge(model, reference, specs, precision, config, meta, work)
        if (
            not gate.passed
            and precision == "int8"
            and config.exclude_sensitive
            and config.max_excluded > 0
            and not gate.hard_failure
        ):
            model, notes, gate, res.sensitivity, excluded = _exclude_sensitive(
                builder, base, excluded, gate, model, notes, reference, specs, config, meta, work, calibration
            )
            notes = base_notes + [n for n in notes if n not in base_notes]
    except (OptimizeError, ConfigError) as exc:
        res.reason = exc.message
        res.seconds = time.perf_counter() - start
        return res
    res.gate, res.notes, res.excluded_nodes = gate, notes, excluded
    _set_meta(
        model,
        {
            "precision": precision,
            "variant": variant,
            # what INT8 ranges were calibrated on: verify reports synthetic calibration as weak evidence
            "calibration": None
            if variant != "int8-static"
            else (
                str(config.calibration)
                if config.calibration
                else "synthetic (generated from the input specs)"
            ),
            "source_onnx": source.name,
            "source_sha256": source_sha,
            "optimize_passes": res.passes,
            "excluded_nodes": excluded,
            "gate": {
                "passed": gate.passed,
                "task": gate.task,
                "reason": gate.reason,
                "reference": "torch" if reference.name == "torch" else "onnxruntime-fp32",
            },
        },
    )
    if gate.passed:
        _save(model, dest)
        res.status, res.path = "kept", dest
    else:
        res.reason = gate.reason
        if dest.exists():  # an older kept variant of the same name no longer holds
            dest.unlink()
        if config.keep_rejected:
            res.path = out_dir / f"{source.stem}.{variant}.rejected.onnx"
            _save(model, res.path)
    res.size_bytes = res.path.stat().st_size if res.path else len(model.SerializeToString())
    res.seconds = time.perf_counter() - start
    return res


def _build(builder: _Builder, base: Any, exclude: Sequence[str]) -> tuple[Any, list[str]]:
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(base)
    p = builder.precision_pass(exclude)
    if p is None:
        return m, []
    out = PassSequence([p]).call(m)
    return out.model, out.notes


def _judge(
    model: Any,
    reference: Runner,
    specs: list[TensorSpec],
    precision: str,
    config: OptimizeConfig,
    meta: dict[str, Any],
    work: Path,
) -> GateResult:
    """Run the gate on the variant, saved in the run's work folder (under the output folder, see work_dir)."""
    from onnxship.runtime._engines import onnx_runner

    tmp = work / f"gate-{secrets.token_hex(4)}.onnx"
    try:
        import onnx

        onnx.save_model(model, str(tmp))
        candidate = onnx_runner(str(tmp), config.session)
        gate = run_gate(reference, candidate, specs, precision, config.gate, meta)
        gate.metrics["providers"] = list(candidate.providers)  # what actually ran the variant
        return gate
    finally:
        tmp.unlink(missing_ok=True)


def _exclude_sensitive(
    builder: _Builder,
    base: Any,
    excluded: list[str],
    gate: GateResult,
    model: Any,
    notes: list[str],
    reference: Runner,
    specs: list[TensorSpec],
    config: OptimizeConfig,
    meta: dict[str, Any],
    work: Path,
    calibration: Callable[[], list[dict[str, np.ndarray]]],
) -> tuple[Any, list[str], GateResult, list[NodeSensitivity], list[str]]:
    """Keep the 1, 2, 4, ... most sensitive nodes in float32 until the gate passes (or max_excluded is reached)."""

    def single(nodes: list[str]) -> Pass:
        p = builder.precision_pass(only=nodes)
        assert p is not None  # int8 variants always have a precision pass
        return p

    ranking = [s for s in rank_sensitivity(base, single, calibration()[:4]) if s.name not in excluded]
    first_reason = gate.reason
    k = 1
    tried: list[str] = []
    while k <= min(config.max_excluded, len(ranking)):
        extra = [s.name for s in ranking[:k]]
        tried = extra
        m, n = _build(builder, base, excluded + extra)
        g = _judge(m, reference, specs, VARIANTS[builder.variant], config, meta, work)
        if g.passed:
            n = [
                *n,
                f"kept {len(extra)} accuracy-sensitive node(s) in float32 to pass the gate: {extra} "
                f"(all-int8 failed: {first_reason})",
            ]
            return m, n, g, ranking, excluded + extra
        gate, model, notes = g, m, n
        if k == min(config.max_excluded, len(ranking)):
            break
        k = min(k * 2, config.max_excluded, len(ranking))
    gate.reason = (
        (
            f"{first_reason}; still failing with the {len(tried)} most sensitive node(s) kept in float32 "
            f"({tried})"
        )
        if tried
        else first_reason
    )
    return model, notes, gate, ranking, excluded

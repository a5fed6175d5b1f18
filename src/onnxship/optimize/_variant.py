"""One variant: its pass list, the build (with sensitive nodes kept in float32 when the gate asks), the gate run in
the work folder, and the save through a temp file.

DO NOT import torch or onnxruntime at module level.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxship._errors import ConfigError, OptimizeError
from onnxship._util import atomic_write
from onnxship.optimize._config import OptimizeConfig, VariantResult
from onnxship.optimize._gate import GateResult, run_gate
from onnxship.optimize._passes import (
    Fp16Pass,
    Int8DynamicPass,
    Int8StaticPass,
    Pass,
    PassSequence,
)
from onnxship.optimize._sensitivity import NodeSensitivity, rank_sensitivity
from onnxship.runtime._variants import VARIANTS
from onnxship.spec._inputs import TensorSpec

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from onnxship.runtime._runners import Runner


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

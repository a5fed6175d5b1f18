"""``onnxship.optimize``: an exported FP32 ONNX model in, re-verified variants (simplified, fp16, int8) out.

Every variant is built by a pass sequence, then judged by :func:`onnxship.optimize._gate.run_gate` against the
FP32 PyTorch model (or, without one, the FP32 ONNX model). A variant that fails its gate is not kept: its file is
deleted (or renamed ``*.rejected.onnx`` with ``keep_rejected``) and the reason is in the result.

DO NOT import torch or onnxruntime at module level.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxship import _progress
from onnxship._errors import ConfigError, DiskFullError, is_disk_full
from onnxship._util import atomic_write_json, force_rmtree, scratch_dir, work_dir
from onnxship.optimize._config import OptimizeConfig, OptimizeResult, VariantResult
from onnxship.optimize._passes import (
    PassSequence,
    SimplifyPass,
    name_unnamed_nodes,
)
from onnxship.optimize._variant import _one_variant
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
            shown = _progress.begin(f"variant {variant}")
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
            shown.close(ok=results[-1].passed)
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

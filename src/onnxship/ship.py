"""``onnxship.ship``: export (auto, gated) -> verify -> optimize variants (if configured) -> bundle -> report.

Everything is written into a hidden staging folder inside ``releases/<name>/`` and renamed into place only when the
bundle is complete and verified; ``latest`` moves after that. A failure at any step (or a kill) leaves the previous
releases and ``latest`` untouched.

DO NOT import torch at module level.

Size: over 400 lines on purpose: the ship verb is one transaction (staging folder, export, verify, variants,
bundle, rename); its steps read top to bottom.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxship import _progress
from onnxship._errors import ConfigError, VerificationError
from onnxship._util import check_name, verb_module
from onnxship.package._assets import AssetSpec, ModelSizes, PreparedAsset, prepare_assets
from onnxship.package._bundle import ReleaseWriter, embed_metadata
from onnxship.package._release import Release, current_latest
from onnxship.spec._config import ShipConfig

if TYPE_CHECKING:
    import torch

    from onnxship.export import ExportResult
    from onnxship.package._triton import TritonResult
    from onnxship.spec._inputs import TensorSpec
    from onnxship.spec._model import ModelSpec
    from onnxship.verify import VerifyReport

__all__ = ["ShipResult", "ship"]


@dataclass
class ShipResult:
    """A committed release and how it got there."""

    name: str
    version: str
    path: Path  # the release folder
    latest: Path | None  # releases/<name>/latest when it was moved
    passed: bool
    release: Release
    export: ExportResult
    report: VerifyReport  # what report.json / report.html hold
    assets: list[PreparedAsset] = field(default_factory=list)
    variants: list[dict[str, Any]] = field(
        default_factory=list
    )  # one entry per optimized variant (kept/rejected)
    triton: TritonResult | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "path": str(self.path),
            "latest": str(self.latest) if self.latest else None,
            "passed": self.passed,
            "model": str(self.release.model_path),
            "sha256": self.release.meta.get("onnx_sha256"),
            "report": str(self.path / "report.json"),
            "report_html": str(self.path / "report.html"),
            "golden": str(self.path / "golden.npz"),
            "verification": self.report.summary(),
            "assets": [a.to_dict() for a in self.assets],
            "variants": self.variants,
            "triton": self.triton.to_dict() if self.triton else None,
            "notes": self.notes,
            "export": {
                "strategy": self.export.strategy,
                "opset": self.export.opset,
                "static": self.export.static,
                "candidates": [c.to_dict() | {"parity": None} for c in self.export.candidates],
            },
            "seconds": round(self.seconds, 3),
        }


def _resolve_model(model: Any, cfg: ShipConfig) -> tuple[Any, ModelSpec | None]:
    from onnxship.spec._model import ModelSpec, parse_model_spec

    m = cfg.model
    if model is None:
        if not m.spec:
            raise ConfigError(
                "no model given", hint="pass --model file.py:factory or set model.spec in onnxship.yaml"
            )
        model = m.spec
    if isinstance(model, str):
        model = parse_model_spec(
            model, kwargs=dict(m.args), checkpoint=m.checkpoint, trust_checkpoint=m.trust_checkpoint
        )
    return model, model if isinstance(model, ModelSpec) else None


def _sizes(
    module: torch.nn.Module, golden_outputs: dict[str, Any], metadata: dict[str, Any]
) -> tuple[ModelSizes, ModelSizes]:
    from torch import nn

    emb = next((m.num_embeddings for m in module.modules() if isinstance(m, nn.Embedding)), None)
    first = next(iter(golden_outputs.values()), None)
    out = int(first.shape[-1]) if first is not None and first.ndim >= 1 else None
    vocab = ModelSizes(embedding=emb, output=out, declared=metadata.get("vocab_size"))
    labels = ModelSizes(output=out, declared=metadata.get("num_classes"))
    return vocab, labels


def _load_model(
    model: Any, spec: ModelSpec | None, inputs: list[str] | None, cfg: ShipConfig
) -> tuple[Any, str, list[str], dict[str, Any], Any]:
    """The module, its name, and the export defaults (config first, then the model module's ONNXSHIP_*)."""
    metadata = dict(cfg.export.metadata)
    output_names = cfg.export.output_names
    inputs = list(inputs or cfg.export.inputs or [])
    if spec is None:
        from onnxship.spec._model import ensure_module, to_cpu_eval

        module = to_cpu_eval(ensure_module(model, "the model argument"))
        return module, cfg.model.name or type(module).__name__.lower(), inputs, metadata, output_names
    default_inputs, default_names, default_meta = spec.export_defaults()
    inputs = inputs or default_inputs
    metadata = {**default_meta, **metadata}
    output_names = output_names or default_names
    loaded = spec.load()  # loaded once: the exported module is the reference (factories may not be seeded)
    metadata.setdefault("weights_sha256", loaded.weights_sha256)
    if spec.checkpoint:
        metadata.setdefault("checkpoint", str(spec.checkpoint))
    for k, v in loaded.checkpoint_meta.items():
        metadata.setdefault(k, v)
    return loaded.model, cfg.model.name or spec.default_name(), inputs, metadata, output_names


def _triton_config(cfg: ShipConfig) -> Any:
    from onnxship.package._triton import TritonConfig

    t = cfg.package.triton
    return (
        TritonConfig(
            repo=Path(t.repo),
            max_batch_size=t.max_batch_size,
            instances=t.instances,
            kind=t.kind,
            dynamic_batching=t.dynamic_batching,
        )
        if t.repo
        else None
    )


def _golden_point(specs: list[TensorSpec], samples: int) -> dict[str, int]:
    first = specs[0].dims[0] if specs and specs[0].dims else None
    if first is None or not first.dynamic or not all(s.dims and s.dims[0].name == first.name for s in specs):
        return {}
    top = first.max or samples
    return {str(first.name): max(1, min(samples, top))}


def ship(
    model: Any = None,
    *,
    inputs: list[str] | None = None,
    assets: list[AssetSpec] | None = None,
    config: ShipConfig | None = None,
    when: datetime | None = None,
) -> ShipResult:
    """Export, verify and bundle a model into ``releases/<name>/<name>-<UTC>-<gitsha7|nogit>/``.

    Args:
        model: an ``nn.Module``, a ``ModelSpec`` or ``"file.py:factory"`` (default: ``config.model.spec``).
        inputs: input specs (default: ``config.export.inputs``, then the model module's ``ONNXSHIP_INPUTS``).
        assets: extra ``AssetSpec``s (besides ``config.package.assets``).
        config: a ShipConfig (see ``load_ship_config``).
        when: release time (UTC, default now); the version tag is built from it.

    Raises:
        ExportError: no export candidate verified. VerificationError: the shipped file fails its check.
        PackagingError: bad assets, an unwritable releases folder, an existing version.

    Example:
        >>> result = onnxship.ship("examples/deeplog/model.py:build_model")  # doctest: +SKIP
        >>> result.path.name
        'deeplog-20261123-120000-ab12cd3'
    """
    from onnxship.export import ExportConfig, export
    from onnxship.runtime._runners import TorchRunner
    from onnxship.spec._binding import bind_inputs
    from onnxship.spec._inputs import sample_feeds
    from onnxship.verify import VerifyConfig, verify, write_golden
    from onnxship.verify._compare import PRECISION_TOLERANCES, Tolerance

    start = time.perf_counter()
    cfg = config or ShipConfig()
    model, spec = _resolve_model(model, cfg)
    # The name becomes releases/<name>/: refuse `..`, `.`, `a/b` before anything is loaded or written.
    if cfg.model.name is not None:
        check_name(cfg.model.name, "model name (--name / model.name / ONNXSHIP_MODEL_NAME)")
    elif spec is not None:
        check_name(spec.default_name(), "model name taken from the model file (pass --name)")
    asset_specs = [AssetSpec(k, Path(v)) for k, v in cfg.package.assets.items()] + list(assets or [])
    prepare_assets(
        asset_specs, portable=cfg.package.portable
    )  # fail fast on file-level problems, before export
    if cfg.optimize.variants:
        from onnxship.optimize import normalize_variant

        for v in cfg.optimize.variants:
            normalize_variant(v)  # an unknown variant fails before the export
    module, name, inputs, metadata, output_names = _load_model(model, spec, inputs, cfg)
    from onnxship._secrets import check_no_secrets

    check_no_secrets(
        metadata, "metadata keys"
    )  # the bundle's metadata is public: meta.json, the .onnx, MLflow
    if not inputs:
        raise ConfigError(
            "no input specs given and the model module defines no ONNXSHIP_INPUTS",
            hint="pass --input NAME:DIMS:DTYPE or set export.inputs in onnxship.yaml",
        )
    tolerance = None
    if cfg.verify.atol is not None or cfg.verify.rtol is not None:
        base = PRECISION_TOLERANCES["fp16" if cfg.export.fp16 else "fp32"]
        tolerance = Tolerance(
            cfg.verify.atol if cfg.verify.atol is not None else base.atol,
            cfg.verify.rtol if cfg.verify.rtol is not None else base.rtol,
        )
    export_config = ExportConfig(
        strategy=cfg.export.strategy,
        opsets=tuple(cfg.export.opsets) or None,  # None: each exporter's default opsets
        allow_static=cfg.export.allow_static,
        output_names=tuple(output_names) if output_names else None,
        fp16=cfg.export.fp16,
        tolerance=tolerance,
        metadata=metadata,
        seed=cfg.export.seed,
        allow_nonfinite=cfg.verify.allow_nonfinite,
    )
    triton_config = _triton_config(cfg)  # bad Triton options fail before the export
    notes: list[str] = []
    with ReleaseWriter(cfg.paths.releases, name, when=when, project=cfg.paths.project) as writer:
        if writer.cleaned:
            notes.append(f"removed {len(writer.cleaned)} staging folder(s) left by killed runs")
        result = export(module, inputs=inputs, out=writer.path, name=name, config=export_config)
        specs = list(result.inputs)
        if cfg.export.fp16:
            module = (
                module.half()
            )  # export() hands the module back in float32; the reference runs as exported
        runner = TorchRunner(
            module,
            bind_inputs(module, [s.name for s in specs]),
            output_names=list(result.metadata["output_names"]),
        )
        feeds = sample_feeds(specs, _golden_point(specs, cfg.verify.golden_samples), seed=cfg.verify.seed)
        ref = runner.infer(feeds)
        vocab_sizes, label_sizes = _sizes(module, ref, result.metadata)
        prepared = prepare_assets(
            asset_specs, vocab_sizes=vocab_sizes, label_sizes=label_sizes, portable=cfg.package.portable
        )
        for a in prepared:
            for fname, data in a.files.items():
                writer.write_bytes(f"assets/{fname}", data)
        from onnxship.onnxfile import file_sha256
        from onnxship.package._limits import SERVING_KEY, serving_limits

        release_meta = {
            "release_name": name,
            "release_version": writer.version,
            "git_sha": writer.sha,
            "released_at_utc": writer.when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "assets": {
                f"assets/{f}": file_sha256(writer.path / "assets" / f) for a in prepared for f in a.files
            },
            # the largest batch: declared by the input spec, verified by the sweep; every consumer reads this
            SERVING_KEY: serving_limits(result.metadata).to_dict(),
        }
        embed_metadata(result.path, release_meta)
        golden_path = write_golden(
            writer.path / "golden.npz",
            feeds,
            ref,
            {
                "model_name": name,
                "release": writer.version,
                "seed": cfg.verify.seed,
                "weights_sha256": result.metadata.get("weights_sha256"),
                "onnx_sha256": file_sha256(result.path),
            },
        )
        v = cfg.verify
        shown = _progress.begin("ship: verify")
        report = verify(
            result.path,
            model=module,
            golden=golden_path,
            inputs=specs,
            config=VerifyConfig(
                precision=str(result.metadata.get("precision") or ("fp16" if cfg.export.fp16 else "fp32")),
                tolerance=tolerance,
                mode=v.mode,
                sample_count=v.sample_count,
                task=v.task,
                data=v.data,
                seed=v.seed,
                allow_nonfinite=v.allow_nonfinite,
            ),
            candidates=[c.to_dict() for c in result.candidates],
            diagnostics=[d.to_dict() for d in result.diagnostics],
        )
        shown.close(ok=report.passed)
        if not report.passed:
            raise VerificationError(
                f"the shipped model does not match PyTorch: {report.failure_reason}",
                hint=(report.hint or "") + " (nothing was released)",
                report=report,
            )
        variants = _variants(cfg, result.path, module, specs, writer.path / "variants")
        from onnxship._util import atomic_write_json

        # Paths inside the bundle are relative to it: the staging folder's name does not survive the rename.
        report.model["onnx_path"] = result.path.name
        for p in (writer.path / "variants").glob("*.json"):
            atomic_write_json(p, _relative(json.loads(p.read_text(encoding="utf-8")), writer.path))
        # report.json: the verification report of the shipped file, plus one entry per optimized variant
        atomic_write_json(
            writer.path / "report.json", _relative({**report.to_dict(), "variants": variants}, writer.path)
        )
        with _progress.stage("ship: report.html"):
            report.write_html(writer.path / "report.html")
        if (
            triton_config is not None
        ):  # a config Triton would refuse fails the ship before anything is released
            from onnxship.package._triton import check_triton

            check_triton(
                Release(
                    writer.path,
                    {"name": name, "version": writer.version, "model_file": result.path.name},
                    json.loads(result.meta_path.read_text(encoding="utf-8")),
                ),
                triton_config,
            )
        passed = True
        release = writer.commit(
            model_file=result.path.name,
            passed=passed,
            update_latest=cfg.package.update_latest,
            extra={
                "verdict": "passed",
                "exporter": result.strategy,
                "opset": result.opset,
                "static": result.static,
                "assets": [a.name for a in prepared],
                "variants": [
                    {"name": v["variant"], "file": v["file"]} for v in variants if v["status"] == "kept"
                ],
            },
        )
    triton = None
    if triton_config is not None:
        from onnxship.package._triton import package_triton

        triton = package_triton(release.path, triton_config)
    latest = writer.name_dir / "latest" if writer.moved_latest else None
    if cfg.package.update_latest and not writer.moved_latest:
        notes.append(f"latest stays at {current_latest(writer.name_dir)}: it is newer than this release")
    return ShipResult(
        name=name,
        version=release.version,
        path=release.path,
        latest=latest,
        passed=True,
        release=release,
        export=result,
        report=report,
        assets=prepared,
        variants=variants,
        triton=triton,
        notes=notes,
        seconds=time.perf_counter() - start,
    )


def _relative(obj: Any, folder: Path) -> Any:
    """Strings that name files in the staging folder, made relative to the bundle."""
    prefixes = tuple({str(folder) + "/", str(folder.resolve()) + "/"})
    if isinstance(obj, str):
        for prefix in prefixes:
            if obj.startswith(prefix):
                return obj[len(prefix) :]
        return obj
    if isinstance(obj, dict):
        return {k: _relative(v, folder) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relative(v, folder) for v in obj]
    return obj


def _variants(
    cfg: ShipConfig, onnx_path: Path, module: Any, specs: list[TensorSpec], out_dir: Path
) -> list[dict[str, Any]]:
    """Optimized variants under variants/, each re-verified by the optimize stage; rejected ones are recorded."""
    if not cfg.optimize.variants:
        return []
    if cfg.export.fp16:
        raise ConfigError("optimize.variants needs the FP32 export", hint="drop export.fp16 or the variants")
    from onnxship.optimize import OptimizeConfig, optimize

    res = optimize(
        onnx_path,
        OptimizeConfig(variants=tuple(cfg.optimize.variants), out_dir=out_dir),
        model=module,
        specs=specs,
    )
    entries = []
    for v in res.variants:
        d = v.to_dict()
        d["file"] = f"variants/{v.path.name}" if v.path is not None and v.passed else None
        d["path"] = d["file"]
        entries.append(d)
    return entries


verb_module(__name__, "ship")

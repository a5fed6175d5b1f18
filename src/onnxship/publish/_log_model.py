"""``log_onnx_model``: an ONNX file (or a release onnxship wrote) logged to MLflow as a release, with the same checks
as ``onnxship publish``.

DO NOT import torch or mlflow at module level.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from onnxship._errors import CheckError, ConfigError
from onnxship._util import git_sha, utc_now
from onnxship.publish._api import notify_in_run, prepare_target
from onnxship.publish._bundle import BundleView
from onnxship.publish._checks import golden_check
from onnxship.publish._config import (
    PublishConfig,
    PublishResult,
    check_no_secrets,
)
from onnxship.publish._record import _triton_text, log_release
from onnxship.publish._trace import _check_kwargs, _publish_fields

__all__ = ["log_onnx_model"]


def log_onnx_model(
    experiment_name: str,
    onnx_model_path: str | Path,
    metadata: dict[str, Any] | None = None,
    *,
    golden: str | Path | None = None,
    max_batch_size: int | None = None,
    config: PublishConfig | None = None,
    **publish_options: Any,
) -> PublishResult:
    """Log an ONNX model from any framework: check the file, read its signature, verify it against a golden file
    (if given), run it at a few batch sizes, and log it with the user's metadata and the same checked Triton
    ``config.pbtxt`` as ``package triton`` into a new run of ``experiment_name``.

    Returns:
        PublishResult; ``onnx_uri`` (also ``str(result)``) is where the ONNX file was uploaded.

    Raises:
        CheckError: the file is missing, not ONNX, fails onnx.checker or does not load in onnxruntime.
        VerificationError: the model does not reproduce the golden outputs.

    Example:
        >>> log_onnx_model("tf-export", "model.onnx", {"framework": "tensorflow"})  # doctest: +SKIP
    """
    import onnx

    from onnxship.inspect import load_onnx_checked
    from onnxship.onnxfile import external_data_files, file_sha256
    from onnxship.package._release import version_tag
    from onnxship.publish import _mlflow
    from onnxship.verify import OnnxRuntimeRunner

    _check_kwargs(
        publish_options,
        ["experiment_name", "onnx_model_path", "metadata", "golden", "max_batch_size"],
        "log_onnx_model()",
    )
    if max_batch_size is not None:
        publish_options["triton_max_batch_size"] = max_batch_size
    metadata = dict(metadata or {})
    check_no_secrets(metadata, "metadata keys")
    if not experiment_name or not str(experiment_name).strip():
        raise ConfigError("experiment_name is empty", hint="e.g. log_onnx_model('tf-export', 'model.onnx')")
    base = {f: getattr(config, f) for f in _publish_fields()} if config else {}
    cfg = PublishConfig(**{**base, **publish_options, "experiment": experiment_name})
    path = Path(onnx_model_path)
    proto = load_onnx_checked(path)
    try:
        onnx.checker.check_model(str(path))
    except (onnx.checker.ValidationError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckError(
            f"{path.name} fails onnx.checker: {first[:300]}",
            hint="re-export the model; check the exporter's opset",
        ) from None
    runner = OnnxRuntimeRunner(path)  # loads in onnxruntime (CheckError/OnnxshipError otherwise)
    check = golden_check(path, Path(golden)) if golden is not None else None
    name = re.sub(r"[^A-Za-z0-9_-]", "_", path.stem) or "model"
    meta = {"model_name": name, "onnx_sha256": file_sha256(path), **{k: v for k, v in metadata.items()}}
    files = [path.name] + [p.name for p in external_data_files(path, proto)]
    version = version_tag(name, utc_now(), git_sha())
    view = BundleView(
        path=path.parent.resolve(),
        name=name,
        version=version,
        model_path=path,
        meta=meta,
        golden_path=Path(golden) if golden else None,
        report=None,
        passed=None,
        only=[Path(f) for f in files],
    )
    triton_release = None
    if cfg.triton_config:
        triton_release = _own_release(path) or _file_release(
            path, proto, name, version, Path(golden) if golden else None, runner, max_batch_size
        )
    if triton_release is not None and cfg.triton_max_batch_size:
        _triton_text(
            view, cfg, triton_release
        )  # a max batch size the model does not run at fails before the run
    target, cfg = prepare_target(cfg)
    with _mlflow.tracking(target):
        exp_id = _mlflow.ensure_experiment(experiment_name, target)
        _mlflow.check_artifact_store(exp_id, experiment_name)
        with _mlflow.active_run(exp_id, cfg.run_name or name, {"onnxship.source": "log_onnx_model"}) as run:
            if metadata:
                _mlflow.mlflow_module().log_dict(metadata, "metadata.json")
            result = log_release(
                view,
                cfg,
                target,
                check,
                run,
                experiment_name,
                source="log_onnx_model",
                triton_release=triton_release,
            )
            notify_in_run(result, cfg)
    return result


def _own_release(path: Path) -> Any:
    """The onnxship release the file is the model of (its verified signature then makes the Triton config)."""
    from onnxship._errors import OnnxshipError
    from onnxship.package._release import MANIFEST, read_release

    if not (path.parent / MANIFEST).is_file():
        return None
    try:
        rel = read_release(path.parent)
    except OnnxshipError:
        return None
    return rel if rel.model_path.resolve() == path.resolve() else None


def _file_release(
    path: Path,
    proto: Any,
    name: str,
    version: str,
    golden: Path | None,
    runner: Any,
    max_batch_size: int | None,
) -> Any:
    """A Release view of a bare ONNX file for the Triton config: input specs from the declared graph (sizes from the
    golden inputs when given), the batch dim verified by running the model at batch 1, 2 (and max_batch_size) in
    onnxruntime. None when an input dtype has no spec (the Triton tag then says why)."""
    from dataclasses import dataclass

    from onnxship.onnxfile import declared_io
    from onnxship.package._release import Release
    from onnxship.spec._inputs import DTYPES, DimSpec, TensorSpec, sample_feeds

    @dataclass
    class _FileRelease(Release):
        golden: Path | None = None

        @property
        def golden_path(self) -> Path | None:  # type: ignore[override]
            return self.golden

    gold_in: dict[str, Any] = {}
    if golden is not None:
        from onnxship.verify import read_golden

        gold_in = dict(read_golden(golden).inputs)
    io = declared_io(proto)
    specs = []
    for entry in io["inputs"]:
        if entry["dtype"] not in DTYPES:
            return None
        g = gold_in.get(entry["name"])
        dims = []
        for axis, d in enumerate(entry["shape"]):
            if isinstance(d, int) and d > 0:
                dims.append(DimSpec(value=d))
                continue
            value = int(g.shape[axis]) if g is not None and g.ndim == len(entry["shape"]) else 1
            dim_name = (
                d if isinstance(d, str) and d else ("batch" if axis == 0 else f"{entry['name']}_{axis}")
            )
            dims.append(DimSpec(value=max(1, value), name=dim_name))
        spec = TensorSpec(name=entry["name"], dims=tuple(dims), dtype=entry["dtype"])
        if spec.is_integer:
            spec = spec.with_range(0, 1, "zeros: ids valid for any vocabulary")
        specs.append(spec)
    first = specs[0].dims[0] if specs and specs[0].dims else None
    verified: list[dict[str, int]] = []
    if first is not None and first.dynamic:
        batch = str(first.name)
        for size in sorted({1, 2, int(first.value), *([max_batch_size] if max_batch_size else [])}):
            feeds = sample_feeds(specs, {batch: size})
            try:
                outs = runner.infer(feeds)
            except Exception:  # noqa: BLE001 - a size the model does not run at is simply not verified
                continue
            if all(getattr(o, "ndim", 0) >= 1 and o.shape[0] == size for o in outs.values()):
                verified.append({batch: size})
    manifest = {"name": name, "version": version, "model_file": path.name}
    meta = {"inputs": [s.to_dict() for s in specs], "verified_dims": verified}
    return _FileRelease(path=path.parent.resolve(), manifest=manifest, meta=meta, golden=golden)

"""What one MLflow run records for a release: parameters from the sidecar, metrics from report.json, the io
record, the artifacts (model, bundle files, Triton config) and the registered model version.

DO NOT import mlflow at module level (``_mlflow`` imports it inside each call).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

from onnxship._errors import PublishError
from onnxship._version import __version__
from onnxship.package._limits import serving_limits
from onnxship.publish._bundle import BundleView
from onnxship.publish._checks import GoldenCheck, _verdict
from onnxship.publish._config import (
    PublishConfig,
    PublishResult,
    TrackingTarget,
    looks_secret,
    mask_url,
)

__all__ = ["PARAM_PREFIX", "log_release"]

# Sidecar fields that are logged elsewhere (inputs, outputs, tags) or are not parameters.
_META_SKIP = {
    "inputs",
    "outputs",
    "output_names",
    "dynamic_axes",
    "verified_dims",
    "serving",
    "candidates",
    "dim_fixes",
    "diagnostics",
    "notes",
    "onnx_sha256",
    "git_sha",
    "onnxship_version",
    "model_name",
    "exported_at_utc",
    "onnx_file",
    "size_bytes",
    "output_names_from",
}


PARAM_PREFIX = "onnxship."


def _params(view: BundleView, io: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """onnxship's run params, every key under ``onnxship.`` (the user's own ``precision``/``name`` never clash)."""
    meta = view.meta
    params: dict[str, str] = {"name": view.name, "version_tag": view.version}
    for key in ("exporter", "opset", "precision", "static"):
        if key in meta:
            params[key] = str(meta[key])
    params["max_batch"] = str(serving_limits(meta).max_batch)
    if not meta.get("inputs"):
        for inp in io["inputs"]:
            shape = " x ".join(str(d) if d is not None else "?" for d in inp["shape"])
            params[f"input.{inp['name']}"] = f"{shape} : {inp['dtype']}"
    for spec in meta.get("inputs") or []:
        if isinstance(spec, dict) and "name" in spec:
            dims = spec.get("dims") or []
            text = " x ".join(
                (f"{d['name']}={d['value']}" + (f"..{d['max']}" if d.get("max") else ""))
                if d.get("name")
                else str(d.get("value"))
                for d in dims
            ) or str(spec.get("shape"))
            params[f"input.{spec['name']}"] = f"{text} : {spec.get('dtype')}"
    for out in io["outputs"]:
        shape = " x ".join(str(d) if d is not None else "?" for d in out["shape"])
        params[f"output.{out['name']}"] = f"{shape} : {out['dtype']}"
    for key, value in meta.items():
        if (
            key in _META_SKIP
            or key in params
            or not isinstance(value, (str, int, float, bool))
            or value is None
        ):
            continue
        if looks_secret(key):
            continue  # a secret-looking key is never logged
        params[f"meta.{key}"] = mask_url(str(value))[:500]  # a bundle from before ship refused such URLs
    if meta.get("output_names_from"):
        params["output_names_from"] = str(meta["output_names_from"])
    from onnxship.publish._mlflow import sanitize_key

    return {sanitize_key(PARAM_PREFIX + k): v for k, v in params.items()}


# Sections of report.json (onnxship.verify-report/1) that hold verification numbers; the rest is context.
_REPORT_METRIC_SECTIONS = (
    "passed",
    "worst_output",
    "compare",
    "outputs",
    "shapes",
    "task_metrics",
    "tasks",
    "variants",
    "verification",
    "timing",
)


def _report_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The verification numbers of report.json (per output, per sweep point, per task and per variant)."""
    from onnxship.publish._mlflow import flatten_metrics

    sections = {k: report[k] for k in _REPORT_METRIC_SECTIONS if k in report}
    if len(sections) <= 1:  # an unknown report layout: everything but the export story
        sections = {k: v for k, v in report.items() if k != "export"}
    return flatten_metrics(sections, "report")


def log_release(
    view: BundleView,
    config: PublishConfig,
    target: TrackingTarget,
    check: GoldenCheck | None,
    run: Any,
    exp_name: str,
    *,
    source: str,
    pytorch_model: Any = None,
    triton_release: Any = None,
) -> PublishResult:
    """Log params, metrics, tags, bundle files, the Triton config and the model(s) into the active run ``run``.

    The ONNX file is stored once: in the logged MLflow model when ``config.log_model``, else in ``bundle/``.
    ``pytorch_model`` (trace_pytorch) is logged with ``mlflow.pytorch.log_model`` when ``config.log_pytorch``.
    """
    import onnx

    from onnxship.onnxfile import declared_io
    from onnxship.publish import _mlflow

    mlflow = _mlflow.mlflow_module()
    io = declared_io(onnx.load(str(view.model_path), load_external_data=False))
    verdict = _verdict(view, check)
    params = _params(view, io)
    metrics: dict[str, float] = {}
    if check is not None:
        metrics.update(check.metrics())
    if view.report:
        metrics.update(_report_metrics(view.report))
    tags = {
        "onnxship.version": __version__,
        "onnxship.version_tag": view.version,
        "onnxship.model_name": view.name,
        "onnxship.git_sha": str(view.meta.get("git_sha", "nogit")),
        "onnxship.verdict": verdict,
        "onnxship.onnx_sha256": str(view.meta.get("onnx_sha256", "")),
        **config.tags,
    }
    result = PublishResult(
        name=view.name,
        version=view.version,
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        experiment_name=exp_name,
        tracking_uri=target.display,
        artifact_uri=run.info.artifact_uri,
        model_uri=None,
        verdict=verdict,
        params=params,
        metrics=metrics,
        tags=tags,
        io=_io_record(io, view.meta),
        model_id=os.environ.get("MODEL_ID", "").strip() or None,
        source=source,
    )
    with _mlflow.translate_errors(target, f"log release {view.version}"):
        _log_release(mlflow, view, config, check, result, pytorch_model, triton_release)
    return result


def _io_record(io: dict[str, list[dict[str, Any]]], meta: dict[str, Any]) -> dict[str, Any]:
    """Inputs/outputs with dtype, dims (-1 dynamic) and dim names, from the graph and the verified input specs."""
    specs = {s["name"]: s for s in meta.get("inputs") or [] if isinstance(s, dict) and "name" in s}

    def one(entry: dict[str, Any]) -> dict[str, Any]:
        shape = list(entry.get("shape") or [])
        spec_dims = (specs.get(entry["name"]) or {}).get("dims") or []
        if len(spec_dims) == len(shape):  # the verified spec says which axes are dynamic
            dims = [-1 if d.get("name") else int(d.get("value")) for d in spec_dims]
            names = [d.get("name") or None for d in spec_dims]
        else:
            dims = [d if isinstance(d, int) and d >= 0 else -1 for d in shape]
            names = [d if isinstance(d, str) else None for d in shape]
        return {
            "name": entry["name"],
            "dtype": entry.get("dtype", "unknown"),
            "dims": dims,
            "dim_names": names,
        }

    return {"inputs": [one(e) for e in io["inputs"]], "outputs": [one(e) for e in io["outputs"]]}


def _log_release(
    mlflow: Any,
    view: BundleView,
    config: PublishConfig,
    check: GoldenCheck | None,
    result: PublishResult,
    pytorch_model: Any,
    triton_release: Any,
) -> None:
    from onnxship.onnxfile import external_data_files
    from onnxship.publish import _mlflow

    mlflow.log_params(result.params)
    if result.metrics:
        mlflow.log_metrics(result.metrics)
    mlflow.set_tags(result.tags)
    model_rel = view.model_path.resolve().relative_to(view.path.resolve())
    model_files = {model_rel} | {
        p.resolve().relative_to(view.path.resolve()) for p in external_data_files(view.model_path)
    }
    for rel in view.files():
        if config.log_model and rel in model_files:
            continue  # stored once: the logged model holds it
        parent = rel.parent.as_posix()
        mlflow.log_artifact(
            str(view.path / rel), artifact_path="bundle" if parent == "." else f"bundle/{parent}"
        )
    result.onnx_uri = f"{result.artifact_uri}/bundle/{model_rel.as_posix()}"
    if config.triton_config:
        result.tags["onnxship.triton"] = _log_triton_config(view, config, triton_release)
        mlflow.set_tag("onnxship.triton", result.tags["onnxship.triton"])
        if not result.tags["onnxship.triton"].startswith("unavailable"):
            result.triton_config = result.tags["onnxship.triton"]
    golden = check.golden if check is not None else None
    signature = _mlflow.signature_from_io(
        {"inputs": result.io["inputs"], "outputs": result.io["outputs"]}, golden
    )
    if config.log_model:
        info = _mlflow.log_onnx(
            view.model_path,
            signature=signature,
            input_example=dict(golden.inputs) if golden is not None else None,
            metadata={
                "onnxship_version_tag": view.version,
                "onnxship_name": view.name,
                "onnx_sha256": str(view.meta.get("onnx_sha256", "")),
                # the release's largest batch, the same record Triton's max_batch_size and serve read
                "onnxship_serving": serving_limits(view.meta).to_dict(),
            },
            registered_model_name=config.register,
        )
        result.model_uri = info.model_uri
        result.onnx_uri = f"{_mlflow.model_artifact_location(info)}/model.onnx"
        if config.register:
            result.registered_model = config.register
            result.model_version = str(info.registered_model_version)
            if config.alias:
                _mlflow.set_alias(config.register, config.alias, result.model_version)
                result.alias = config.alias
    if pytorch_model is not None and config.log_pytorch:
        try:
            info = _mlflow.log_pytorch(
                pytorch_model, signature=signature, metadata={"onnxship_version_tag": view.version}
            )
        except (
            pickle.PickleError,
            TypeError,
            AttributeError,
            ValueError,
            RecursionError,
        ) as exc:  # user code
            if type(exc).__module__.startswith(("botocore", "boto3", "mlflow")):
                raise
            raise PublishError(
                f"the trained {type(pytorch_model).__name__} cannot be saved by mlflow.pytorch.log_model "
                f"({type(exc).__name__}: {str(exc)[:200]})",
                hint="pass log_pytorch=False to log the ONNX model only, or make the module picklable",
            ) from None
        result.pytorch_model_uri = info.model_uri
        mlflow.set_tag("onnxship.pytorch_model", info.model_uri)
        result.tags["onnxship.pytorch_model"] = info.model_uri
    mlflow.set_tag("onnxship.onnx_uri", result.onnx_uri)
    result.tags["onnxship.onnx_uri"] = result.onnx_uri


def _triton_text(view: BundleView, config: PublishConfig, release: Any = None) -> tuple[str | None, str]:
    """The Triton config.pbtxt of ``onnxship package triton`` (rendered from the verified io signature and checked
    against Triton's ModelConfig) and the tag value: its artifact path, or why there is none.

    A model that Triton's config cannot express is recorded in the tag (the publish goes on): the ONNX model is
    still valid for every other runtime. An explicit max batch size that cannot be honoured is an error.
    """
    from onnxship._errors import OnnxshipError, PackagingError
    from onnxship.package._release import read_release
    from onnxship.package._triton import TritonConfig, check_triton

    try:
        rel = release if release is not None else read_release(view.path)
        if rel is None:
            return None, "unavailable: an input dtype has no Triton/ONNX spec"
        cfg = TritonConfig(repo=Path("."), max_batch_size=config.triton_max_batch_size)
        text = check_triton(rel, cfg)
    except PackagingError as exc:
        if config.triton_max_batch_size:
            raise
        return None, f"unavailable: {exc.message}"[:500]
    except OnnxshipError as exc:
        return None, f"unavailable: {exc.message}"[:500]
    return text, f"triton/{view.name}/config.pbtxt"


def _log_triton_config(view: BundleView, config: PublishConfig, release: Any = None) -> str:
    """Log the release's Triton config.pbtxt as ``triton/<name>/config.pbtxt``; returns the tag value."""
    from onnxship.publish._mlflow import mlflow_module

    text, tag = _triton_text(view, config, release)
    if text is not None:
        mlflow_module().log_text(text, tag)
    return tag

"""``onnxship.publish``: a release bundle in, an MLflow run (+ registered model version, + notification) out."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from onnxship._errors import PublishError, VerificationError
from onnxship._util import utc_now
from onnxship._version import __version__
from onnxship.package._limits import serving_limits
from onnxship.publish._bundle import BundleView, open_bundle
from onnxship.publish._config import (
    PublishConfig,
    PublishResult,
    TrackingTarget,
    experiment_name,
    looks_secret,
    mask_url,
    resolve_tracking,
)

__all__ = ["GoldenCheck", "golden_check", "log_release", "notify_published", "publish", "publish_view"]

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
}


class GoldenCheck:
    """The bundle's ONNX model re-run on golden.npz with onnxruntime, compared with the stored PyTorch outputs."""

    def __init__(self, golden: Any, stats: list[Any]) -> None:
        self.golden = golden
        self.stats = stats

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.stats)

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {"golden.passed": float(self.passed)}
        for s in self.stats:
            for key in ("max_abs", "max_rel", "mse", "cosine", "mismatch_count"):
                out[f"golden.{s.name}.{key}"] = float(getattr(s, key))
        return out


def golden_check(model_path: Path, golden_path: Path, precision: str = "fp32") -> GoldenCheck:
    """Run ``golden_path``'s inputs through the ONNX model and compare with its outputs (the precision's tolerance).

    Raises:
        VerificationError: the model does not reproduce the golden outputs.
    """
    from onnxship.verify import PRECISION_TOLERANCES, OnnxRuntimeRunner, compare_outputs, read_golden

    golden = read_golden(golden_path)
    got = OnnxRuntimeRunner(model_path).infer(dict(golden.inputs))
    tol = PRECISION_TOLERANCES.get(precision, PRECISION_TOLERANCES["fp32"])
    check = GoldenCheck(golden, compare_outputs(golden.outputs, got, tol))
    if not check.passed:
        worst = "; ".join(f"{s.name}: {s.reason}" for s in check.stats if not s.passed)
        raise VerificationError(
            f"{model_path.name} does not reproduce {golden_path.name} ({worst})",
            hint="the bundle is damaged or was built from another model: ship a new release",
        )
    return check


def publish(bundle: str | Path, config: PublishConfig | None = None, **overrides: Any) -> PublishResult:
    """Publish a release bundle to MLflow: params, metrics, tags, artifacts, the ONNX model (+ registry, + notify).

    Args:
        bundle: ``releases/<name>/<version>``, ``releases/<name>/latest`` or ``releases/<name>``.
        config: a PublishConfig; keyword overrides replace its fields (``register="deeplog"``).

    Raises:
        PackagingError: not a release, or a file changed since it was written.
        VerificationError: the release failed its gate, or its model no longer reproduces golden.npz.
        PublishError: the tracking server is unreachable (in seconds), logging failed (run marked FAILED), or the
            notification failed (the run is recorded; the error carries ``result``).

    Example:
        >>> result = onnxship.publish.publish("releases/deeplog/latest", register="deeplog", alias="champion")  # doctest: +SKIP
    """
    config = replace(config or PublishConfig(), **overrides) if overrides else (config or PublishConfig())
    return publish_view(open_bundle(bundle), config)


def publish_view(view: BundleView, config: PublishConfig) -> PublishResult:
    """Publish an opened bundle in a new run of its experiment."""
    from onnxship.publish import _mlflow

    check = _pre_checks(view, config)
    _mlflow.ensure_no_active_run()
    target = resolve_tracking(config.tracking_uri, config.store_dir)
    _mlflow.check_reachable(target, config.connect_timeout)
    exp_name = experiment_name(view.name, config.experiment)
    with _mlflow.tracking(target):
        exp_id = _mlflow.ensure_experiment(exp_name, target)
        with _mlflow.active_run(
            exp_id, config.run_name or view.version, {"onnxship.source": "publish"}
        ) as run:
            result = log_release(view, config, target, check, run, exp_name)
    return notify_published(result, config, target)


def _pre_checks(view: BundleView, config: PublishConfig) -> GoldenCheck | None:
    if view.passed is False:
        raise VerificationError(
            f"release {view.version} failed its verification gate; it is not published",
            hint="fix the model and ship a new release (see its report.json)",
        )
    if config.verify_golden and view.golden_path is not None:
        return golden_check(view.model_path, view.golden_path, str(view.meta.get("precision", "fp32")))
    return None


def _verdict(view: BundleView, check: GoldenCheck | None) -> str:
    report_passed = (view.report or {}).get("passed")
    if view.passed is False or report_passed is False:
        return "failed"
    if view.passed or report_passed is True or (check is not None and check.passed):
        return "passed"
    return "unknown"


def _params(view: BundleView, io: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
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
    from onnxship.publish._mlflow import sanitize_key

    return {sanitize_key(k): v for k, v in params.items()}


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
) -> PublishResult:
    """Log params, metrics, tags, bundle files and the ONNX model into the active run ``run``."""
    import onnx

    from onnxship.export._onnxfile import declared_io
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
    with _mlflow.translate_errors(target, f"log release {view.version}"):
        return _log_release(
            mlflow, view, config, target, check, run, exp_name, io, verdict, params, metrics, tags
        )


def _log_release(
    mlflow: Any,
    view: BundleView,
    config: PublishConfig,
    target: TrackingTarget,
    check: GoldenCheck | None,
    run: Any,
    exp_name: str,
    io: dict[str, list[dict[str, Any]]],
    verdict: str,
    params: dict[str, str],
    metrics: dict[str, float],
    tags: dict[str, str],
) -> PublishResult:
    from onnxship.publish import _mlflow

    mlflow.log_params(params)
    if metrics:
        mlflow.log_metrics(metrics)
    mlflow.set_tags(tags)
    for rel in view.files():
        parent = rel.parent.as_posix()
        mlflow.log_artifact(
            str(view.path / rel), artifact_path="bundle" if parent == "." else f"bundle/{parent}"
        )
    if config.triton_config and (view.path / "release.json").is_file():
        tags["onnxship.triton"] = _log_triton_config(view)
        mlflow.set_tag("onnxship.triton", tags["onnxship.triton"])
    model_uri = version = None
    if config.log_model:
        golden = check.golden if check is not None else None
        info = _mlflow.log_onnx(
            view.model_path,
            signature=_mlflow.signature_from_io(io, golden),
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
        model_uri = info.model_uri
        if config.register:
            version = str(info.registered_model_version)
            if config.alias:
                _mlflow.set_alias(config.register, config.alias, version)
    return PublishResult(
        name=view.name,
        version=view.version,
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        experiment_name=exp_name,
        tracking_uri=target.display,
        artifact_uri=run.info.artifact_uri,
        model_uri=model_uri,
        verdict=verdict,
        registered_model=config.register if version else None,
        model_version=version,
        alias=config.alias if version else None,
        params=params,
        metrics=metrics,
        tags=tags,
    )


def _log_triton_config(view: BundleView) -> str:
    """Build the Triton repository entry in a temp folder and log its config.pbtxt; returns the tag value.

    A model that Triton's config cannot express is recorded in the tag (the publish goes on): the ONNX model and
    the bundle are still valid for every other runtime.
    """
    import tempfile

    from onnxship._errors import OnnxshipError
    from onnxship.package._triton import TritonConfig, package_triton
    from onnxship.publish._mlflow import mlflow_module

    with tempfile.TemporaryDirectory(prefix="onnxship-triton-") as tmp:
        try:
            result = package_triton(view.path, TritonConfig(repo=Path(tmp) / "repo"))
        except OnnxshipError as exc:
            return f"unavailable: {exc.message}"[:500]
        mlflow_module().log_artifact(str(result.config_path), artifact_path=f"triton/{result.model_name}")
    return f"triton/{result.model_name}/config.pbtxt"


def _event(result: PublishResult) -> dict[str, Any]:
    key = {k: v for k, v in result.metrics.items() if k.startswith("golden.")}
    return {
        "event": "onnxship.model.published",
        "model_name": result.name,
        "version_tag": result.version,
        "verdict": result.verdict,
        "run_id": result.run_id,
        "experiment": result.experiment_name,
        "tracking_uri": result.tracking_uri,
        "artifact_uri": result.artifact_uri,
        "model_uri": result.model_uri,
        "registered_model": result.registered_model,
        "model_version": result.model_version,
        "alias": result.alias,
        "metrics": key,
        "published_at_utc": utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def notify_published(result: PublishResult, config: PublishConfig, target: TrackingTarget) -> PublishResult:
    """Send the notification for a recorded run; on failure tag the run and raise PublishError carrying ``result``."""
    if config.notify is None:
        return result
    from onnxship.publish import _mlflow
    from onnxship.publish._notify import notify

    try:
        result.notification = notify(_event(result), config.notify)
    except PublishError as exc:
        with _mlflow.tracking(target):
            _mlflow.mlflow_module().MlflowClient().set_tag(result.run_id, "onnxship.notify", "failed")
        err = PublishError(
            f"{exc.message} (run {result.run_id} of experiment {result.experiment_name!r} is "
            "recorded; only the notification failed)",
            hint=exc.hint,
        )
        err.result = result  # type: ignore[attr-defined]
        raise err from None
    with _mlflow.tracking(target):
        _mlflow.mlflow_module().MlflowClient().set_tag(
            result.run_id, "onnxship.notify", result.notification.kind
        )
    return result

"""``onnxship.publish``: a release bundle in, an MLflow run (+ registered model version, + notification) out.

The checks before a run are in ``_checks.py``; what a run records in ``_record.py``; the event in ``build_event``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from onnxship._errors import PublishError
from onnxship._util import utc_now
from onnxship.publish._bundle import BundleView, open_bundle
from onnxship.publish._checks import GoldenCheck, _pre_checks, golden_check
from onnxship.publish._config import (
    NotifyConfig,
    PublishConfig,
    PublishResult,
    TrackingTarget,
    experiment_name,
    local_store_line,
    notify_from_env,
    require_remote,
    resolve_tracking,
)
from onnxship.publish._record import _triton_text, log_release

__all__ = [
    "GoldenCheck",
    "build_event",
    "golden_check",
    "log_release",
    "notify_in_run",
    "prepare_target",
    "publish",
    "publish_view",
]

_log = logging.getLogger("onnxship.publish")


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
    if config.triton_config and config.triton_max_batch_size:
        # an explicit max batch size the release cannot honour fails before the run
        _triton_text(view, config)
    target, config = prepare_target(config)
    exp_name = experiment_name(view.name, config.experiment)
    with _mlflow.tracking(target):
        exp_id = _mlflow.ensure_experiment(exp_name, target)
        _mlflow.check_artifact_store(exp_id, exp_name)
        with _mlflow.active_run(
            exp_id, config.run_name or view.version, {"onnxship.source": "publish"}
        ) as run:
            result = log_release(view, config, target, check, run, exp_name, source="publish")
            notify_in_run(result, config)
    return result


def prepare_target(config: PublishConfig) -> tuple[TrackingTarget, PublishConfig]:
    """Everything checked before a run opens (and before any training): no active run, the tracking store
    (``ONNXSHIP_REQUIRE_REMOTE``; a local store is announced in one line), a remote server's reachability, the
    notification target (``ONNXSHIP_NOTIFY_URL`` when ``notify`` is not given; its headers and host).

    Returns the target and the config with ``notify`` resolved.
    """
    from onnxship.publish import _mlflow
    from onnxship.publish._notify import preflight

    _mlflow.ensure_no_active_run()
    target = resolve_tracking(config.tracking_uri, config.store_dir)
    require_remote(target)
    line = local_store_line(target)
    if line:
        _log.warning(line)
    notify = config.notify if config.notify is not None else notify_from_env()
    if notify is not None:
        preflight(notify)
    _mlflow.check_reachable(target, config.connect_timeout)  # (creates a local store's folder)
    return target, replace(config, notify=notify)


def build_event(result: PublishResult) -> dict[str, Any]:
    """The notification message (``notification.schema.json``, ``onnxship.notification/1``)."""
    from onnxship.publish._notify import NOTIFICATION_SCHEMA

    golden = result.metrics.get("golden.passed")
    return {
        "schema": NOTIFICATION_SCHEMA,
        "event": "onnxship.model.published",
        "message_id": str(uuid.uuid4()),
        "published_at_utc": utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": result.source,
        "run_id": result.run_id,
        "experiment_id": str(result.experiment_id),
        "experiment": result.experiment_name,
        "tracking_uri": result.tracking_uri,
        "artifact_uri": result.artifact_uri,
        "train_id": result.model_id,
        "model": {
            "name": result.name,
            "version": result.model_version or result.version,
            "version_tag": result.version,
            "uri": result.onnx_uri,
            "onnx_sha256": result.tags.get("onnxship.onnx_sha256", ""),
            "registered_name": result.registered_model,
            "registered_version": result.model_version,
            "alias": result.alias,
            "mlflow_uri": result.model_uri,
            "pytorch_uri": result.pytorch_model_uri,
            "triton_config": result.triton_config,
        },
        "io": result.io,
        "verification": {
            "verdict": result.verdict,
            "golden_passed": None if golden is None else bool(golden),
            "metrics": {k: v for k, v in result.metrics.items() if k.startswith("golden.")},
        },
    }


def notify_in_run(result: PublishResult, config: PublishConfig) -> PublishResult:
    """Send the notification while the run is still open: a failure (after the bounded retries) raises
    PublishError naming the broker/webhook, and the run ends FAILED; ``err.result`` holds what was logged."""
    if config.notify is None:
        return result
    from onnxship.publish import _mlflow
    from onnxship.publish._notify import notify

    mlflow = _mlflow.mlflow_module()
    notify_config = config.notify if isinstance(config.notify, NotifyConfig) else NotifyConfig(config.notify)
    try:
        result.notification = notify(build_event(result), notify_config)
    except PublishError as exc:
        mlflow.set_tag("onnxship.notify", "failed")
        err = PublishError(
            f"{exc.message} (run {result.run_id} of experiment {result.experiment_name!r} is marked FAILED)",
            hint=exc.hint,
        )
        err.result = result  # type: ignore[attr-defined]
        raise err from None
    mlflow.set_tag("onnxship.notify", result.notification.kind)
    result.tags["onnxship.notify"] = result.notification.kind
    return result

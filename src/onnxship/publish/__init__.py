"""Publish: MLflow runs and registry (S3/MinIO artifacts), ``@trace_pytorch``, ``log_onnx_model``, notifications.

Importing this package imports neither mlflow, torch nor pika.
"""

from onnxship.publish._api import build_event, publish
from onnxship.publish._config import (
    NotifyConfig,
    NotifyResult,
    PublishConfig,
    PublishResult,
    TrackingTarget,
    resolve_tracking,
)
from onnxship.publish._log_model import log_onnx_model
from onnxship.publish._notify import NOTIFICATION_SCHEMA, notification_schema, notify
from onnxship.publish._trace import last_result, trace_pytorch

__all__ = [
    "NOTIFICATION_SCHEMA",
    "NotifyConfig",
    "NotifyResult",
    "PublishConfig",
    "PublishResult",
    "TrackingTarget",
    "build_event",
    "last_result",
    "log_onnx_model",
    "notification_schema",
    "notify",
    "publish",
    "resolve_tracking",
    "trace_pytorch",
]

from onnxship._util import verb_module  # noqa: E402

verb_module(__name__, "publish")

"""Gateway to MLflow: tracking store selection, fail-fast reachability, experiments, runs, model logging.

DO NOT import mlflow at module level: every function imports it (``import onnxship.publish`` must stay light).

Size: over 400 lines on purpose: the one gateway to MLflow: every mlflow call stays in this file, so an MLflow
API change is fixed in one place.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from onnxship._errors import MissingDependencyError, PublishError, require
from onnxship.publish._config import TrackingTarget

__all__ = [
    "active_run",
    "check_artifact_store",
    "check_reachable",
    "ensure_experiment",
    "ensure_no_active_run",
    "flatten_metrics",
    "log_onnx",
    "log_pytorch",
    "mlflow_module",
    "model_artifact_location",
    "pip_requirements",
    "sanitize_key",
    "set_alias",
    "signature_from_io",
    "tracking",
    "translate_errors",
]

# Seconds/retries MLflow's REST client uses unless the user set them: its defaults (120 s, 7 retries with backoff)
# turn a server that dies mid-publish into a multi-minute hang.
_FAST_ENV = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. /:]")
_LABEL_FIELDS = ("name", "output", "task", "variant", "label", "metric", "group")
_NOT_METRICS = {
    "seed",
    "opset",
    "schema",
    "schema_version",
    "version",
    "index",
    "worst_index",
    "value",
    "min",
    "max",
    "input_shapes",
    "output_shapes",
    "ref_shape",
    "got_shape",
    "sample_shape",
    "shape",
    "dims",
    "tolerance",
    "size_bytes",
    "ir_version",
    "is_export_shape",
    "histogram",
}
MAX_METRICS = 1000


def mlflow_module() -> Any:
    try:
        return require("mlflow", "mlflow")
    except MissingDependencyError as exc:
        raise MissingDependencyError(
            "mlflow is not installed (needed to publish)", hint="pip install 'onnxship[mlflow]'"
        ) from exc.__cause__


def check_reachable(target: TrackingTarget, timeout: float = 5.0) -> None:
    """Fail in seconds, naming the URI, when a remote tracking server does not answer (never a hang).

    For a sqlite store, make sure its folder exists.
    """
    if not target.remote:
        if target.uri.startswith("sqlite:///"):
            db = Path(target.uri[len("sqlite:///") :])
            try:
                db.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise PublishError(
                    f"cannot create the tracking store folder {str(db.parent)!r}: {exc.strerror}",
                    hint="pass --tracking-uri sqlite:///writable/path/mlflow.db",
                ) from None
        return
    if target.uri.startswith("databricks"):
        return
    url = f"{target.uri}/health"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered: reachable (auth or routing problems surface on the first real call)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PublishError(
            f"MLflow tracking server {target.display} is unreachable ({type(reason).__name__}: {reason}; "
            f"timeout {timeout:g} s)",
            hint=f"start the server or fix the URI (it came from {target.source}); unset MLFLOW_TRACKING_URI to "
            "use the embedded sqlite store",
        ) from None


@contextlib.contextmanager
def tracking(target: TrackingTarget) -> Iterator[Any]:
    """Point MLflow at ``target`` for the duration (tracking and registry), then restore what was set before."""
    mlflow = mlflow_module()
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    set_env = {k: v for k, v in _FAST_ENV.items() if k not in os.environ}
    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    os.environ.update(set_env)
    mlflow.set_tracking_uri(target.uri)
    mlflow.set_registry_uri(target.uri)
    try:
        yield mlflow
    finally:
        for k in set_env:
            os.environ.pop(k, None)
        # MLflow mirrors these settings into the environment; put both back exactly as they were.
        mlflow.set_tracking_uri(saved[0])
        registry_utils._registry_uri = saved[1]
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def ensure_experiment(name: str, target: TrackingTarget) -> str:
    """The id of experiment ``name``, created (with the target's artifact root) when missing."""
    mlflow = mlflow_module()
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            try:
                return client.create_experiment(name, artifact_location=target.artifact_root)
            except MlflowException:
                exp = client.get_experiment_by_name(name)  # created meanwhile by another process
                if exp is None:
                    raise
    except MlflowException as exc:
        raise PublishError(
            f"cannot open experiment {name!r} on {target.display}: {exc.message}",
            hint="check the tracking URI and your permissions",
        ) from None
    if exp.lifecycle_stage == "deleted":
        raise PublishError(
            f"experiment {name!r} on {target.display} is deleted",
            hint="restore it (mlflow experiments restore) or pass another --experiment",
        )
    return str(exp.experiment_id)


def ensure_no_active_run() -> None:
    """onnxship opens its own run; a run the caller left open would silently swallow or nest it."""
    mlflow = mlflow_module()
    current = mlflow.active_run()
    if current is not None:
        raise PublishError(
            f"an MLflow run ({current.info.run_id}) is already active in this process",
            hint="onnxship opens its own run: call mlflow.end_run() first, or publish outside "
            "`with mlflow.start_run():`",
        )


@contextlib.contextmanager
def active_run(experiment_id: str, run_name: str, tags: dict[str, str]) -> Iterator[Any]:
    """Start a run; end it FINISHED on success and FAILED on any exception (the exception propagates)."""
    mlflow = mlflow_module()
    ensure_no_active_run()
    run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)
    try:
        yield run
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")


@contextlib.contextmanager
def translate_errors(target: TrackingTarget, what: str) -> Iterator[None]:
    """MLflow and S3 (botocore) failures become PublishError naming the store; credentials are never echoed."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise PublishError(
            f"MLflow at {target.display} refused to {what}: {exc.message}",
            hint="a param logged twice with another value is an error in MLflow; check the run's "
            "params and the server's log",
        ) from None
    except Exception as exc:
        module = type(exc).__module__ or ""
        if not module.startswith(("botocore", "boto3", "s3transfer")):
            raise
        endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL", "the default AWS endpoint")
        raise PublishError(
            f"artifact upload to S3 ({endpoint}) failed while trying to {what}: "
            f"{type(exc).__name__}: {str(exc)[:300]}",
            hint="check MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and that "
            "the bucket exists",
        ) from None


def sanitize_key(key: str) -> str:
    """An MLflow-safe param/metric key (letters, digits, ``_-. /:``), at most 250 characters."""
    return _KEY_BAD.sub("_", key)[:250]


def _label(item: Any, index: int) -> str:
    if isinstance(item, dict):
        for f in _LABEL_FIELDS:
            if isinstance(item.get(f), str) and item[f]:
                return item[f]
        dims = item.get("dims")
        if isinstance(dims, dict) and dims:
            return "_".join(f"{k}:{v}" for k, v in dims.items())  # MLflow keys allow no "=" or ","
    return str(index)


def flatten_metrics(obj: Any, prefix: str = "") -> dict[str, float]:
    """Every finite scalar number of a report (bools as 0/1), keyed by its path; lists of dicts keyed by their name.

    Lists of plain numbers (shapes, indices) and known non-metric keys (seed, opset, shapes, tolerances) are left out.
    """
    out: dict[str, float] = {}

    def walk(node: Any, path: str) -> None:
        if len(out) >= MAX_METRICS:
            return
        if isinstance(node, dict):
            for k, v in node.items():
                if str(k) in _NOT_METRICS:
                    continue
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(node, list):
            if all(not isinstance(v, (dict, list)) for v in node):
                return
            seen: set[str] = set()
            for i, item in enumerate(node):
                label = _label(item, i)
                if label in seen:
                    label = f"{label}#{i}"
                seen.add(label)
                walk(item, f"{path}.{label}" if path else label)
        elif isinstance(node, (bool, int, float)) and math.isfinite(float(node)):
            out[sanitize_key(path)] = float(node)

    walk(obj, prefix)
    return out


def _tensor_spec(entry: dict[str, Any], fallback: np.ndarray | None) -> Any:
    from mlflow.types.schema import TensorSpec

    dtype = entry.get("dtype", "float32")
    if dtype in ("bfloat16", "unknown", "string"):
        raise PublishError(
            f"tensor {entry['name']!r} has dtype {dtype}, which an MLflow tensor signature cannot hold",
            hint="publish with log_model disabled (--no-model), or export in float32",
        )
    shape = entry.get("dims") if "dims" in entry else entry.get("shape") or []
    if not shape and fallback is not None:
        dims = [
            -1
        ] * fallback.ndim  # rank unknown in the graph: take it from the golden data, every dim dynamic
    else:
        dims = [d if isinstance(d, int) and d > 0 else -1 for d in shape]
    return TensorSpec(np.dtype(dtype), tuple(dims), entry["name"])


def signature_from_io(io: dict[str, list[dict[str, Any]]], golden: Any = None) -> Any:
    """A tensor signature from the model's declared inputs/outputs; symbolic or unknown dims become -1."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema

    gin = golden.inputs if golden is not None else {}
    gout = golden.outputs if golden is not None else {}
    inputs = Schema([_tensor_spec(e, gin.get(e["name"])) for e in io["inputs"]])
    outputs = Schema([_tensor_spec(e, gout.get(e["name"])) for e in io["outputs"]])
    return ModelSignature(inputs=inputs, outputs=outputs)


def pip_requirements() -> list[str]:
    """Pinned requirements of an ONNX pyfunc model (given explicitly: MLflow's inference takes ~5 s)."""
    import onnx
    import onnxruntime

    mlflow = mlflow_module()
    return [
        f"mlflow=={mlflow.__version__}",
        f"onnx=={onnx.__version__}",
        f"onnxruntime=={onnxruntime.__version__}",
        f"numpy=={np.__version__}",
    ]


def log_onnx(
    model_path: Path,
    *,
    signature: Any,
    input_example: dict[str, np.ndarray] | None,
    metadata: dict[str, Any],
    registered_model_name: str | None = None,
) -> Any:
    """``mlflow.onnx.log_model`` into the active run (CPU provider, pinned requirements); returns the ModelInfo."""
    import onnx

    mlflow_module()
    import mlflow.onnx

    from onnxship.onnxfile import external_data_files

    proto = onnx.load(str(model_path))  # with external data
    return mlflow.onnx.log_model(
        onnx_model=proto,
        name="model",
        signature=signature,
        input_example=input_example,
        pip_requirements=pip_requirements(),
        onnx_execution_providers=["CPUExecutionProvider"],
        metadata=metadata,
        registered_model_name=registered_model_name,
        await_registration_for=60,
        # a model without external data stays one file (byte for byte the verified one)
        save_as_external_data=bool(external_data_files(model_path)),
    )


def model_artifact_location(info: Any) -> str:
    """Where a logged model's files are stored (``s3://.../models/<id>/artifacts``, ``file://...``)."""
    mlflow = mlflow_module()
    model_id = getattr(info, "model_id", None)
    if model_id:
        return str(mlflow.get_logged_model(model_id).artifact_location).rstrip("/")
    from mlflow.tracking.artifact_utils import get_artifact_uri

    return get_artifact_uri(info.run_id, info.artifact_path).rstrip("/")  # MLflow 2: inside the run


def log_pytorch(model: Any, *, signature: Any, metadata: dict[str, Any]) -> Any:
    """``mlflow.pytorch.log_model`` of the trained module (pinned requirements; no slow inference)."""
    import logging

    import torch

    mlflow_module()
    import mlflow.pytorch

    # MLflow warns about pickle on every call; the format is chosen on purpose (see below)
    quiet = logging.getLogger("mlflow.pytorch")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return _log_pytorch(mlflow, model, signature, metadata, torch)
    finally:
        quiet.setLevel(level)


def _log_pytorch(mlflow: Any, model: Any, signature: Any, metadata: dict[str, Any], torch: Any) -> Any:
    return mlflow.pytorch.log_model(
        pytorch_model=model,
        name="pytorch_model",
        # pickle: any module (pt2 re-traces the model and needs an example that fits every input)
        serialization_format="pickle",
        signature=signature,
        pip_requirements=[
            f"mlflow=={mlflow.__version__}",
            f"torch=={str(torch.__version__).split('+')[0]}",
            f"numpy=={np.__version__}",
        ],
        metadata=metadata,
    )


def check_artifact_store(experiment_id: str, experiment: str) -> None:
    """An S3 artifact store needs credentials on this side: missing ones fail here, before any training or upload
    (names the variables, never their values)."""
    mlflow = mlflow_module()
    location = str(mlflow.MlflowClient().get_experiment(experiment_id).artifact_location or "")
    if not location.startswith(("s3://", "s3a://")):
        return
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        return
    has_other = False
    with contextlib.suppress(Exception):  # a profile / credentials file / role: boto3's own lookup
        import boto3

        has_other = boto3.Session().get_credentials() is not None
    if has_other:
        return
    missing = [v for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not os.environ.get(v)]
    raise PublishError(
        f"experiment {experiment!r} stores artifacts in {location}, but no S3 credentials are set "
        f"({', '.join(missing)} missing)",
        hint="export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and MLFLOW_S3_ENDPOINT_URL for MinIO / an "
        "S3-compatible endpoint)",
    )


def set_alias(name: str, alias: str, version: str) -> None:
    mlflow = mlflow_module()
    mlflow.MlflowClient().set_registered_model_alias(name, alias, version)

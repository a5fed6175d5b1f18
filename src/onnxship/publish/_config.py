"""Publish configuration, results, and where the tracking store lives (no mlflow import here).

Environment read here (and only here): ``MLFLOW_TRACKING_URI`` (a remote server or a sqlite store),
``ONNXSHIP_MLFLOW_DIR`` (the embedded store's folder), ``ONNXSHIP_REQUIRE_REMOTE`` (refuse a local store),
``ONNXSHIP_NOTIFY_URL`` (default notification target), ``ONNXSHIP_NOTIFY_TOKEN`` (webhook bearer token) and
``MODEL_ID`` (experiment prefix). S3 credentials
(``MLFLOW_S3_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``) are read by MLflow/boto3 themselves;
onnxship never copies them into params, tags, messages or logs.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from onnxship._errors import ConfigError
from onnxship._secrets import check_no_secrets, looks_secret, mask_url

__all__ = [
    "REMOTE_VARIABLES",
    "NotifyConfig",
    "NotifyResult",
    "PublishConfig",
    "PublishResult",
    "TrackingTarget",
    "check_no_secrets",
    "experiment_name",
    "local_store_line",
    "looks_secret",
    "mask_url",
    "notify_from_env",
    "require_remote",
    "resolve_tracking",
]

STORE_SUBDIR = Path(".onnxship") / "mlflow"
_REMOTE_SCHEMES = ("http", "https", "databricks")
_TRUE = ("1", "true", "yes", "on")
# What a production environment sets (listed by the ONNXSHIP_REQUIRE_REMOTE error).
REMOTE_VARIABLES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _project_root() -> Path:
    """The git top level of the current folder, else the current folder."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return Path.cwd()
    top = out.stdout.strip()
    return Path(top) if out.returncode == 0 and top else Path.cwd()


@dataclass(frozen=True)
class TrackingTarget:
    """Where runs go: the tracking URI, the artifact root for new experiments, and how it was chosen."""

    uri: str  # tracking (and registry) URI
    artifact_root: str | None  # artifact location for experiments onnxship creates (None: the server decides)
    source: str  # "argument" | "MLFLOW_TRACKING_URI" | "embedded"

    @property
    def remote(self) -> bool:
        return urlsplit(self.uri).scheme in _REMOTE_SCHEMES

    @property
    def display(self) -> str:
        return mask_url(self.uri)


def resolve_tracking(tracking_uri: str | None = None, store_dir: str | Path | None = None) -> TrackingTarget:
    """Choose the tracking store: the argument, then ``MLFLOW_TRACKING_URI``, then the embedded sqlite store.

    The embedded store is ``<project>/.onnxship/mlflow/mlflow.db`` with artifacts in ``.../artifacts`` (``<project>``
    is the git top level of the current folder, else the current folder; ``ONNXSHIP_MLFLOW_DIR`` or ``store_dir``
    moves it). A sqlite URI keeps its artifacts beside the database, never in a silent ``./mlruns``.
    """
    source = "argument"
    uri = tracking_uri
    if not uri:
        uri, source = os.environ.get("MLFLOW_TRACKING_URI") or None, "MLFLOW_TRACKING_URI"
    if not uri:
        folder = Path(store_dir or os.environ.get("ONNXSHIP_MLFLOW_DIR") or _project_root() / STORE_SUBDIR)
        folder = folder.expanduser().resolve()
        return TrackingTarget(
            uri=f"sqlite:///{folder / 'mlflow.db'}",
            artifact_root=(folder / "artifacts").as_uri(),
            source="embedded",
        )
    scheme = urlsplit(uri).scheme
    if scheme in _REMOTE_SCHEMES:
        return TrackingTarget(uri=uri.rstrip("/"), artifact_root=None, source=source)
    if scheme == "sqlite":
        db = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
        if not db or db.startswith(":memory:"):
            raise ConfigError(
                f"tracking URI {uri!r} is not a sqlite file",
                hint="use sqlite:///path/to/mlflow.db (an in-memory store loses every run)",
            )
        path = Path(db).expanduser().resolve()
        return TrackingTarget(
            uri=f"sqlite:///{path}", artifact_root=(path.parent / "artifacts").as_uri(), source=source
        )
    if scheme in ("file", "") and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("1", "true"):
        raise ConfigError(
            f"tracking URI {mask_url(uri)!r} is a file store, which MLflow no longer accepts by default",
            hint="use sqlite:///path/to/mlflow.db, or set MLFLOW_ALLOW_FILE_STORE=true to keep a file store",
        )
    return TrackingTarget(uri=uri, artifact_root=None, source=source)


def require_remote(target: TrackingTarget) -> None:
    """With ``ONNXSHIP_REQUIRE_REMOTE=1`` (a production profile) a local store is an error naming the variables."""
    if os.environ.get("ONNXSHIP_REQUIRE_REMOTE", "").strip().lower() not in _TRUE or target.remote:
        return
    where = "MLFLOW_TRACKING_URI is not set" if target.source == "embedded" else f"{target.display} is local"
    raise ConfigError(
        f"ONNXSHIP_REQUIRE_REMOTE is set but {where}: runs would go to a local store",
        hint="export " + ", ".join(REMOTE_VARIABLES) + " (or unset ONNXSHIP_REQUIRE_REMOTE for local runs)",
    )


def local_store_line(target: TrackingTarget) -> str | None:
    """The one line that announces a local store (None for a remote server)."""
    if target.remote:
        return None
    where = target.uri[len("sqlite:///") :] if target.uri.startswith("sqlite:///") else target.uri
    why = "MLFLOW_TRACKING_URI is not set" if target.source == "embedded" else f"from {target.source}"
    return (
        f"onnxship: local MLflow store {where} ({why}); set MLFLOW_TRACKING_URI=http://host:5000 for a "
        "tracking server, ONNXSHIP_MLFLOW_DIR to move the local store"
    )


def experiment_name(name: str, experiment: str | None = None) -> str:
    """``experiment`` if given, else ``{MODEL_ID}_{name}`` when ``MODEL_ID`` is set, else ``name``."""
    if experiment:
        return experiment
    model_id = os.environ.get("MODEL_ID", "").strip()
    return f"{model_id}_{name}" if model_id else name


@dataclass
class NotifyConfig:
    """Where and how to announce a published model."""

    url: str  # amqp://user:pass@host:5672/vhost (RabbitMQ) or http(s)://... (webhook, JSON POST)
    exchange: str = "onnxship"  # AMQP exchange, declared durable
    exchange_type: str = "topic"  # AMQP exchange type
    routing_key: str = "model.published"  # AMQP routing key
    mandatory: bool = False  # AMQP: fail when no queue is bound to the routing key
    timeout: float = 5.0  # seconds for connecting and for the broker's confirm / the webhook's answer
    retries: int = (
        3  # attempts in all for a broker/webhook that is down or answers 5xx (then the run is FAILED)
    )
    retry_delay: float = 0.5  # seconds before the second attempt; doubled for each further one
    # webhook headers; ${VAR} in a value is read from the environment when sending (a missing VAR is an error
    # before training). ONNXSHIP_NOTIFY_TOKEN, when set, adds "Authorization: Bearer <token>" unless given here.
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        scheme = urlsplit(self.url).scheme
        if scheme not in ("amqp", "amqps", "http", "https"):
            raise ConfigError(
                f"notification URL {mask_url(self.url)!r} has scheme {scheme!r}",
                hint="use amqp://user:pass@host:5672/vhost (RabbitMQ) or https://... (webhook)",
            )
        if self.exchange_type not in ("topic", "direct", "fanout", "headers"):
            raise ConfigError(
                f"unknown exchange type {self.exchange_type!r}", hint="valid: topic, direct, fanout, headers"
            )
        if self.timeout <= 0:
            raise ConfigError(f"notification timeout must be > 0 seconds, got {self.timeout}")
        if not isinstance(self.retries, int) or self.retries < 1:
            raise ConfigError(
                f"notification retries must be an int >= 1 (attempts in all), got {self.retries!r}"
            )
        if self.retry_delay < 0:
            raise ConfigError(f"notification retry_delay must be >= 0 seconds, got {self.retry_delay}")
        bad = [k for k in self.headers if not isinstance(k, str) or not re.fullmatch(r"[A-Za-z0-9-]+", k)]
        if bad:
            raise ConfigError(
                f"webhook header names {bad} are not valid", hint="e.g. headers={'Authorization': ...}"
            )

    @property
    def kind(self) -> str:
        return "rabbitmq" if urlsplit(self.url).scheme.startswith("amqp") else "webhook"

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        default = {"amqp": 5672, "amqps": 5671, "http": 80, "https": 443}[parts.scheme]
        try:
            port = parts.port or default
        except ValueError:
            raise ConfigError(f"notification URL {mask_url(self.url)!r} has an invalid port") from None
        return parts.hostname or "localhost", port

    def resolved_headers(self) -> dict[str, str]:
        """Webhook headers with ``${VAR}`` read from the environment (ConfigError naming a missing variable)."""
        out: dict[str, str] = {}
        token = os.environ.get("ONNXSHIP_NOTIFY_TOKEN")
        if token and not any(k.lower() == "authorization" for k in self.headers):
            out["Authorization"] = f"Bearer {token}"
        for key, value in self.headers.items():
            missing = [v for v in _ENV_REF.findall(str(value)) if v not in os.environ]
            if missing:
                raise ConfigError(
                    f"webhook header {key!r} reads {', '.join(missing)} from the environment, which is not set",
                    hint=f"export {missing[0]}=... before running",
                )
            out[key] = _ENV_REF.sub(lambda m: os.environ[m[1]], str(value))
        return out


def notify_from_env() -> NotifyConfig | None:
    """``ONNXSHIP_NOTIFY_URL`` as a NotifyConfig (None when unset): notifications configured without code."""
    url = os.environ.get("ONNXSHIP_NOTIFY_URL", "").strip()
    return NotifyConfig(url) if url else None


@dataclass
class NotifyResult:
    """What was sent, and where (the URL masked)."""

    kind: str  # rabbitmq | webhook
    target: str  # masked URL (+ exchange/routing key)
    event: dict[str, Any]
    confirmed: bool  # the broker confirmed the message / the webhook answered 2xx
    status: int | None = None  # webhook HTTP status

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PublishConfig:
    """How to publish a release bundle to MLflow."""

    tracking_uri: str | None = (
        None  # None: MLFLOW_TRACKING_URI, else the embedded sqlite store under the project
    )
    store_dir: Path | None = None  # folder of the embedded store (default <project>/.onnxship/mlflow)
    experiment: str | None = None  # default {MODEL_ID}_{name} or {name}
    run_name: str | None = None  # default: the bundle's version tag
    register: str | None = None  # registered model name (None: no registration)
    alias: str | None = None  # alias for the new model version, e.g. "champion" (needs register)
    log_model: bool = True  # mlflow.onnx.log_model with signature and input example
    log_pytorch: bool = (
        True  # trace_pytorch: also mlflow.pytorch.log_model (a CPU copy of the trained module)
    )
    verify_golden: bool = True  # re-run golden.npz through onnxruntime first; a mismatch stops the publish
    triton_config: bool = (
        True  # generate the release's Triton config.pbtxt and log it as triton/<name>/config.pbtxt
    )
    # Triton max_batch_size (None: the declared batch maximum, else the largest verified batch; 0: no batching)
    triton_max_batch_size: int | None = None
    notify: NotifyConfig | None = (
        None  # RabbitMQ or webhook (None: ONNXSHIP_NOTIFY_URL when set), inside the run
    )
    tags: dict[str, str] = field(default_factory=dict)  # extra run tags
    connect_timeout: float = 5.0  # seconds to reach a remote tracking server before giving up

    def __post_init__(self) -> None:
        for name in ("tracking_uri", "experiment", "run_name", "register", "alias"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(
                    f"{name}={value!r} must be a string (or None), got {type(value).__name__}",
                    hint=f"e.g. {name}='deeplog'" if name != "tracking_uri" else "e.g. http://host:5000",
                )
        for name in ("log_model", "log_pytorch", "verify_golden", "triton_config"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"{name}={getattr(self, name)!r} must be True or False", hint=f"e.g. {name}=False"
                )
        if not isinstance(self.tags, dict):
            raise ConfigError(
                f"tags must be a dict name -> value, got {type(self.tags).__name__}",
                hint="e.g. tags={'team': 'ml'}",
            )
        if self.notify is not None and not isinstance(self.notify, (str, NotifyConfig)):
            raise ConfigError(
                f"notify must be a URL or a NotifyConfig, got {type(self.notify).__name__}",
                hint="e.g. notify='amqp://user:pass@host:5672/%2F' or notify='https://hooks.example/x'",
            )
        if self.alias and not self.register:
            raise ConfigError(
                f"alias {self.alias!r} given without a registered model name",
                hint="add --register NAME (the alias is set on the new version of NAME)",
            )
        if self.alias and (self.alias.lower() == "latest" or not re.fullmatch(r"[A-Za-z0-9_-]+", self.alias)):
            raise ConfigError(
                f"alias {self.alias!r} is not usable",
                hint="letters, digits, '_' and '-', and not 'latest' (MLflow reserves it)",
            )
        if self.register is not None and not self.register.strip():
            raise ConfigError("registered model name is empty", hint="pass --register NAME")
        if isinstance(self.notify, str):
            self.notify = NotifyConfig(self.notify)
        if self.store_dir is not None:
            self.store_dir = Path(self.store_dir)
        if self.connect_timeout <= 0:
            raise ConfigError(f"connect_timeout must be > 0 seconds, got {self.connect_timeout}")
        if self.triton_max_batch_size is not None and (
            not isinstance(self.triton_max_batch_size, int) or self.triton_max_batch_size < 0
        ):
            raise ConfigError(
                f"max batch size {self.triton_max_batch_size!r} must be an int >= 0 (0 disables batching)"
            )
        check_no_secrets(self.tags, "tags")


@dataclass
class PublishResult:
    """The MLflow run a bundle was published to, and what it holds."""

    name: str
    version: str  # the bundle's version tag
    run_id: str
    experiment_id: str
    experiment_name: str
    tracking_uri: str  # masked
    artifact_uri: str
    model_uri: str | None  # the MLflow model (models:/<id>; None when the model was not logged)
    verdict: str  # passed | failed | unknown (from the bundle's report and the golden re-check)
    registered_model: str | None = None
    model_version: str | None = None
    alias: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    notification: NotifyResult | None = None
    onnx_uri: str | None = None  # where the run's one copy of the ONNX file is stored
    pytorch_model_uri: str | None = None  # the PyTorch model logged by trace_pytorch (None: not logged)
    triton_config: str | None = None  # run artifact path of the Triton config.pbtxt (None: not written)
    io: dict[str, Any] = field(default_factory=dict)  # {"inputs": [...], "outputs": [...]} name, dtype, dims
    model_id: str | None = None  # MODEL_ID of the environment (experiment prefix)
    source: str = "publish"  # publish | trace_pytorch | log_onnx_model

    def __str__(self) -> str:
        """Where the ONNX file was uploaded (what keynet-style ``upload_path = log_onnx_model(...)`` prints)."""
        return self.onnx_uri or self.model_uri or self.artifact_uri

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        d["notification"] = self.notification.to_dict() if self.notification else None
        return d

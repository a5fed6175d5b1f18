"""Publish configuration, results, and where the tracking store lives (no mlflow import here).

Environment read here (and only here): ``MLFLOW_TRACKING_URI`` (a remote server or a sqlite store),
``ONNXSHIP_MLFLOW_DIR`` (the embedded store's folder) and ``MODEL_ID`` (experiment prefix). S3 credentials
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
from urllib.parse import urlsplit, urlunsplit

from onnxship._errors import ConfigError

__all__ = [
    "NotifyConfig",
    "NotifyResult",
    "PublishConfig",
    "PublishResult",
    "TrackingTarget",
    "check_no_secrets",
    "experiment_name",
    "looks_secret",
    "mask_url",
    "resolve_tracking",
]

STORE_SUBDIR = Path(".onnxship") / "mlflow"
_SECRET_KEY = re.compile(
    r"(password|passwd|secret|token|credential|access[_-]?key|api[_-]?key|private[_-]?key)", re.IGNORECASE
)
_REMOTE_SCHEMES = ("http", "https", "databricks")


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe to print)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def looks_secret(key: str) -> bool:
    """Whether a key names a credential (password, token, access key, ...)."""
    return bool(_SECRET_KEY.search(str(key)))


def check_no_secrets(values: dict[str, Any], what: str) -> None:
    """Refuse keys that name secrets: they would end up readable by anyone with access to the tracking server."""
    bad = sorted(str(k) for k in values if looks_secret(k))
    if bad:
        raise ConfigError(
            f"{what} {bad} look like secrets; onnxship does not log secrets to MLflow",
            hint="pass credentials through the environment (AWS_ACCESS_KEY_ID, ...), not as metadata",
        )
    urls = sorted(str(k) for k, v in values.items() if isinstance(v, str) and "@" in v and mask_url(v) != v)
    if urls:
        raise ConfigError(
            f"{what} {urls} hold URLs with a password; onnxship does not write secrets into "
            "metadata or MLflow",
            hint="drop the password from the URL (user@host) or leave it out",
        )


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

    @property
    def kind(self) -> str:
        return "rabbitmq" if urlsplit(self.url).scheme.startswith("amqp") else "webhook"


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
    verify_golden: bool = True  # re-run golden.npz through onnxruntime first; a mismatch stops the publish
    triton_config: bool = (
        True  # generate the release's Triton config.pbtxt and log it as triton/<name>/config.pbtxt
    )
    notify: NotifyConfig | None = None  # RabbitMQ or webhook notification after the run is recorded
    tags: dict[str, str] = field(default_factory=dict)  # extra run tags
    connect_timeout: float = 5.0  # seconds to reach a remote tracking server before giving up

    def __post_init__(self) -> None:
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
    model_uri: str | None  # runs:/<id>/model (None when the model was not logged)
    verdict: str  # passed | failed | unknown (from the bundle's report and the golden re-check)
    registered_model: str | None = None
    model_version: str | None = None
    alias: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    notification: NotifyResult | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["notification"] = self.notification.to_dict() if self.notification else None
        return d

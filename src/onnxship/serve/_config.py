"""ServeConfig: how ``onnxship serve`` selects, checks and serves a model.

This is the one module of the server that reads the environment: ``MODEL_PATH`` (also from a
``.env`` file) and ``ONNXSHIP_TOKEN``. A variable set in the process environment wins over the ``.env`` file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from onnxship._errors import ConfigError

__all__ = ["LOOPBACK_HOSTS", "ServeConfig", "read_env_file"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_ENV_KEYS = ("MODEL_PATH", "ONNXSHIP_TOKEN")


@dataclass(frozen=True)
class ServeConfig:
    """Model selection, batching, limits and auth of the server."""

    model_path: str | None = (
        None  # pinned model: a release folder, a `latest` link or an .onnx file (MODEL_PATH)
    )
    releases: str | None = None  # releases root; its <name>/latest is the second choice
    model_root: str | None = None  # /reload may only load below this folder (default: --releases, else the
    #                                 folder holding the pinned release's versions)
    model_spec: str | None = None  # PyTorch fallback: file.py:factory or package.module:factory
    checkpoint: str | None = None  # PyTorch fallback: state_dict loaded into model_spec's model
    inputs: tuple[str, ...] = ()  # PyTorch fallback: input specs (default: the module's ONNXSHIP_INPUTS)
    host: str = "127.0.0.1"  # bind address (loopback unless asked otherwise)
    port: int = 8000  # 0: pick a free port
    # largest batch per request and per merged batch; None: the release's largest batch (declared, verified by the
    # sweep); a value above it is refused
    max_batch: int | None = None
    batch_timeout_ms: float = 0.0  # max queue delay of the oldest queued request (Triton's default: 0)
    preferred_batch: tuple[int, ...] = ()  # batch sizes sent as soon as they can be formed
    workers: int = 1  # server processes sharing the port, each with its own session and batcher
    grpc_port: int | None = None  # also serve KServe v2 gRPC on this port (0: any free port)
    proxy_headers: bool = (
        False  # trust X-Forwarded-For/-Proto from --forwarded-allow-ips (uvicorn's middleware)
    )
    max_body_bytes: int = 16 * 1024 * 1024  # larger request bodies get 413
    token: str | None = None  # bearer token; None: no auth
    require_golden: bool = True  # refuse models without a golden file (readiness = golden check passed)
    intra_op_threads: int = 1  # onnxruntime threads per session (1: leave a core to the HTTP loop)
    inline_below_ms: float = (
        1.0  # model runs averaging below this run on the event loop (no thread hop); 0: never
    )
    log_level: str = "warning"  # uvicorn log level
    # connection limits (see onnxship.serve._limits): nothing hangs, nothing piles up
    header_timeout_s: float = (
        10.0  # a request head must be complete within this (else 408, connection closed)
    )
    body_timeout_s: float = 60.0  # a request body must be complete within this of its head (else 408)
    keep_alive_s: float = 30.0  # idle keep-alive connections are closed after this
    max_connections: int = 1024  # past it the oldest idle connection is closed (none idle: 503)
    max_inflight: int = 256  # requests processed at once; more get 503 (health probes always pass)
    shutdown_timeout_s: float = 5.0  # after SIGTERM in-flight requests get this long, then 503 and exit
    notes: tuple[str, ...] = field(default=(), compare=False)  # where settings came from (env, .env)

    def __post_init__(self) -> None:
        if self.max_batch is not None and self.max_batch < 1:
            raise ConfigError(
                f"max_batch must be >= 1, got {self.max_batch}",
                hint="--max-batch 1 serves one row per request (no merging)",
            )
        if self.batch_timeout_ms < 0:
            raise ConfigError(f"batch_timeout_ms must be >= 0, got {self.batch_timeout_ms}")
        if self.max_body_bytes < 1024:
            raise ConfigError(f"max_body_bytes must be at least 1024, got {self.max_body_bytes}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(
                f"port {self.port} is not a TCP port", hint="use 0..65535 (0 picks a free port)"
            )
        if isinstance(self.preferred_batch, (list, int)):
            pref = (self.preferred_batch,) if isinstance(self.preferred_batch, int) else self.preferred_batch
            object.__setattr__(self, "preferred_batch", tuple(pref))
        top = self.max_batch
        bad = [p for p in self.preferred_batch if p < 1 or (top is not None and p > top)]
        if bad:
            raise ConfigError(
                f"preferred batch size(s) {bad} are outside 1..{top or 'the largest batch'} (--max-batch)",
                hint="pass sizes between 1 and --max-batch, e.g. --preferred-batch 8 --preferred-batch 16",
            )
        if self.workers < 1:
            raise ConfigError(
                f"workers must be >= 1, got {self.workers}", hint="--workers 1 runs one process"
            )
        if self.grpc_port is not None and not 0 <= self.grpc_port <= 65535:
            raise ConfigError(
                f"gRPC port {self.grpc_port} is not a TCP port", hint="use 0..65535 (0 picks a free port)"
            )
        if self.grpc_port is not None and self.grpc_port and self.grpc_port == self.port:
            raise ConfigError(
                f"--grpc-port {self.grpc_port} is the REST --port too", hint="give gRPC its own port"
            )
        if self.inline_below_ms < 0:
            raise ConfigError(f"inline_below_ms must be >= 0, got {self.inline_below_ms}")
        if self.intra_op_threads < 0:
            raise ConfigError(f"intra_op_threads must be >= 0, got {self.intra_op_threads}")
        if self.token is not None:
            # a token read from a file or the environment often ends with a newline: it never belongs to the token
            object.__setattr__(self, "token", self.token.strip())
            if not self.token:
                raise ConfigError(
                    "the bearer token is empty", hint="pass a non-empty --token or unset ONNXSHIP_TOKEN"
                )
            if any(not (33 <= ord(c) <= 126) for c in self.token):
                raise ConfigError(
                    "the bearer token holds spaces, control or non-ASCII characters, which no client can send "
                    "in an Authorization header",
                    hint="use printable ASCII without spaces (e.g. `openssl rand -hex 32`)",
                )
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s", "shutdown_timeout_s"):
            value = getattr(self, name)
            if not value > 0 or value != value or value > 86400:
                flag = "--" + name.removesuffix("_s").replace("_", "-")
                raise ConfigError(
                    f"{name} must be between 0 and 86400 seconds, got {value}", hint=f"{flag} 10"
                )
        for name in ("max_connections", "max_inflight"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"{name} must be >= 1, got {getattr(self, name)}",
                    hint=f"--{name.replace('_', '-')} 256",
                )
        if self.checkpoint and not self.model_spec:
            raise ConfigError(
                f"checkpoint {self.checkpoint!r} given without a model factory",
                hint="pass --model file.py:factory with --checkpoint",
            )
        if isinstance(self.inputs, (list, str)):
            object.__setattr__(
                self, "inputs", (self.inputs,) if isinstance(self.inputs, str) else tuple(self.inputs)
            )

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    def root(self) -> Path | None:
        """The folder /reload is confined to (resolved), or None when nothing defines one."""
        if self.model_root:
            return Path(os.path.realpath(self.model_root))
        if self.releases:
            return Path(os.path.realpath(self.releases))
        if self.model_path:
            real = Path(os.path.realpath(self.model_path))
            # releases/<name>/<version>[/<name>.onnx]: the root is releases/<name>, so other versions may load
            bundle = real.parent if real.is_file() else real
            return bundle.parent
        return None

    def with_env(
        self, env: dict[str, str] | None = None, env_file: str | Path | None = ".env"
    ) -> ServeConfig:
        """Fill ``model_path`` and ``token`` from ``MODEL_PATH`` / ``ONNXSHIP_TOKEN`` (process env, then .env)."""
        values = read_env_file(env_file) if env_file else {}
        source = dict(os.environ if env is None else env)
        notes = list(self.notes)
        picked: dict[str, str] = {}
        for key in _ENV_KEYS:
            if source.get(key):
                picked[key] = source[key].strip()
                notes.append(f"{key} from the environment")
            elif values.get(key):
                picked[key] = values[key].strip()
                notes.append(f"{key} from {Path(env_file).name}")  # the name only: notes reach /version
        changes: dict[str, object] = {"notes": tuple(notes)}
        if self.model_path is None and "MODEL_PATH" in picked:
            changes["model_path"] = picked["MODEL_PATH"]
        if self.token is None and "ONNXSHIP_TOKEN" in picked:
            changes["token"] = picked["ONNXSHIP_TOKEN"]
        return replace(self, **changes)  # type: ignore[arg-type]


def read_env_file(path: str | Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a .env file; {} when absent. The file is read like every file the server opens: it
    must stay in its own folder (a symlink leading elsewhere is refused) and be a regular file.

    Raises:
        ConfigError: the file leaves its folder, is not a regular file or not UTF-8 text.
    """
    from onnxship._errors import OnnxshipError
    from onnxship.serve._files import ModelRoot

    path = Path(path)
    if not (path.exists() or path.is_symlink()) or path.is_dir():  # a `.env/` folder is often a virtualenv
        return {}
    folder = ModelRoot(path.absolute().parent, "its folder")
    try:
        text = folder.read_text(path.absolute(), "env file")
    except OnnxshipError as exc:
        raise ConfigError(
            f"{path}: {exc.message}", hint="keep the .env file a plain file beside the server (or --env-file)"
        ) from None
    try:
        from dotenv import dotenv_values
    except ImportError:
        out: dict[str, str] = {}
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.removeprefix("export ").split("=", 1)
            out[key.strip()] = value.strip().strip("'\"")
        return out
    import io

    return {k: v.strip() for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}

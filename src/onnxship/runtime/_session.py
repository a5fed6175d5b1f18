"""The one ONNX Runtime session factory of the project (every InferenceSession is made here).

Provider policy: TensorRT -> CUDA -> CPU, filtered by ``ort.get_available_providers()``. A
provider that is not available, that fails to create, or that onnxruntime silently drops is skipped with the reason
logged and recorded in :class:`SessionInfo`, which also reports the providers actually in use.

DO NOT import onnxruntime at module level: this module is imported lazily by runners and the server.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxship._errors import CheckError, ConfigError

if TYPE_CHECKING:
    import onnxruntime

__all__ = [
    "GRAPH_OPTIMIZATION_LEVELS",
    "PROVIDER_ALIASES",
    "PROVIDER_PREFERENCE",
    "ProviderFallback",
    "SessionConfig",
    "SessionInfo",
    "create_session",
    "normalize_provider",
    "open_session",
    "plan_providers",
    "provider_options",
    "resolve_providers",
]

log = logging.getLogger("onnxship.runtime")

# Fastest first; only those reported by ort.get_available_providers() are tried.
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
_CPU = "CPUExecutionProvider"


def normalize_provider(name: str) -> str:
    """``cuda`` -> ``CUDAExecutionProvider``; full provider names pass through.

    Raises:
        ConfigError: the name is neither an alias nor an ``...ExecutionProvider`` name.
    """
    key = name.strip()
    if key.lower() in PROVIDER_ALIASES:
        return PROVIDER_ALIASES[key.lower()]
    if key.endswith("ExecutionProvider"):
        return key
    raise ConfigError(
        f"unknown execution provider {name!r}",
        hint=f"use one of {', '.join(PROVIDER_ALIASES)} or a full name like CUDAExecutionProvider",
    )


@dataclass(frozen=True)
class SessionConfig:
    """How to open an ONNX Runtime session."""

    providers: tuple[str, ...] | None = (
        None  # None: preference order filtered by availability; aliases allowed
    )
    intra_op_threads: int = 0  # 0: onnxruntime's default
    inter_op_threads: int = 0
    graph_optimization: str = "all"  # disable | basic | extended | all
    allow_spinning: bool = True  # False for servers: spinning threads starve the HTTP loop
    provider_options: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # per provider name; wins over below
    log_severity: int = 3  # 3 = errors only
    device_id: int = 0  # GPU index for CUDA and TensorRT
    trt_fp16: bool = False  # let TensorRT build fp16 kernels
    trt_engine_cache: str | None = (
        None  # folder for built TensorRT engines (None: no cache, rebuilt every start)
    )
    trt_workspace_bytes: int = 2 * 1024**3  # TensorRT builder workspace
    cuda_cudnn_max_workspace: bool = True  # cuDNN conv algorithm search may use its largest workspace

    def __post_init__(self) -> None:
        if self.providers is not None:
            if isinstance(self.providers, str):
                raise ConfigError(
                    f"providers must be a tuple of names, got the string {self.providers!r}",
                    hint="e.g. providers=('cuda', 'cpu')",
                )
            object.__setattr__(self, "providers", tuple(normalize_provider(p) for p in self.providers))
        if self.graph_optimization not in GRAPH_OPTIMIZATION_LEVELS:
            raise ConfigError(
                f"graph_optimization {self.graph_optimization!r} is not a level",
                hint=f"use one of {', '.join(GRAPH_OPTIMIZATION_LEVELS)}",
            )
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ConfigError(
                f"thread counts must be >= 0 (0 = onnxruntime default), got intra="
                f"{self.intra_op_threads} inter={self.inter_op_threads}"
            )
        if self.trt_workspace_bytes <= 0:
            raise ConfigError(f"trt_workspace_bytes must be positive, got {self.trt_workspace_bytes}")


@dataclass(frozen=True)
class ProviderFallback:
    """A provider that was asked for (or preferred) but is not used, and why."""

    provider: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"provider": self.provider, "reason": self.reason}


@dataclass
class SessionInfo:
    """An open session plus what was asked for and what is actually running."""

    session: onnxruntime.InferenceSession
    requested: list[str]  # providers asked for (or the preference order)
    providers: list[str]  # providers actually in use, from session.get_providers()
    fallbacks: list[ProviderFallback] = field(default_factory=list)
    provider_options: dict[str, dict[str, str]] = field(default_factory=dict)  # as onnxruntime reports them
    session_options: dict[str, Any] = field(default_factory=dict)  # the applied values (logged)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "providers": self.providers,
            "fallbacks": [f.to_dict() for f in self.fallbacks],
            "session_options": self.session_options,
            "provider_options": self.provider_options,
        }


def provider_options(provider: str, config: SessionConfig | None = None) -> dict[str, str]:
    """The options passed to onnxruntime for one provider: onnxship defaults, then ``config.provider_options``.

    Example:
        >>> provider_options("CUDAExecutionProvider")["cudnn_conv_use_max_workspace"]
        '1'
    """
    config = config or SessionConfig()
    opts: dict[str, Any] = {}
    if provider == "TensorrtExecutionProvider":
        opts = {
            "device_id": config.device_id,
            "trt_fp16_enable": config.trt_fp16,
            "trt_max_workspace_size": config.trt_workspace_bytes,
        }
        if config.trt_engine_cache:
            opts["trt_engine_cache_enable"] = True
            opts["trt_engine_cache_path"] = str(config.trt_engine_cache)
    elif provider == "CUDAExecutionProvider":
        opts = {
            "device_id": config.device_id,
            "cudnn_conv_use_max_workspace": config.cuda_cudnn_max_workspace,
        }
    opts.update(config.provider_options.get(provider, {}))
    # onnxruntime takes provider options as strings; booleans as "1"/"0".
    return {k: ("1" if v is True else "0" if v is False else str(v)) for k, v in opts.items()}


def plan_providers(
    wanted: tuple[str, ...] | None = None, available: list[str] | tuple[str, ...] | None = None
) -> tuple[list[str], list[ProviderFallback]]:
    """Providers to try in order, and the wanted ones skipped because this onnxruntime does not offer them.

    CPU is always last, so a session can always be made. ``available`` defaults to ``ort.get_available_providers()``.
    """
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    avail = set(available)
    order = [normalize_provider(p) for p in wanted] if wanted else list(PROVIDER_PREFERENCE)
    chosen: list[str] = []
    skipped: list[ProviderFallback] = []
    for p in order:
        if p in chosen:
            continue
        if p in avail:
            chosen.append(p)
        elif (
            wanted
        ):  # the default preference silently skips what this build lacks; an explicit ask is reported
            reason = f"not available in this onnxruntime build (available: {sorted(avail)})"
            if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
                reason += "; install onnxruntime-gpu on a machine with CUDA"
            skipped.append(ProviderFallback(p, reason))
    if _CPU not in chosen:
        chosen.append(_CPU)
    return chosen, skipped


def resolve_providers(
    wanted: tuple[str, ...] | None = None, available: list[str] | tuple[str, ...] | None = None
) -> list[str]:
    """Providers to try, in order: the wanted ones (or the preference list) that this onnxruntime offers."""
    return plan_providers(wanted, available)[0]


def _session_options(config: SessionConfig) -> tuple[Any, dict[str, Any]]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = config.log_severity
    level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[config.graph_optimization]
    opts.graph_optimization_level = level
    if config.intra_op_threads:
        opts.intra_op_num_threads = config.intra_op_threads
    if config.inter_op_threads:
        opts.inter_op_num_threads = config.inter_op_threads
    if not config.allow_spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # Read back what the SessionOptions object holds (names differ across onnxruntime versions: log real values).
    applied = {
        "graph_optimization_level": str(opts.graph_optimization_level).rsplit(".", 1)[-1],
        "intra_op_num_threads": opts.intra_op_num_threads,
        "inter_op_num_threads": opts.inter_op_num_threads,
        "allow_spinning": config.allow_spinning,
    }
    return opts, applied


def _first_line(exc: BaseException, limit: int = 300) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]


def open_session(
    path: str | Path | bytes,
    config: SessionConfig | None = None,
    *,
    external_data: dict[str, bytes] | None = None,
) -> SessionInfo:
    """Open an InferenceSession, falling back provider by provider; reports the providers in use and why others
    are not.

    ``external_data`` (location -> file bytes) hands a model given as bytes its external data files from memory, so
    onnxruntime opens no file itself (the server reads them through its model-root checks). Keep the bytes alive as
    long as the session.

    Raises:
        CheckError: the file does not exist or onnxruntime cannot load it with any provider.
    """
    import onnxruntime as ort

    config = config or SessionConfig()
    if not isinstance(path, bytes) and not Path(path).is_file():
        raise CheckError(
            f"ONNX file {str(path)!r} does not exist", hint="check the path (onnxship inspect PATH)"
        )
    opts, applied = _session_options(config)
    if external_data:
        import numpy as np

        if not hasattr(opts, "add_external_initializers_from_files_in_memory"):
            raise CheckError(
                f"onnxruntime {ort.__version__} cannot take external data files from memory",
                hint="pip install -U 'onnxruntime>=1.19'",
            )

        buffers = [np.frombuffer(b, dtype=np.uint8) for b in external_data.values()]
        opts.add_external_initializers_from_files_in_memory(
            list(external_data), buffers, [len(b) for b in buffers]
        )
    requested = list(config.providers) if config.providers else list(PROVIDER_PREFERENCE)
    providers, fallbacks = plan_providers(config.providers)
    for fb in fallbacks:
        log.warning("execution provider %s skipped: %s", fb.provider, fb.reason)
    if config.trt_engine_cache and "TensorrtExecutionProvider" in providers:
        Path(config.trt_engine_cache).mkdir(parents=True, exist_ok=True)
    src = path if isinstance(path, bytes) else str(path)
    last_exc: Exception | None = None
    for i in range(len(providers)):
        tried = providers[i:]
        prov_args = [(p, provider_options(p, config)) for p in tried]
        try:
            sess = ort.InferenceSession(src, sess_options=opts, providers=prov_args)
        except Exception as exc:  # provider creation or model load failure
            last_exc = exc
            if tried[0] == _CPU:
                break
            fb = ProviderFallback(tried[0], f"failed to create: {_first_line(exc)}")
            fallbacks.append(fb)
            log.warning("execution provider %s %s; falling back to %s", fb.provider, fb.reason, tried[1:])
            continue
        in_use = list(sess.get_providers())
        for p in tried:
            if p not in in_use:  # onnxruntime drops a provider it cannot initialise and only logs it itself
                fb = ProviderFallback(
                    p,
                    "onnxruntime did not enable it at session creation (raise log_severity "
                    "to 0 to see its own message)",
                )
                fallbacks.append(fb)
                log.warning("execution provider %s not in use: %s", p, fb.reason)
        log.info("onnxruntime session on %s (session options %s)", in_use, applied)
        try:
            prov_opts = {k: dict(v) for k, v in sess.get_provider_options().items()}
        except Exception:  # older builds lack it; the report then just has no options
            prov_opts = {}
        return SessionInfo(
            session=sess,
            requested=requested,
            providers=in_use,
            fallbacks=fallbacks,
            provider_options=prov_opts,
            session_options=applied,
        )
    msg = _first_line(last_exc, 400) if last_exc else "unknown error"
    where = str(path) if not isinstance(path, bytes) else "model"
    raise CheckError(
        f"onnxruntime cannot load {where}: {msg}",
        hint="run `onnxship inspect` on it; re-export if the file is truncated",
    ) from last_exc


def create_session(
    path: str | Path | bytes, config: SessionConfig | None = None
) -> onnxruntime.InferenceSession:
    """Open an InferenceSession (see :func:`open_session`, which also says which providers are in use and why)."""
    return open_session(path, config).session

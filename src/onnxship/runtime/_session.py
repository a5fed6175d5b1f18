"""The one ONNX Runtime session factory of the project (every InferenceSession is made here).

DO NOT import onnxruntime at module level: this module is imported lazily by runners and the server.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxship._errors import CheckError

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["PROVIDER_PREFERENCE", "SessionConfig", "create_session", "resolve_providers"]

log = logging.getLogger("onnxship.runtime")

# Fastest first; only those reported by ort.get_available_providers() are tried.
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


@dataclass(frozen=True)
class SessionConfig:
    """How to open an ONNX Runtime session."""

    providers: tuple[str, ...] | None = None  # None: preference order filtered by availability
    intra_op_threads: int = 0  # 0: onnxruntime's default
    inter_op_threads: int = 0
    graph_optimization: str = "all"  # disable | basic | extended | all
    allow_spinning: bool = True  # False for servers: spinning threads starve the HTTP loop
    provider_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per provider name
    log_severity: int = 3  # 3 = errors only


def resolve_providers(wanted: tuple[str, ...] | None = None) -> list[str]:
    """Providers to try, in order: the wanted ones (or the preference list) that this onnxruntime offers."""
    import onnxruntime as ort
    available = set(ort.get_available_providers())
    order = list(wanted) if wanted else list(PROVIDER_PREFERENCE)
    chosen = [p for p in order if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def create_session(path: str | Path | bytes, config: SessionConfig | None = None) -> onnxruntime.InferenceSession:
    """Open an InferenceSession, falling back provider by provider; the providers in use are logged.

    Raises:
        CheckError: the file does not exist or onnxruntime cannot load it with any provider.
    """
    import onnxruntime as ort
    config = config or SessionConfig()
    if not isinstance(path, bytes) and not Path(path).is_file():
        raise CheckError(f"ONNX file {str(path)!r} does not exist")
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
    providers = resolve_providers(config.providers)
    src = path if isinstance(path, bytes) else str(path)
    last_exc: Exception | None = None
    for i in range(len(providers)):
        tried = providers[i:]
        prov_args = [(p, config.provider_options.get(p, {})) for p in tried]
        try:
            sess = ort.InferenceSession(src, sess_options=opts, providers=prov_args)
        except Exception as exc:  # provider creation or model load failure
            last_exc = exc
            if tried[0] == "CPUExecutionProvider":
                break
            log.warning("provider %s failed (%s); falling back to %s", tried[0], str(exc).splitlines()[0][:200],
                        tried[1:])
            continue
        log.info("onnxruntime session on %s", sess.get_providers())
        return sess
    msg = str(last_exc).strip().splitlines()[0][:400] if last_exc else "unknown error"
    raise CheckError(f"onnxruntime cannot load {str(path) if not isinstance(path, bytes) else 'model'}: {msg}",
                     hint="run `onnxship inspect` on it; re-export if the file is truncated") from last_exc

"""``onnxship.serve``: select and check a model, then run the KServe v2 server until stopped.

DO NOT import onnxruntime or torch at module level.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from onnxship._errors import ServeError, require
from onnxship.serve._app import create_app
from onnxship.serve._config import ServeConfig
from onnxship.serve._limits import ServeGuard, uvicorn_settings
from onnxship.serve._manager import ModelManager

__all__ = ["ServeResult", "bind_socket", "serve"]

log = logging.getLogger("onnxship.serve")


@dataclass
class ServeResult:
    """What a server did before it stopped."""

    url: str
    model_name: str
    model_version: int  # the last version served (1 + successful reloads)
    requests: int
    reloads: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0 picks a free one; the caller reads it back from getsockname()).

    Raises:
        ServeError: the address is in use or cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="pick another --port (0 = any free port) or stop what uses it",
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _graceful_server(uvicorn: Any) -> Any:
    """uvicorn.Server that stops on SIGINT/SIGTERM and returns (uvicorn re-raises the signal after shutdown, which
    would kill the process before serve() can report). A second signal of either kind stops without waiting for
    in-flight requests (uvicorn alone only forces on a second SIGINT)."""
    import contextlib
    import signal

    class GracefulServer(uvicorn.Server):  # type: ignore[misc, name-defined]
        @contextlib.contextmanager
        def capture_signals(self):  # type: ignore[no-untyped-def]
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit:
                self.force_exit = True
            super().handle_exit(sig, frame)

    return GracefulServer


def serve(config: ServeConfig, *, on_ready: Callable[[str, ModelManager], None] | None = None) -> ServeResult:
    """Select and golden-check a model, then serve it over KServe v2 REST until SIGINT/SIGTERM.

    Args:
        config: the ServeConfig (call ``config.with_env()`` first to honour MODEL_PATH / ONNXSHIP_TOKEN / .env).
        on_ready: called with the URL and the manager once the socket listens and the model is checked.

    Raises:
        ServeError: no model could be selected and checked, or the address cannot be bound.
        MissingDependencyError: the ``serve`` extra (uvicorn, orjson) is not installed.

    Example:
        >>> serve(ServeConfig(releases="releases").with_env())  # doctest: +SKIP
    """
    uvicorn = require("uvicorn", "serve")
    require("orjson", "serve")

    start = time.perf_counter()
    manager = ModelManager(config)
    model = manager.start()
    sock = bind_socket(config.host, config.port)
    host, port = sock.getsockname()[:2]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    guard = ServeGuard(create_app(manager), config.max_inflight)
    server = _graceful_server(uvicorn)(uvicorn.Config(guard, **uvicorn_settings(config)))
    if on_ready is not None:
        on_ready(url, manager)
    log.info("serving %s version %d on %s", model.name, model.version, url)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        manager.close()
    current = manager.current
    return ServeResult(
        url=url,
        model_name=current[0].name if current else model.name,
        model_version=manager.version,
        requests=sum(n for (_, ep, _s), n in manager.metrics.requests.items() if ep == "infer"),
        reloads=dict(manager.metrics.reloads),
        seconds=time.perf_counter() - start,
    )

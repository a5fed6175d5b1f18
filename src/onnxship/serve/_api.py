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

__all__ = ["ServeResult", "bind_socket", "reserve_port", "serve", "uvicorn_server"]

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


def reserve_port(host: str, port: int, what: str = "--port") -> socket.socket:
    """A bound, NOT listening socket with SO_REUSEPORT: it fixes the port (0 picks one) while the processes that
    serve bind their own listening sockets to it (the kernel spreads connections over them).

    Raises:
        ServeError: the port is in use or cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # first without SO_REUSEPORT: a port another server (even another onnxship) listens on is refused, never
        # silently shared with it; port 0 gets a free port this way too
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            port = probe.getsockname()[1]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint=f"pick another {what} (0 = any free port) or stop what uses it",
        ) from None
    return sock


def listen_reuseport(host: str, port: int) -> socket.socket:
    """A listening socket on a port reserved by :func:`reserve_port` (one per worker process)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _one_write_protocol(base: type) -> type:
    """uvicorn's HTTP protocol writing each response with one send(): the status line and headers are held until
    the body follows (uvicorn writes them separately, and with TCP_NODELAY each write is a packet and a syscall)."""

    class _Coalescing:
        __slots__ = ("_held", "_t")

        def __init__(self, transport: Any) -> None:
            self._t = transport
            self._held: bytes | None = None

        def write(self, data: bytes) -> None:
            held = self._held
            if held is not None:
                self._held = None
                self._t.write(held + data)
            elif data[:9] == b"HTTP/1.1 " and data[9:12] != b"100":  # a response head: wait for its body
                self._held = bytes(data)
            else:
                self._t.write(data)

        def flush(self) -> None:
            if self._held is not None:
                held, self._held = self._held, None
                self._t.write(held)

        def close(self) -> None:
            self.flush()
            self._t.close()

        def write_eof(self) -> None:
            self.flush()
            self._t.write_eof()

        def __getattr__(self, name: str) -> Any:
            return getattr(self._t, name)

    class OneWriteProtocol(base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(_Coalescing(transport))

        def on_response_complete(self) -> None:
            self.transport.flush()  # a HEAD response has no body write to carry its head
            super().on_response_complete()

    return OneWriteProtocol


def uvicorn_server(
    app: Any, config: ServeConfig, signals: tuple[int, ...] | None = None, slots: Any = None
) -> Any:
    """The uvicorn.Server for ``app``: uvloop + httptools when installed, one write per response, no access log,
    proxy headers only when asked (--proxy-headers)."""
    uvicorn = require("uvicorn", "serve")
    settings = uvicorn_settings(config)  # the connection limits (serve/_limits.py)
    settings["http"] = _one_write_protocol(settings["http"])
    settings["proxy_headers"] = config.proxy_headers
    server = _graceful_server(uvicorn, signals)(
        uvicorn.Config(ServeGuard(app, config.max_inflight, slots), **settings)
    )
    tasks = getattr(getattr(server, "server_state", None), "tasks", None)
    if isinstance(tasks, set) and hasattr(app, "in_flight"):
        # uvicorn creates one task per parsed request: requests parsed in the same loop iteration are all in this
        # set before the first one's handler runs, so "only me" really means no batch could form now
        app.in_flight = tasks.__len__
    return server


def _graceful_server(uvicorn: Any, signals: tuple[int, ...] | None = None) -> Any:
    """uvicorn.Server that stops on SIGINT/SIGTERM (or ``signals``) and returns (uvicorn re-raises the signal after
    shutdown, which would kill the process before serve() can report). A second signal of either kind stops without
    waiting for in-flight requests (uvicorn alone only forces on a second SIGINT)."""
    import contextlib
    import signal

    caught = signals if signals is not None else (signal.SIGINT, signal.SIGTERM)

    class GracefulServer(uvicorn.Server):  # type: ignore[misc, name-defined]
        @contextlib.contextmanager
        def capture_signals(self):  # type: ignore[no-untyped-def]
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in caught}
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
    require("uvicorn", "serve")
    require("orjson", "serve")
    if config.workers > 1:
        from onnxship.serve._workers import run_cluster

        return run_cluster(config, on_ready=on_ready)

    start = time.perf_counter()
    manager = ModelManager(config)
    model = manager.start()
    sock = bind_socket(config.host, config.port)
    host, port = sock.getsockname()[:2]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    app = create_app(manager)
    grpc_hold = None
    if config.grpc_port is not None:
        from onnxship.serve._grpc import attach_grpc

        grpc_hold = reserve_port(config.host, config.grpc_port, "--grpc-port")
        manager.grpc_address = attach_grpc(app, config.host, grpc_hold.getsockname()[1])  # type: ignore[attr-defined]
    server = uvicorn_server(app, config)
    if on_ready is not None:
        on_ready(url, manager)
    log.info("serving %s version %d on %s", model.name, model.version, url)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        if grpc_hold is not None:
            grpc_hold.close()
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

"""Connection limits of the HTTP server: nothing hangs, nothing piles up, shutdown always finishes.

:func:`uvicorn_settings` is the one place the server's uvicorn options are decided (every runner, single process or
several workers, passes them to ``uvicorn.Config``):

* HTTP only (``ws="none"``): an ``Upgrade`` request is answered 400 by the app, never by a websocket stack.
* ``header_timeout_s``: a new connection must send a complete request head within this time (a keep-alive
  connection: within this time of the head's first byte); otherwise 408 and close (a connection that never sent
  anything is just closed). Heads larger than ``MAX_HEAD_BYTES`` get 431.
* ``body_timeout_s``: a request body must be complete within this time of its head; a stalled upload gets 408 and
  its connection is closed.
* ``keep_alive_s``: idle keep-alive connections are closed after this long.
* ``max_connections`` (capped by the open-file limit, see :func:`connection_budget`): past it, the oldest idle
  connection (no request in progress) is closed to make room, so idle or stalled clients never lock out the health
  probe; with none idle, the newcomer gets 503.
* ``max_inflight``: requests being processed at once; more get 503 (the health probes are always answered).
* ``shutdown_timeout_s``: after SIGTERM/SIGINT, in-flight requests get this long to finish; the rest are answered
  503 and the process exits. A second signal exits at once.

DO NOT import uvicorn at module level (the serve package imports without it).
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

__all__ = [
    "MAX_HEAD_BYTES",
    "PROBE_PATHS",
    "ServeGuard",
    "connection_budget",
    "guarded_protocol",
    "uvicorn_settings",
]

MAX_HEAD_BYTES = 64 * 1024  # request line + headers
PROBE_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/v2/health/live/", "/v2/health/ready/"})

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _raw_response(status: int, reason: str, message: str) -> bytes:
    body = orjson.dumps({"error": message})
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"connection: close\r\n\r\n"
    ).encode("latin-1") + body


def connection_budget(reserve: int = 64) -> int:
    """How many connections this process can hold open: the open-file limit (raised to its hard limit when
    allowed) minus ``reserve`` descriptors for model files, logs and the runtime. Past it accept() would fail and
    nothing, not even the health probe, could connect."""
    try:
        import resource
    except ImportError:  # not on POSIX: no such limit to respect
        return 1 << 30
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        if want > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
                soft = want
            except (ValueError, OSError):
                pass
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    return max(8, int(soft) - reserve)


def guarded_protocol(base: type, config: Any) -> type:
    """``base`` (uvicorn's httptools or h11 protocol class) with head/body timeouts, a head size limit and the
    connection cap of ``config`` (a ServeConfig)."""
    header_timeout = float(config.header_timeout_s)
    body_timeout = float(config.body_timeout_s)
    max_connections = min(int(config.max_connections), connection_budget())

    class GuardedProtocol(base):  # type: ignore[misc, valid-type]
        _guard_timer: asyncio.TimerHandle | None = None
        _guard_kind: str | None = None  # "head" | "body": what the armed timer waits for
        _guard_cycle: Any = None
        _guard_head_bytes = 0
        _guard_last = 0.0

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._guard_last = time.monotonic()
            self._guard_head_bytes = 0
            self._guard_arm(header_timeout, self._guard_head_expired, "head")
            if len(self.connections) > max_connections:
                self._guard_make_room()

        def connection_lost(self, exc: Exception | None) -> None:
            self._guard_cancel()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            self._guard_last = time.monotonic()
            before = self.cycle
            head = before is None or before.response_complete  # these bytes start or continue a request head
            if head and self._guard_kind != "head":
                self._guard_arm(header_timeout, self._guard_head_expired, "head")
            super().data_received(data)
            cycle = self.cycle
            if cycle is not None and cycle is not self._guard_cycle:  # a new request head was parsed
                self._guard_cycle = cycle
                self._guard_head_bytes = 0
                if cycle.more_body:
                    self._guard_arm(body_timeout, self._guard_body_expired, "body")
                else:
                    self._guard_cancel()
            elif head:
                self._guard_head_bytes += len(data)
                if self._guard_head_bytes > MAX_HEAD_BYTES:
                    self._guard_refuse(
                        431, "Request Header Fields Too Large", "the request head is too large"
                    )
            elif self._guard_kind == "body" and cycle is not None and not cycle.more_body:
                self._guard_cancel()  # the body is complete

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._guard_last = time.monotonic()
            self._guard_head_bytes = 0
            self._guard_cancel()  # idle keep-alive: uvicorn's keep-alive timer; the next head arms ours

        # -- timers ------------------------------------------------------------------------------------------
        def _guard_arm(self, delay: float, callback: Callable[[], None], kind: str) -> None:
            self._guard_cancel()
            if delay > 0:
                self._guard_timer = asyncio.get_running_loop().call_later(delay, callback)
                self._guard_kind = kind

        def _guard_cancel(self) -> None:
            if self._guard_timer is not None:
                self._guard_timer.cancel()
                self._guard_timer = None
            self._guard_kind = None

        def _guard_head_expired(self) -> None:
            self._guard_timer = self._guard_kind = None
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                return
            if self._guard_head_bytes:
                self._guard_refuse(
                    408, "Request Timeout", f"no complete request head within {header_timeout:g} s"
                )
            elif not self.transport.is_closing():
                self.transport.close()  # opened and never used

        def _guard_body_expired(self) -> None:
            self._guard_timer = self._guard_kind = None
            cycle = self.cycle
            if cycle is None or not cycle.more_body or cycle.response_complete:
                return
            started = cycle.response_started
            cycle.keep_alive = False
            cycle.disconnected = True  # the app's next receive() is http.disconnect; its send() is dropped
            cycle.message_event.set()
            if started:
                self.transport.close()
            else:
                self._guard_refuse(
                    408, "Request Timeout", f"the request body did not arrive within {body_timeout:g} s"
                )

        def _guard_refuse(self, status: int, reason: str, message: str) -> None:
            self._guard_cancel()
            if not self.transport.is_closing():
                self.transport.write(_raw_response(status, reason, message))
                self.transport.close()

        def _guard_make_room(self) -> None:
            idle = [
                c
                for c in self.connections
                if c is not self
                and isinstance(c, GuardedProtocol)
                and (c.cycle is None or c.cycle.response_complete)
                and not c.transport.is_closing()
            ]
            if idle:
                oldest = min(idle, key=lambda c: c._guard_last)
                if oldest._guard_head_bytes:  # a request head in progress gets an answer
                    oldest._guard_refuse(
                        503,
                        "Service Unavailable",
                        "connection closed to make room (too many open connections)",
                    )
                else:  # an idle connection is just closed (a response nobody asked for would confuse clients)
                    oldest._guard_cancel()
                    oldest.transport.close()
            else:
                self._guard_refuse(
                    503,
                    "Service Unavailable",
                    f"the server already holds {max_connections} busy connections; retry shortly",
                )

    GuardedProtocol.__name__ = GuardedProtocol.__qualname__ = f"Guarded{base.__name__}"
    return GuardedProtocol


class ServeGuard:
    """ASGI wrapper: caps requests in flight (probes always pass) and answers 503 to requests cancelled by the
    graceful-shutdown timeout."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_inflight: int, slots: Any = None) -> None:
        self.app = app
        self.max_inflight = max_inflight
        self.inflight = 0
        # several worker processes: a semaphore of max_inflight slots they share (the cap is the server's)
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        slots = self.slots if scope["path"] not in PROBE_PATHS else None
        if (
            not slots.acquire(False)
            if slots is not None
            else self.inflight >= self.max_inflight and scope["path"] not in PROBE_PATHS
        ):
            await _send_json(
                send,
                503,
                f"the server is busy ({self.max_inflight} requests in flight, --max-inflight); retry shortly",
            )
            return
        started = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        self.inflight += 1
        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if started:
                raise
            # the graceful-shutdown timeout cancelled this request: say so instead of dropping the connection
            await _send_json(send, 503, "the server is shutting down; retry on another instance")
        finally:
            self.inflight -= 1
            if slots is not None:
                slots.release()

    def __getattr__(self, name: str) -> Any:  # ServeApp attributes (manager, metrics) stay reachable
        return getattr(self.app, name)


async def _send_json(send: Send, status: int, message: str) -> None:
    body = orjson.dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def uvicorn_settings(config: Any) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` (besides the app) from a ServeConfig: loop, HTTP protocol with the
    guards above, no websockets, keep-alive and graceful-shutdown timeouts, quiet headers and logs."""
    from uvicorn.config import HTTP_PROTOCOLS
    from uvicorn.importer import import_from_string

    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    base = import_from_string(HTTP_PROTOCOLS[http])
    return {
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": guarded_protocol(base, config),
        "ws": "none",
        "lifespan": "on",
        "log_level": config.log_level,
        "access_log": False,
        "interface": "asgi3",
        "timeout_keep_alive": config.keep_alive_s,
        "timeout_graceful_shutdown": config.shutdown_timeout_s,
        "limit_concurrency": None,  # uvicorn's limit counts idle connections too: ServeGuard caps requests instead
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "server_header": False,
        "date_header": False,
    }

"""The ASGI application: KServe v2 / Open Inference Protocol REST plus /reload, /version and /metrics.

A plain ASGI callable rather than a framework app: the infer path is the product, and on a 2-core machine the
per-request cost of routing, dependency injection and response models is a large share of the budget (the issue's
goal is the JSON/HTTP path). Every refusal is a JSON ``{"error": ...}`` with 400/401/403/404/405/413/422; an
unexpected exception is logged with its traceback and answered 500.

Size: over 400 lines: one plain ASGI callable (routing, the infer path, the admin routes) kept flat on
purpose: every layer of indirection costs on the 2-core request budget.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from onnxship._errors import OnnxshipError
from onnxship._version import __version__
from onnxship.serve._files import redact_paths
from onnxship.serve._manager import ModelManager
from onnxship.serve._model import ServedModel
from onnxship.serve._protocol import encode_error, encode_infer_response, parse_infer_request
from onnxship.serve._signature import RequestError

if TYPE_CHECKING:
    from onnxship.serve._workers import Cluster

__all__ = ["ServeApp", "bearer_token_matches", "create_app", "queue_checked", "submit_checked"]

log = logging.getLogger("onnxship.serve")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_JSON = b"application/json"
_INFER_LABEL = ["infer", ""]  # shared, never written: the infer fast path labels its requests with this
_MAX_CACHED_PATHS = 64  # infer URLs remembered for the fast path (served name, with or without a version)
_OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")  # probes stay reachable without the token


class _Disconnected(Exception):
    pass


def bearer_token_matches(value: bytes, token: bytes) -> bool:
    """``Authorization: Bearer <token>`` (REST header or gRPC metadata) names ``token``.

    compare_digest on every path: the time taken does not depend on how much of the token matched.
    """
    scheme, _, given = value.partition(b" ")
    return hmac.compare_digest(given.strip(), token) and scheme.lower() == b"bearer"


def _int_header(value: bytes, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise RequestError(400, f"{name} {value.decode('latin-1')!r} is not a number") from None


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


class ServeApp:
    """ASGI callable serving the ModelManager's current model."""

    def __init__(self, manager: ModelManager, cluster: Cluster | None = None) -> None:
        self.manager = manager
        self.metrics = manager.metrics
        self.cluster = cluster  # several worker processes: /metrics sums them all
        token = manager.config.token
        self._token = token.encode("utf-8") if token else None
        self._limit = manager.config.max_body_bytes
        self._infer_paths: dict[str, tuple[str, str | None]] = {}  # URL -> (model name, version)
        # HTTP requests this process is handling, including ones whose handler has not started yet (the server
        # runner sets it; the default never lets a request skip the batcher)
        self.in_flight: Callable[[], int] = lambda: 2
        # awaited on lifespan startup/shutdown (the gRPC server, the worker control channel)
        self.on_startup: list[Callable[[], Awaitable[None]]] = []
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self._lifespan(receive, send)
            elif kind == "websocket":  # only reachable when uvicorn runs with websocket support: refuse (403)
                await send({"type": "websocket.close", "code": 1008})
            return
        start = time.perf_counter()
        hit = self._infer_paths.get(scope["path"])  # the hot path: no parsing, no allocation for routing
        label = _INFER_LABEL if hit is not None else ["other", ""]
        try:
            if hit is not None:
                status = await self._infer(scope, receive, send, hit[0], hit[1])
            else:
                status = await self._dispatch(scope, receive, send, label)
        except _Disconnected:
            status = 499
        except RequestError as exc:
            status = exc.status
            await self._reply(send, status, encode_error(exc.message), extra=self._extra(status))
        except Exception:  # a bug: keep the traceback in the log, answer something
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            status = 500
            await self._reply(send, 500, encode_error("internal server error (see the server log)"))
        name = hit[0] if hit is not None else label[1]
        current = self.manager.current
        # only the served name becomes a label: names from URLs would make the metric's cardinality unbounded
        model_label = name if current is not None and name == current[0].name else ""
        self.metrics.request(model_label, label[0], status, time.perf_counter() - start)

    @staticmethod
    def _extra(status: int) -> list[tuple[bytes, bytes]]:
        if status == 401:
            return [(b"www-authenticate", b'Bearer realm="onnxship"')]
        if status == 413:
            return [(b"connection", b"close")]
        return []

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    for hook in self.on_startup:
                        await hook()
                except Exception as exc:
                    log.exception("server startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                for hook in self.on_shutdown:
                    try:
                        await hook()
                    except Exception:
                        log.exception("server shutdown step failed")
                self.manager.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def _reply(
        send: Send,
        status: int,
        body: bytes,
        content_type: bytes = _JSON,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        if extra:
            headers += extra
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _body(self, scope: Scope, receive: Receive, headers: _Headers | None = None) -> bytes:
        h = headers or _Headers(scope)
        length = h.content_length
        if length is not None:
            n = _int_header(length, "Content-Length")
            if n > self._limit:
                raise RequestError(
                    413,
                    f"request body of {n} bytes exceeds the limit of {self._limit} bytes (--max-body-bytes)",
                )
        encoding = h.content_encoding
        if encoding not in (None, b"identity"):
            raise RequestError(
                400,
                f"Content-Encoding {encoding.decode('latin-1')!r} is not supported; send the "
                f"body uncompressed",
            )
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise _Disconnected
        body = msg.get("body", b"")
        if not msg.get("more_body", False):  # the whole body in one message: the usual case
            if len(body) > self._limit:
                raise RequestError(
                    413, f"request body exceeds the limit of {self._limit} bytes (--max-body-bytes)"
                )
            return body
        chunks: list[bytes] = [body]
        size = len(body)
        while True:
            if size > self._limit:
                raise RequestError(
                    413, f"request body exceeds the limit of {self._limit} bytes (--max-body-bytes)"
                )
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise _Disconnected
            chunk = msg.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            if not msg.get("more_body", False):
                if size > self._limit:
                    raise RequestError(
                        413, f"request body exceeds the limit of {self._limit} bytes (--max-body-bytes)"
                    )
                return b"".join(chunks)

    def _authorized(self, scope: Scope, value: bytes | None = None) -> bool:
        if self._token is None:
            return True
        if value is None:
            value = _header(scope, b"authorization") or b""
        return bearer_token_matches(value, self._token)

    def _model(self, name: str, version: str | None) -> ServedModel:
        current = self.manager.current
        if current is None:
            raise RequestError(503, "no model is loaded yet")
        model = current[0]
        if name != model.name:
            raise RequestError(404, f"unknown model {name!r}; this server serves {model.name!r}")
        if version is not None and version != str(model.version):
            raise RequestError(
                404, f"model {name!r} has no version {version!r}; the serving version is {model.version}"
            )
        return model

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send, label: list[str]) -> int:
        path: str = scope["path"]
        method: str = scope["method"]
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
        if _header(scope, b"upgrade") is not None:
            raise RequestError(
                400, "protocol upgrades (WebSocket, h2c) are not supported: this server speaks HTTP/1.1 only"
            )
        if path not in _OPEN_PATHS and not self._authorized(scope):
            raise RequestError(401, "missing or wrong bearer token (send 'Authorization: Bearer <token>')")
        if path.startswith("/v2/models/"):
            parts = path[len("/v2/models/") :].split("/")
            name, rest = parts[0], parts[1:]
            version = None
            if len(rest) >= 2 and rest[0] == "versions":
                version, rest = rest[1], rest[2:]
            action = rest[0] if len(rest) == 1 else ("" if not rest else None)
            label[1] = name
            if action == "infer":
                label[0] = "infer"
                current = self.manager.current
                if (
                    current is not None
                    and name == current[0].name
                    and len(self._infer_paths) < _MAX_CACHED_PATHS
                ):
                    self._infer_paths[scope["path"]] = (name, version)
                return await self._infer(scope, receive, send, name, version)
            if action == "ready":
                label[0] = "model_ready"
                _allow(method, "GET")
                self._model(name, version)
                await self._reply(send, 200, orjson.dumps({"name": name, "ready": True}))
                return 200
            if action == "":
                label[0] = "model_metadata"
                _allow(method, "GET")
                await self._reply(send, 200, orjson.dumps(self._metadata(self._model(name, version))))
                return 200
            raise RequestError(404, f"no route {redact_paths(path)!r}")
        handler = self._ROUTES.get(path)
        if handler is None:
            raise RequestError(
                404,
                f"no route {redact_paths(path)!r}; see /v2, /v2/models/<name>, /v2/models/<name>/infer, "
                f"/reload, /version, /metrics",
            )
        want, fn = handler
        label[0] = path.strip("/").replace("/", "_")
        _allow(method, want)
        return await fn(self, scope, receive, send)

    # -- infer -----------------------------------------------------------------------------------------------
    async def _infer(self, scope: Scope, receive: Receive, send: Send, name: str, version: str | None) -> int:
        headers = _Headers(scope)
        if headers.upgrade is not None:
            raise RequestError(
                400, "protocol upgrades (WebSocket, h2c) are not supported: this server speaks HTTP/1.1 only"
            )
        if self._token is not None and not self._authorized(scope, headers.authorization or b""):
            raise RequestError(401, "missing or wrong bearer token (send 'Authorization: Bearer <token>')")
        _allow(scope["method"], "POST")
        self._model(name, version)  # 404 before reading a body for a model that is not here
        metrics = self.metrics
        metrics.inflight += 1
        try:
            body = await self._body(scope, receive, headers)
            header = headers.inference_header
            header_len = None if header is None else _int_header(header, "Inference-Header-Content-Length")
            model = self._model(name, version)  # the model that answers (a reload may have happened)
            # shapes are checked against the signature before any array is built
            request = parse_infer_request(body, header_len, model.signature)
            outputs = await submit_checked(
                self.manager, model, request.feeds, request.declared, request.outputs, self.in_flight() <= 1
            )
            payload, json_len = encode_infer_response(model.name, str(model.version), request, outputs)
        finally:
            metrics.inflight -= 1
        if json_len is None:
            await self._reply(send, 200, payload)
        else:
            await self._reply(
                send,
                200,
                payload,
                b"application/octet-stream",
                [(b"inference-header-content-length", str(json_len).encode())],
            )
        return 200

    @staticmethod
    def _metadata(model: ServedModel) -> dict[str, Any]:
        sig = model.signature
        return {
            "name": model.name,
            "versions": [str(model.version)],
            "platform": "onnxruntime_onnx" if model.engine == "onnxruntime" else "pytorch_libtorch",
            "inputs": [t.to_v2() for t in sig.inputs],
            "outputs": [t.to_v2() for t in sig.outputs],
            "parameters": {
                "release": model.release,
                "engine": model.engine,
                "golden": model.golden.get("status"),
                "verified_dims": {t.name: [d.to_dict() for d in t.dims] for t in sig.inputs},
                "max_batch": sig.batch_max,
                "dynamic_batching": sig.batchable,
            },
        }

    # -- other routes ----------------------------------------------------------------------------------------
    async def _live(self, scope: Scope, receive: Receive, send: Send) -> int:
        await self._reply(send, 200, b'{"live":true}')
        return 200

    async def _ready(self, scope: Scope, receive: Receive, send: Send) -> int:
        ready = self.manager.ready
        await self._reply(send, 200 if ready else 503, orjson.dumps({"ready": ready}))
        return 200 if ready else 503

    async def _server(self, scope: Scope, receive: Receive, send: Send) -> int:
        await self._reply(
            send,
            200,
            orjson.dumps({"name": "onnxship", "version": __version__, "extensions": ["binary_tensor_data"]}),
        )
        return 200

    async def _version(self, scope: Scope, receive: Receive, send: Send) -> int:
        current = self.manager.current
        doc: dict[str, Any] = {
            "onnxship": __version__,
            "selection": self.manager.selection,
            "last_reload": self.manager.last_reload,
            "model_root": self.manager.public_root,  # never the absolute path
            "config_notes": list(self.manager.config.notes),
            "worker_pid": os.getpid(),  # which server process answered (several with --workers)
        }
        if current is not None:
            doc.update(current[0].describe())
        await self._reply(send, 200, orjson.dumps(doc))
        return 200

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> int:
        if self.cluster is not None:  # every worker's counters, summed
            text = await self.cluster.metrics_text()
        else:
            current = self.manager.current
            text = self.metrics.render(
                current[0].name if current else None, self.manager.version, self.manager.ready
            )
        await self._reply(send, 200, text.encode(), b"text/plain; version=0.0.4; charset=utf-8")
        return 200

    async def _reload(self, scope: Scope, receive: Receive, send: Send) -> int:
        body = await self._body(scope, receive)
        model_path = None
        if body.strip():
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise RequestError(
                    400, 'the reload body is not JSON; send {"model_path": "<path>"}'
                ) from None
            if not isinstance(doc, dict) or not set(doc) <= {"model_path"}:
                raise RequestError(
                    400, 'the reload body must be {"model_path": "<path below the model root>"}'
                )
            model_path = doc.get("model_path")
            if model_path is not None and not isinstance(model_path, str):
                raise RequestError(400, f"model_path must be a string, got {type(model_path).__name__}")
        try:
            # with several workers the manager's `agree` hook has every worker load and check it, or none swaps
            result = await self.manager.reload(model_path)
        except OnnxshipError as exc:
            if self.cluster is not None:
                await self.cluster.reloaded()
            status = int(getattr(exc, "status", 422))
            detail = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
            await self._reply(send, status, orjson.dumps({"error": detail, "serving": self._serving()}))
            return status
        if self.cluster is not None:
            await self.cluster.reloaded()
        await self._reply(send, 200, orjson.dumps(result))
        return 200

    def _serving(self) -> dict[str, Any] | None:
        current = self.manager.current
        if current is None:
            return None
        return {
            "model_name": current[0].name,
            "model_version": str(current[0].version),
            "release": current[0].release,
        }

    _ROUTES: dict[str, tuple[str, Callable[..., Awaitable[int]]]] = {
        "/v2/health/live": ("GET", _live),
        "/v2/health/ready": ("GET", _ready),
        "/v2": ("GET", _server),
        "/version": ("GET", _version),
        "/metrics": ("GET", _metrics),
        "/reload": ("POST", _reload),
    }


async def submit_checked(
    manager: ModelManager,
    model: ServedModel,
    feeds: dict[str, Any],
    declared: dict[str, str],
    outputs: list[tuple[str, bool]] | None,
    solo: bool = False,
) -> dict[str, Any]:
    """Validate a parsed request against ``model``'s signature, queue it on that model's batcher, await it.

    Shared by REST and gRPC: the same checks and the same batcher answer both. ``solo``: the caller knows no
    other request is in flight in this process, so an idle batcher may run it at once (see Batcher.run_now).

    Raises:
        RequestError: 400 when the tensors do not fit the verified signature or name unknown outputs.
    """
    out = queue_checked(manager, model, feeds, declared, outputs, solo)
    return out if isinstance(out, dict) else await out


def queue_checked(
    manager: ModelManager,
    model: ServedModel,
    feeds: dict[str, Any],
    declared: dict[str, str],
    outputs: list[tuple[str, bool]] | None,
    solo: bool = False,
) -> dict[str, Any] | asyncio.Future[dict[str, Any]]:
    """:func:`submit_checked` without the await: the outputs (``solo`` and run in place) or the batcher's future
    (for callers that answer from a done-callback instead of a task, like the gRPC server)."""
    sig = model.signature
    sig.check(feeds, declared, ids=False)  # ids: once per batch, by the batcher (Batcher.validate)
    if outputs is not None:
        have = sig.output_names
        unknown = [n for n, _ in outputs if n not in have]
        if unknown:
            raise RequestError(
                400, f"requested output(s) {unknown} do not exist; the model's outputs are {have}"
            )
    current = manager.current
    assert current is not None and current[0] is model  # no await since _model(): no reload slipped in
    first = next(iter(feeds.values()))
    rows = int(first.shape[0]) if first.ndim else 1
    if solo:
        out = current[1].run_now(feeds, rows)
        if out is not None:
            return out
    return current[1].submit(feeds, rows)


class _Headers:
    """The request headers the infer path reads, found in one pass."""

    __slots__ = ("authorization", "content_encoding", "content_length", "inference_header", "upgrade")

    def __init__(self, scope: Scope) -> None:
        self.authorization = self.content_encoding = self.content_length = self.inference_header = None
        self.upgrade = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                self.content_length = value
            elif key == b"authorization":
                self.authorization = value
            elif key == b"inference-header-content-length":
                self.inference_header = value
            elif key == b"content-encoding":
                self.content_encoding = value
            elif key == b"upgrade":
                self.upgrade = value


def _allow(method: str, want: str) -> None:
    if method != want and not (want == "GET" and method == "HEAD"):
        raise RequestError(405, f"method {method} is not allowed here; use {want}")


def create_app(manager: ModelManager, cluster: Cluster | None = None) -> ServeApp:
    """The ASGI app for a started ModelManager (see :func:`onnxship.serve.serve` to run it)."""
    return ServeApp(manager, cluster)

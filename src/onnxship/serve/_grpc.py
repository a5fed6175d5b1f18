"""KServe v2 / Triton gRPC inference protocol beside REST: the same model manager, batcher, validation and auth.

The messages and the service are the protocol's published definitions, as generated modules shipped by
``tritonclient[grpc]`` (``inference.GRPCInferenceService``, a superset of KServe's ``grpc_predict_v2.proto`` with
the same package, service and message names). The transport is ``_h2``: HTTP/2 for unary gRPC calls on the same
event loop as the REST server (grpcio's own server cost more per call than the whole REST path), so a gRPC request
and a REST request can share one batch.

Served RPCs: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer (tensor contents or
``raw_input_contents``; outputs always come back as ``raw_output_contents``, as Triton does); any other method is
UNIMPLEMENTED. Refusals carry the REST message with a matching status code: INVALID_ARGUMENT (400/422),
UNAUTHENTICATED (401), PERMISSION_DENIED (403), NOT_FOUND (404), RESOURCE_EXHAUSTED (413: a message over
--max-body-bytes), UNAVAILABLE (503: no model yet, or --max-inflight ModelInfer calls in flight in this worker
process; each worker also caps a connection's concurrent streams at that number), DEADLINE_EXCEEDED (grpc-timeout).

DO NOT import onnxruntime, torch or tritonclient at module level.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxship._errors import MissingDependencyError, ServeError, require
from onnxship._version import __version__
from onnxship.serve import _h2
from onnxship.serve._app import bearer_token_matches, queue_checked
from onnxship.serve._h2 import Call
from onnxship.serve._limits import connection_budget
from onnxship.serve._signature import RequestError, datatype_of, numpy_dtype

if TYPE_CHECKING:
    from onnxship.serve._app import ServeApp
    from onnxship.serve._model import ServedModel

__all__ = ["GrpcService", "attach_grpc", "protocol_modules"]

log = logging.getLogger("onnxship.serve")

SERVICE = "inference.GRPCInferenceService"
_MAX_DIMS = 16
# typed contents field per datatype (FP16 has none in the protocol: it travels as raw_input_contents)
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
_OPEN = ("ServerLive", "ServerReady")  # probes stay reachable without the token, as on REST


def protocol_modules() -> Any:
    """The generated ``service_pb2`` module of the KServe v2 / Triton gRPC protocol.

    Raises:
        MissingDependencyError: grpcio, hpack or tritonclient[grpc] is not installed.
    """
    require("grpc", "serve")
    require("hpack", "serve")
    try:
        from tritonclient.grpc import service_pb2
    except (ImportError, RuntimeError) as exc:  # tritonclient.grpc raises RuntimeError without its grpc extra
        raise MissingDependencyError(
            f"the KServe v2 gRPC protocol definitions are not installed ({exc})",
            hint="pip install 'onnxship[serve]' (it brings grpcio and tritonclient[grpc])",
        ) from None
    return service_pb2


def _status_code(status: int) -> int:
    """The gRPC status code for a REST status."""
    code = {
        400: _h2.INVALID_ARGUMENT,
        401: _h2.UNAUTHENTICATED,
        403: _h2.PERMISSION_DENIED,
        404: _h2.NOT_FOUND,
        405: _h2.UNIMPLEMENTED,
        413: _h2.RESOURCE_EXHAUSTED,
        422: _h2.INVALID_ARGUMENT,
        503: _h2.UNAVAILABLE,
    }.get(status)
    if code is None:
        code = _h2.INVALID_ARGUMENT if 400 <= status < 500 else _h2.INTERNAL
    return code


class GrpcService:
    """The RPC handlers, bound to a ServeApp (its manager, metrics, token and model lookup).

    ``dispatch`` is called by the HTTP/2 layer with each complete request message. Health and metadata calls are
    answered at once. ModelInfer calls are parsed and checked at once, then queued on the model's batcher together
    with every other call that arrived in the same event-loop iteration (REST and gRPC alike share the batcher): a
    lone call with nothing else in flight runs in place, as on REST. Their answers are written from the batcher
    future's done-callback, so a call costs no task of its own.
    """

    def __init__(self, app: ServeApp) -> None:
        self.app = app
        self.manager = app.manager
        self.metrics = app.metrics
        self.pb = protocol_modules()
        token = self.manager.config.token
        self._token = token.encode("utf-8") if token else None
        self.max_inflight = self.manager.config.max_inflight
        self.pending = 0  # ModelInfer calls accepted and not answered yet
        self._incoming: list[_Infer] = []
        self._flush_scheduled = False
        pb = self.pb
        self._methods: dict[bytes, tuple[str, str, Any, Any]] = {}
        for name, fn in (
            ("ServerLive", self.server_live),
            ("ServerReady", self.server_ready),
            ("ModelReady", self.model_ready),
            ("ServerMetadata", self.server_metadata),
            ("ModelMetadata", self.model_metadata),
            ("ModelInfer", None),
        ):
            path = f"/{SERVICE}/{name}".encode()
            self._methods[path] = (name, f"grpc_{_snake(name)}", fn, getattr(pb, f"{name}Request"))

    # -- dispatch ----------------------------------------------------------------------------------------------
    def dispatch(self, call: Call, message: bytes) -> None:
        head = call.head
        assert head is not None
        entry = self._methods.get(head.path or b"")
        if entry is None:
            path = (head.path or b"").decode("latin-1")
            call.fail(_h2.UNIMPLEMENTED, f"method {path!r} is not served")
            return
        name, label, fn, request_type = entry
        start = time.perf_counter()
        status = 200
        model_label = ""
        try:
            if name not in _OPEN and not self._authorized(head.authorization):
                raise RequestError(
                    401, "missing or wrong bearer token (send metadata 'authorization: Bearer <token>')"
                )
            try:
                request = request_type.FromString(message)
            except Exception:  # google.protobuf.message.DecodeError
                raise RequestError(400, f"the request is not a valid {name}Request message") from None
            if fn is None:
                model_label = request.model_name
                self._accept_infer(call, request, start)
                return
            call.respond(fn(request).SerializeToString())
        except RequestError as exc:
            status = exc.status
            call.fail(_status_code(status), exc.message)
        except Exception:
            log.exception("unhandled error in gRPC %s", name)
            status = 500
            call.fail(_h2.INTERNAL, "internal server error (see the server log)")
        current = self.manager.current
        model_label = model_label if current is not None and model_label == current[0].name else ""
        self.metrics.request(model_label, label, status, time.perf_counter() - start)

    def _authorized(self, value: bytes | None) -> bool:
        if self._token is None:
            return True
        return bearer_token_matches(value or b"", self._token)

    # -- health and metadata -----------------------------------------------------------------------------
    def server_live(self, request: Any) -> Any:
        return self.pb.ServerLiveResponse(live=True)

    def server_ready(self, request: Any) -> Any:
        return self.pb.ServerReadyResponse(ready=self.manager.ready)

    def model_ready(self, request: Any) -> Any:
        try:
            self.app._model(request.name, request.version or None)
        except RequestError:
            return self.pb.ModelReadyResponse(ready=False)  # as Triton: not ready rather than an error
        return self.pb.ModelReadyResponse(ready=True)

    def server_metadata(self, request: Any) -> Any:
        return self.pb.ServerMetadataResponse(
            name="onnxship", version=__version__, extensions=["binary_tensor_data"]
        )

    def model_metadata(self, request: Any) -> Any:
        model = self.app._model(request.name, request.version or None)
        doc = self.app._metadata(model)
        meta = self.pb.ModelMetadataResponse

        def tensors(items: list[dict[str, Any]]) -> list[Any]:
            return [
                meta.TensorMetadata(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in items
            ]

        return meta(
            name=doc["name"],
            versions=doc["versions"],
            platform=doc["platform"],
            inputs=tensors(doc["inputs"]),
            outputs=tensors(doc["outputs"]),
        )

    # -- infer -------------------------------------------------------------------------------------------
    def _accept_infer(self, call: Call, request: Any, start: float) -> None:
        """Check a ModelInferRequest now; queue it for this loop iteration's flush (raises RequestError)."""
        if self.pending >= self.max_inflight:
            raise RequestError(
                503,
                f"the server is busy ({self.max_inflight} requests in flight, --max-inflight); retry shortly",
            )
        self.app._model(request.model_name, request.model_version or None)  # 404/503 before decoding tensors
        feeds, declared = _tensors(request)
        wanted = [(o.name, True) for o in request.outputs] or None
        self.pending += 1
        self.metrics.inflight += 1
        self._incoming.append(_Infer(call, request, feeds, declared, wanted, start))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Queue every call that arrived in this loop iteration (so they can share a batch)."""
        self._flush_scheduled = False
        batch, self._incoming = self._incoming, []
        # nothing else in flight (no other gRPC call, no REST request): an idle batcher may run it in place
        solo = len(batch) == 1 and self.pending == 1 and self.app.in_flight() == 0
        for job in batch:
            request = job.request
            try:
                # the model that answers (a reload may have landed since the call was checked)
                model = self.app._model(request.model_name, request.model_version or None)
                out = queue_checked(self.manager, model, job.feeds, job.declared, job.wanted, solo)
            except RequestError as exc:
                self._finish(job, exc.status, exc.message)
                continue
            except Exception:
                log.exception("unhandled error in gRPC ModelInfer")
                self._finish(job, 500, "internal server error (see the server log)")
                continue
            if isinstance(out, dict):
                self._answer(job, model, out)
            else:
                out.add_done_callback(functools.partial(self._resolved, job, model))

    def _resolved(self, job: _Infer, model: ServedModel, future: asyncio.Future[dict[str, Any]]) -> None:
        if future.cancelled():  # the batcher went away under the call (shutdown)
            self._finish(job, 503, "the server is shutting down; retry on another instance")
            return
        exc = future.exception()
        if exc is None:
            self._answer(job, model, future.result())
        elif isinstance(exc, RequestError):
            self._finish(job, exc.status, exc.message)
        else:
            log.error("unhandled error in gRPC ModelInfer", exc_info=exc)
            self._finish(job, 500, "internal server error (see the server log)")

    def _answer(self, job: _Infer, model: ServedModel, outputs: dict[str, Any]) -> None:
        try:
            names = [n for n, _ in job.wanted] if job.wanted else list(outputs)
            resp = self.pb.ModelInferResponse(
                model_name=model.name, model_version=str(model.version), id=job.request.id
            )
            add, raw = resp.outputs.add, resp.raw_output_contents.append
            for name in names:
                arr = outputs[name]
                dtype = arr.dtype
                add(name=name, datatype=datatype_of(dtype), shape=arr.shape)
                if dtype.byteorder == ">":
                    arr = arr.astype(dtype.newbyteorder("<"))
                raw(arr.tobytes())
            message = resp.SerializeToString()
        except Exception:
            log.exception("unhandled error in gRPC ModelInfer")
            self._finish(job, 500, "internal server error (see the server log)")
            return
        self._finish(job, 200, message=message, model=model.name)

    def _finish(
        self, job: _Infer, status: int, error: str = "", message: bytes = b"", model: str | None = None
    ) -> None:
        self.pending -= 1
        self.metrics.inflight -= 1
        call = job.call
        if not call.live:
            status = 499  # the client reset the stream, went away, or its deadline passed
        elif status == 200:
            call.respond(message)
        else:
            call.fail(_status_code(status), error)
        name = job.request.model_name if model is None else model
        current = self.manager.current
        label = name if current is not None and name == current[0].name else ""
        self.metrics.request(label, "grpc_model_infer", status, time.perf_counter() - job.start)


class _Infer:
    __slots__ = ("call", "declared", "feeds", "request", "start", "wanted")

    def __init__(
        self,
        call: Call,
        request: Any,
        feeds: dict[str, np.ndarray],
        declared: dict[str, str],
        wanted: list[tuple[str, bool]] | None,
        start: float,
    ) -> None:
        self.call = call
        self.request = request
        self.feeds = feeds
        self.declared = declared
        self.wanted = wanted
        self.start = start


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _tensors(request: Any) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Numpy feeds and declared datatypes of a ModelInferRequest.

    Raises:
        RequestError: 400 for anything that is not a well-formed request.
    """
    if not request.inputs:
        raise RequestError(400, "the request has no inputs")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise RequestError(
            400,
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; send one per input, "
            f"in input order",
        )
    feeds: dict[str, np.ndarray] = {}
    declared: dict[str, str] = {}
    for i, tensor in enumerate(request.inputs):
        name = tensor.name
        where = f"input {name!r}"
        if name in feeds:
            raise RequestError(400, f"{where} is given twice")
        shape = tuple(tensor.shape)
        if len(shape) > _MAX_DIMS or any(d < 0 for d in shape):
            raise RequestError(
                400,
                f"{where}: shape must be at most {_MAX_DIMS} non-negative integers, got {list(shape)[:20]}",
            )
        datatype = tensor.datatype
        if datatype == "BYTES":
            raise RequestError(
                400, f"{where}: datatype BYTES is not supported; onnxship models take numeric tensors"
            )
        dtype = numpy_dtype(datatype, where)
        n = math.prod(shape)
        if raw:
            buf = raw[i]
            if len(buf) != n * dtype.itemsize:
                raise RequestError(
                    400,
                    f"{where}: raw_input_contents[{i}] has {len(buf)} bytes but shape {list(shape)} of "
                    f"{datatype} needs {n * dtype.itemsize}",
                )
            arr = np.frombuffer(buf, dtype=dtype.newbyteorder("<")).reshape(shape)
        else:
            field = _CONTENTS.get(datatype)
            if field is None:
                raise RequestError(400, f"{where}: datatype {datatype} travels only as raw_input_contents")
            values = getattr(tensor.contents, field)
            if len(values) != n:
                raise RequestError(
                    400,
                    f"{where}: contents.{field} has {len(values)} values but shape {list(shape)} needs {n}",
                )
            wide = np.asarray(values)
            if dtype.kind in "iu" and wide.size and not np.can_cast(wide.dtype, dtype):
                info = np.iinfo(dtype)
                if int(wide.min()) < info.min or int(wide.max()) > info.max:
                    raise RequestError(400, f"{where}: values outside the range of {datatype}")
            arr = wide.astype(dtype, copy=False).reshape(shape)
        feeds[name] = arr
        declared[name] = datatype
    return feeds, declared


def attach_grpc(app: ServeApp, host: str, port: int) -> str:
    """Serve gRPC on ``host:port`` from ``app``'s event loop (started and stopped with the app's lifespan).

    The port is shared with SO_REUSEPORT (reserved by the caller), so every worker process can serve it.

    Raises:
        MissingDependencyError: the protocol definitions or hpack are missing (raised here, before serving).
    """
    protocol_modules()  # fail before the server starts, with the install hint
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    state: dict[str, Any] = {}

    async def start() -> None:
        from onnxship.serve._api import listen_reuseport

        service = GrpcService(app)
        config = app.manager.config
        server = _h2.H2Server(
            service.dispatch,
            frozenset(service._methods),
            max_message=config.max_body_bytes,
            max_streams=max(1, config.max_inflight),
            head_timeout=config.header_timeout_s,
            body_timeout=config.body_timeout_s,
            idle_timeout=config.keep_alive_s,
            max_connections=min(config.max_connections, connection_budget()),
        )
        try:
            sock = listen_reuseport(host, port)
        except OSError as exc:
            raise ServeError(
                f"cannot listen for gRPC on {address}: {exc.strerror or exc}", hint="pick another --grpc-port"
            ) from None
        await server.start(sock)
        state["server"] = server

    async def stop() -> None:
        server = state.pop("server", None)
        if server is not None:
            await server.stop(grace=5)

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    return address

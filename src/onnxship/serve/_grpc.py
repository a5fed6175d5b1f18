"""KServe v2 / Triton gRPC inference protocol beside REST: the same model manager, batcher, validation and auth.

The messages and the service are the protocol's published definitions, as generated modules shipped by
``tritonclient[grpc]`` (``inference.GRPCInferenceService``, a superset of KServe's ``grpc_predict_v2.proto`` with
the same package, service and message names); the server is grpcio's asyncio server on the same event loop as the
REST server, so a gRPC request and a REST request can share one batch.

Served RPCs: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer (tensor contents or
``raw_input_contents``; outputs always come back as ``raw_output_contents``, as Triton does). Refusals carry the
REST message with a matching status code: INVALID_ARGUMENT (400/422), UNAUTHENTICATED (401), PERMISSION_DENIED
(403), NOT_FOUND (404), RESOURCE_EXHAUSTED (413, and grpcio's own message-size limit), UNAVAILABLE (503).

DO NOT import onnxruntime, torch or tritonclient at module level.
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxship._errors import MissingDependencyError, ServeError, require
from onnxship._version import __version__
from onnxship.serve._signature import RequestError, datatype_of, numpy_dtype

if TYPE_CHECKING:
    from onnxship.serve._app import ServeApp

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
        MissingDependencyError: grpcio or tritonclient[grpc] is not installed.
    """
    require("grpc", "serve")
    try:
        from tritonclient.grpc import service_pb2
    except (ImportError, RuntimeError) as exc:  # tritonclient.grpc raises RuntimeError without its grpc extra
        raise MissingDependencyError(
            f"the KServe v2 gRPC protocol definitions are not installed ({exc})",
            hint="pip install 'onnxship[serve]' (it brings grpcio and tritonclient[grpc])",
        ) from None
    return service_pb2


def _status_code(grpc: Any, status: int) -> Any:
    codes = grpc.StatusCode
    return {
        400: codes.INVALID_ARGUMENT,
        401: codes.UNAUTHENTICATED,
        403: codes.PERMISSION_DENIED,
        404: codes.NOT_FOUND,
        405: codes.UNIMPLEMENTED,
        413: codes.RESOURCE_EXHAUSTED,
        422: codes.INVALID_ARGUMENT,
        503: codes.UNAVAILABLE,
    }.get(status, codes.INVALID_ARGUMENT if 400 <= status < 500 else codes.INTERNAL)


class GrpcService:
    """The RPC handlers, bound to a ServeApp (its manager, metrics, token and model lookup)."""

    def __init__(self, app: ServeApp) -> None:
        self.app = app
        self.manager = app.manager
        self.metrics = app.metrics
        self.pb = protocol_modules()
        import grpc

        self.grpc = grpc
        token = self.manager.config.token
        self._token = token.encode("utf-8") if token else None

    def handler(self) -> Any:
        grpc, pb = self.grpc, self.pb

        def unary(name: str, fn: Any) -> Any:
            req = getattr(pb, f"{name}Request")
            resp = getattr(pb, f"{name}Response")

            async def call(request: Any, context: Any) -> Any:
                return await self._guarded(name, fn, request, context)

            return grpc.unary_unary_rpc_method_handler(
                call, request_deserializer=req.FromString, response_serializer=resp.SerializeToString
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "ServerLive": unary("ServerLive", self.server_live),
                "ServerReady": unary("ServerReady", self.server_ready),
                "ModelReady": unary("ModelReady", self.model_ready),
                "ServerMetadata": unary("ServerMetadata", self.server_metadata),
                "ModelMetadata": unary("ModelMetadata", self.model_metadata),
                "ModelInfer": unary("ModelInfer", self.model_infer),
            },
        )

    async def _guarded(self, name: str, fn: Any, request: Any, context: Any) -> Any:
        start = time.perf_counter()
        status = 200
        model_label = ""
        try:
            if name not in _OPEN and not self._authorized(context):
                raise RequestError(
                    401, "missing or wrong bearer token (send metadata 'authorization: Bearer <token>')"
                )
            if name == "ModelInfer":
                model_label = request.model_name
            return await fn(request)
        except RequestError as exc:
            status = exc.status
            await context.abort(_status_code(self.grpc, status), exc.message)
        except Exception as exc:
            if isinstance(exc, self.grpc.aio.AbortError):
                raise
            log.exception("unhandled error in gRPC %s", name)
            status = 500
            await context.abort(self.grpc.StatusCode.INTERNAL, "internal server error (see the server log)")
        finally:
            current = self.manager.current
            label = model_label if current is not None and model_label == current[0].name else ""
            self.metrics.request(label, f"grpc_{_snake(name)}", status, time.perf_counter() - start)

    def _authorized(self, context: Any) -> bool:
        if self._token is None:
            return True
        value = b""
        for key, val in context.invocation_metadata() or ():
            if key == "authorization":
                value = val.encode("utf-8") if isinstance(val, str) else bytes(val)
                break
        scheme, _, given = value.partition(b" ")
        return hmac.compare_digest(given.strip(), self._token) and scheme.lower() == b"bearer"

    # -- health and metadata -----------------------------------------------------------------------------
    async def server_live(self, request: Any) -> Any:
        return self.pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any) -> Any:
        return self.pb.ServerReadyResponse(ready=self.manager.ready)

    async def model_ready(self, request: Any) -> Any:
        try:
            self.app._model(request.name, request.version or None)
        except RequestError:
            return self.pb.ModelReadyResponse(ready=False)  # as Triton: not ready rather than an error
        return self.pb.ModelReadyResponse(ready=True)

    async def server_metadata(self, request: Any) -> Any:
        return self.pb.ServerMetadataResponse(
            name="onnxship", version=__version__, extensions=["binary_tensor_data"]
        )

    async def model_metadata(self, request: Any) -> Any:
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
    async def model_infer(self, request: Any) -> Any:
        from onnxship.serve._app import submit_checked

        app = self.app
        app._model(request.model_name, request.model_version or None)
        feeds, declared = _tensors(request)
        wanted = [(o.name, True) for o in request.outputs] or None
        metrics = self.metrics
        metrics.inflight += 1
        try:
            model = app._model(request.model_name, request.model_version or None)
            outputs = await submit_checked(self.manager, model, feeds, declared, wanted)
        finally:
            metrics.inflight -= 1
        names = [n for n, _ in wanted] if wanted else list(outputs)
        resp = self.pb.ModelInferResponse(
            model_name=model.name, model_version=str(model.version), id=request.id
        )
        for name in names:
            arr = outputs[name]
            resp.outputs.add(name=name, datatype=datatype_of(arr.dtype), shape=list(arr.shape))
            resp.raw_output_contents.append(
                np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
            )
        return resp


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
        MissingDependencyError: grpcio or the protocol definitions are missing (raised here, before serving).
    """
    protocol_modules()  # fail before the server starts, with the install hint
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    state: dict[str, Any] = {}

    async def start() -> None:
        import grpc

        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 1),
                ("grpc.max_receive_message_length", app.manager.config.max_body_bytes),
                ("grpc.max_send_message_length", -1),
            ]
        )
        server.add_generic_rpc_handlers((GrpcService(app).handler(),))
        if not server.add_insecure_port(address):
            raise ServeError(f"cannot listen for gRPC on {address}", hint="pick another --grpc-port")
        await server.start()
        state["server"] = server

    async def stop() -> None:
        server = state.pop("server", None)
        if server is not None:
            await server.stop(grace=5)

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    return address

"""KServe v2 / Open Inference Protocol REST bodies: parsing infer requests, encoding responses.

JSON tensors (``{"name", "shape", "datatype", "data"}``, data flat or nested) and the binary tensor extension
(``Inference-Header-Content-Length``: a JSON header followed by the raw little-endian tensors, in input order, each
announced by ``parameters.binary_data_size``) are both accepted; outputs come back as JSON unless the request asks for
binary (``outputs[].parameters.binary_data`` or the request-level ``binary_data_output``), as Triton does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from onnxship.serve._signature import RequestError, Signature, datatype_of, numpy_dtype

__all__ = ["InferRequest", "encode_error", "encode_infer_response", "parse_infer_request"]

_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}  # request value kinds accepted per target kind
_MAX_DIMS = 16


@dataclass
class InferRequest:
    """A parsed infer request."""

    id: str | None
    feeds: dict[str, np.ndarray]
    declared: dict[str, str]  # datatype each input was sent as
    outputs: list[tuple[str, bool]] | None  # requested outputs (name, binary); None: all
    binary_output: bool  # request-level binary_data_output

    @property
    def rows(self) -> int:
        first = next(iter(self.feeds.values()))
        return int(first.shape[0]) if first.ndim else 1


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or len(value) > _MAX_DIMS
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value)
    ):
        raise RequestError(
            400,
            f"{where}: shape must be a list of at most {_MAX_DIMS} non-negative integers, "
            f"got {str(value)[:80]}",
        )
    return tuple(value)


def _from_json(data: Any, shape: tuple[int, ...], dtype: np.dtype[Any], where: str) -> np.ndarray:
    if not isinstance(data, list):
        raise RequestError(
            400, f"{where}: data must be a (flat or nested) list of numbers, got {type(data).__name__}"
        )
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError):
        raise RequestError(
            400, f"{where}: data is a ragged nested list; send it flat or with equal lengths"
        ) from None
    if arr.size and arr.dtype.kind not in _KINDS[dtype.kind]:
        got = {"f": "floating-point", "b": "boolean", "U": "string", "O": "mixed or out-of-range"}.get(
            arr.dtype.kind, arr.dtype.kind
        )
        raise RequestError(
            400, f"{where}: data holds {got} values, not valid for datatype {datatype_of(dtype)}"
        )
    n = math.prod(shape)
    if arr.size != n:
        raise RequestError(400, f"{where}: data has {arr.size} elements but shape {list(shape)} needs {n}")
    if dtype.kind in "iu" and arr.size and not np.can_cast(arr.dtype, dtype):  # int64 JSON -> INT64: no scan
        info = np.iinfo(dtype)
        if int(arr.min()) < info.min or int(arr.max()) > info.max:
            raise RequestError(400, f"{where}: values outside the range of {datatype_of(dtype)}")
    return arr.astype(dtype, copy=False).reshape(shape)


def parse_infer_request(
    body: bytes,
    header_length: int | None = None,
    signature: Signature | None = None,
) -> InferRequest:
    """Parse a v2 infer request body (JSON, or JSON + binary tensors when ``header_length`` is given).

    Each input's name, datatype and shape are checked against ``signature`` (when given), and its element count
    (and, for binary tensors, byte count) against the body (itself limited by --max-body-bytes), before its array
    is built: a declared shape never allocates anything by itself.

    Raises:
        RequestError: 400 for anything that is not a well-formed v2 request or does not fit the signature.
    """
    if header_length is not None:
        if not 0 < header_length <= len(body):
            raise RequestError(
                400, f"Inference-Header-Content-Length is {header_length} but the body has {len(body)} bytes"
            )
        head, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        head, binary = body, memoryview(b"")
    try:
        obj = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise RequestError(
            400, f"the request body is not valid JSON ({exc.args[0] if exc.args else exc})"
        ) from None
    if not isinstance(obj, dict):
        raise RequestError(400, "the request body must be a JSON object with an 'inputs' list")
    inputs = obj.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError(
            400, "the request needs a non-empty 'inputs' list of {name, shape, datatype, data}"
        )
    feeds: dict[str, np.ndarray] = {}
    declared: dict[str, str] = {}
    offset = 0
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise RequestError(400, f"inputs[{i}] must be an object with a string 'name'")
        name = tensor["name"]
        where = f"input {name!r}"
        if name in feeds:
            raise RequestError(400, f"{where} is given twice")
        shape = _shape(tensor.get("shape"), where)
        datatype = tensor.get("datatype")
        if datatype == "BYTES":
            raise RequestError(
                400, f"{where}: datatype BYTES is not supported; onnxship models take numeric tensors"
            )
        dtype = numpy_dtype(datatype, where)
        if signature is not None:
            signature.check_input(name, datatype, shape)
        n = math.prod(shape)
        if n > len(body) or max(shape, default=0) > len(body):
            # every element takes at least one byte of the body (JSON or binary): a shape the body cannot hold is
            # refused before numpy sees it (an absurd dim next to a zero one would make numpy itself fail)
            raise RequestError(
                400,
                f"{where}: shape {list(shape)} has {n} elements, more than the request body of {len(body)} "
                f"bytes can hold",
            )
        params = tensor.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or size != n * dtype.itemsize:
                raise RequestError(
                    400,
                    f"{where}: binary_data_size {size!r} does not match shape {list(shape)} "
                    f"of {datatype} ({n * dtype.itemsize} bytes)",
                )
            if offset + size > len(binary):
                raise RequestError(
                    400,
                    f"{where}: the binary part of the body ends before this tensor "
                    f"({len(binary)} bytes, need {offset + size})",
                )
            arr = np.frombuffer(binary[offset : offset + size], dtype=dtype.newbyteorder("<")).reshape(shape)
            offset += size
        elif "data" in tensor:
            arr = _from_json(tensor["data"], shape, dtype, where)
        else:
            raise RequestError(400, f"{where} has neither 'data' nor parameters.binary_data_size")
        feeds[name] = arr
        declared[name] = datatype
    if offset != len(binary):
        raise RequestError(400, f"the body has {len(binary) - offset} binary bytes that no input claims")
    outputs = obj.get("outputs")
    requested: list[tuple[str, bool]] | None = None
    if outputs is not None:
        if not isinstance(outputs, list):
            raise RequestError(400, "'outputs' must be a list of {name, parameters}")
        requested = []
        for j, out in enumerate(outputs):
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise RequestError(400, f"outputs[{j}] must be an object with a string 'name'")
            p = out.get("parameters") or {}
            requested.append((out["name"], bool(isinstance(p, dict) and p.get("binary_data"))))
    params = obj.get("parameters") or {}
    binary_output = bool(isinstance(params, dict) and params.get("binary_data_output"))
    req_id = obj.get("id")
    return InferRequest(
        id=str(req_id) if req_id is not None else None,
        feeds=feeds,
        declared=declared,
        outputs=requested,
        binary_output=binary_output,
    )


def encode_infer_response(
    model_name: str, model_version: str, request: InferRequest, outputs: dict[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header length when binary tensors follow it (else None).

    Raises:
        RequestError: 400 when the request asked for an output the model does not have.
    """
    wanted = request.outputs if request.outputs is not None else [(n, request.binary_output) for n in outputs]
    items: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, binary in wanted:
        if name not in outputs:
            raise RequestError(
                400, f"requested output {name!r} does not exist; the model's outputs are {list(outputs)}"
            )
        arr = outputs[name]
        item: dict[str, Any] = {"name": name, "datatype": datatype_of(arr.dtype), "shape": list(arr.shape)}
        if binary:
            raw = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
            item["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            item["data"] = np.ascontiguousarray(arr).reshape(-1)
        items.append(item)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": items}
    if request.id is not None:
        doc["id"] = request.id
    try:
        head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:  # a dtype orjson cannot write directly (e.g. float16): go through Python numbers
        for item in items:
            if "data" in item:
                item["data"] = item["data"].tolist()
        head = orjson.dumps(doc)
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def encode_error(message: str) -> bytes:
    """The v2 error body."""
    return orjson.dumps({"error": message})

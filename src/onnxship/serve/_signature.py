"""The verified signature of a served model and request validation against it.

Inputs come from the onnxruntime session (names, element types, rank, static dims); the verified ranges of the
dynamic dims (``min``/``max``) come from the release's ``.meta.json`` sidecar (``TensorSpec.to_dict()`` records).
A request that does not fit is a :class:`RequestError` (HTTP 400/404/413), never an exception from onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from onnxship._errors import ServeError
from onnxship.package._limits import serving_limits

__all__ = [
    "DATATYPES",
    "DimInfo",
    "RequestError",
    "Signature",
    "TensorInfo",
    "datatype_of",
    "numpy_dtype",
]

# KServe v2 datatype <-> numpy dtype (BYTES is not served: onnxship models take numeric tensors).
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_BY_DTYPE = {v: k for k, v in DATATYPES.items()}
_ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
}


class RequestError(Exception):
    """A request the server refuses: HTTP status plus a message that says what was sent and what is expected."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The v2 datatype name of a numpy dtype."""
    try:
        return _BY_DTYPE[np.dtype(dtype)]
    except KeyError:
        raise ServeError(
            f"tensor type {dtype} has no KServe v2 datatype",
            hint=f"serve models whose inputs and outputs are one of {', '.join(DATATYPES)}",
        ) from None


def numpy_dtype(datatype: str, where: str) -> np.dtype[Any]:
    """The numpy dtype of a v2 datatype name; RequestError(400) for unknown or unsupported names."""
    try:
        return DATATYPES[datatype]
    except (KeyError, TypeError):
        raise RequestError(
            400, f"{where}: datatype {datatype!r} is not supported; use one of {', '.join(DATATYPES)}"
        ) from None


@dataclass(frozen=True)
class DimInfo:
    """One axis: a static size, or a named dynamic dim with its verified range."""

    size: int | None  # None: dynamic
    name: str | None = None
    min: int = 1
    max: int | None = None  # None: no verified upper bound recorded

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "name": self.name, "min": self.min, "max": self.max}

    def describe(self) -> str:
        if self.size is not None:
            return str(self.size)
        return f"{self.name or '?'}={self.min}..{self.max if self.max is not None else 'unbounded'}"


@dataclass(frozen=True)
class TensorInfo:
    """Name, datatype and dims of one input or output."""

    name: str
    datatype: str
    dims: tuple[DimInfo, ...]
    value_range: tuple[int, int] | None = None  # integer inputs: the verified ids, low <= id < high

    @property
    def v2_shape(self) -> list[int]:
        return [d.size if d.size is not None else -1 for d in self.dims]

    def to_v2(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.v2_shape}


@dataclass
class Signature:
    """What the model accepts and returns, and whether requests may be merged along axis 0."""

    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    batch_max: int | None = None  # verified max of the shared batch dim; None: unbounded
    batchable: bool = False  # every input and output has the same dynamic dim 0
    notes: list[str] = field(default_factory=list)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @classmethod
    def from_session(cls, session: Any, meta: dict[str, Any] | None = None) -> Signature:
        """Build from an onnxruntime session plus the sidecar's ``inputs`` records (verified dim ranges)."""
        meta = meta or {}
        records = {r.get("name"): r for r in meta.get("inputs") or [] if isinstance(r, dict)}
        notes: list[str] = []
        inputs = []
        for arg in session.get_inputs():
            rec_dims = (records.get(arg.name) or {}).get("dims") or []
            if not rec_dims:
                notes.append(
                    f"input {arg.name}: no verified dim ranges in the sidecar; dynamic dims are unbounded"
                )
            datatype = _ort_datatype(arg.type, arg.name)
            inputs.append(
                TensorInfo(
                    arg.name,
                    datatype,
                    _dims(arg.shape, rec_dims),
                    _id_range(datatype, (records.get(arg.name) or {}).get("range")),
                )
            )
        outputs = [
            TensorInfo(o.name, _ort_datatype(o.type, o.name), _dims(o.shape, []))
            for o in session.get_outputs()
        ]
        # the release's largest batch (declared, verified by the sweep): the same number Triton and MLflow get
        return cls._with_batching(inputs, outputs, notes).with_batch_limit(serving_limits(meta).max_batch)

    @classmethod
    def from_specs(cls, specs: list[Any], outputs: list[TensorInfo]) -> Signature:
        """Build from TensorSpecs (the PyTorch fallback, which has no ONNX graph)."""
        inputs = [
            TensorInfo(
                s.name,
                datatype_of(np.dtype(s.dtype)),
                tuple(DimInfo(None if d.name else d.value, d.name, d.min, d.max) for d in s.dims),
                _id_range(datatype_of(np.dtype(s.dtype)), None if s.low is None else [s.low, s.high]),
            )
            for s in specs
        ]
        return cls._with_batching(inputs, outputs, [])

    @classmethod
    def _with_batching(
        cls, inputs: list[TensorInfo], outputs: list[TensorInfo], notes: list[str]
    ) -> Signature:
        firsts = [t.dims[0] if t.dims else None for t in inputs]
        batchable = bool(inputs) and all(d is not None and d.size is None for d in firsts)
        if batchable and len({d.name for d in firsts if d is not None}) != 1:
            batchable = False
        if batchable and not all(o.dims and o.dims[0].size is None for o in outputs):
            batchable = False
            notes.append("an output has a static dim 0: requests are not merged")
        maxes = [d.max for d in firsts if d is not None and d.max is not None]
        return cls(inputs, outputs, batch_max=min(maxes) if maxes else None, batchable=batchable, notes=notes)

    def with_batch_limit(self, limit: int | None) -> Signature:
        """A copy whose dynamic axis 0 (every input's) accepts at most ``limit`` rows (None: unchanged)."""
        if limit is None:
            return self
        inputs = [
            replace(
                t,
                dims=(replace(t.dims[0], max=min(limit, t.dims[0].max or limit)), *t.dims[1:]),
            )
            if t.dims and t.dims[0].size is None
            else t
            for t in self.inputs
        ]
        top = min(limit, self.batch_max) if self.batch_max is not None else limit
        return replace(self, inputs=inputs, batch_max=top, notes=list(self.notes))

    def check_input(self, name: str, datatype: str, shape: tuple[int, ...]) -> TensorInfo:
        """Validate one input's name, datatype and shape before its array is built (nothing is allocated here).

        Raises:
            RequestError: 400 naming the input, what was sent and what the verified signature allows.
        """
        info = self._by_name.get(name)
        if info is None:
            raise RequestError(400, f"unknown input(s) {[name]}; the model's inputs are {self.input_names}")
        if datatype != info.datatype:
            raise RequestError(
                400, f"input {name!r} has datatype {datatype}, the model expects {info.datatype}"
            )
        if len(shape) != len(info.dims):
            raise RequestError(
                400,
                f"input {name!r} has shape {list(shape)} (rank {len(shape)}), the model "
                f"expects rank {len(info.dims)}: [{', '.join(d.describe() for d in info.dims)}]",
            )
        for axis, (size, dim) in enumerate(zip(shape, info.dims, strict=True)):
            if dim.size is not None:
                ok = size == dim.size
            else:
                ok = size >= dim.min and (dim.max is None or size <= dim.max)
            if not ok:
                raise RequestError(
                    400,
                    f"input {name!r} has shape {list(shape)}: axis {axis} is {size}, "
                    f"outside the verified range {dim.describe()}",
                )
        return info

    @property
    def _by_name(self) -> dict[str, TensorInfo]:
        table = self.__dict__.get("_table")
        if table is None:
            table = self.__dict__["_table"] = {t.name: t for t in self.inputs}
        return table

    def check(self, feeds: dict[str, np.ndarray], declared: dict[str, str], ids: bool = True) -> None:
        """Validate a request's tensors (``declared`` = the datatype each input was sent as): names, datatypes,
        shapes, dims shared between inputs, and integer ids against the verified id range.

        Raises:
            RequestError: 400 naming the input, what was sent and what the verified signature allows.
        """
        expected = self._by_name
        unknown = sorted(set(feeds) - set(expected))
        if unknown:
            raise RequestError(400, f"unknown input(s) {unknown}; the model's inputs are {self.input_names}")
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise RequestError(400, f"missing input(s) {missing}; the model's inputs are {self.input_names}")
        seen: dict[str, tuple[int, str]] = {}
        for name, arr in feeds.items():
            info = self.check_input(name, declared[name], arr.shape)
            for size, dim in zip(arr.shape, info.dims, strict=True):
                if dim.size is None and dim.name:
                    prev = seen.setdefault(dim.name, (size, name))
                    if prev[0] != size:
                        raise RequestError(
                            400,
                            f"dim {dim.name!r} is {prev[0]} in input {prev[1]!r} but {size} in "
                            f"input {name!r}; inputs sharing a dim must agree",
                        )
        if ids:
            self.check_ids(feeds)

    def check_ids(self, feeds: dict[str, np.ndarray]) -> None:
        """Integer inputs against their verified id range: one min/max pass per input. The server's batcher runs
        it once per merged batch (and per request only to find the offenders when a batch fails).

        Raises:
            RequestError: 400 naming the input, the ids sent and the verified range.
        """
        for info in self.inputs:
            if info.value_range is None:
                continue
            arr = feeds.get(info.name)
            if arr is None or not arr.size:
                continue
            low, high = info.value_range
            lo, hi = int(arr.min()), int(arr.max())
            if lo < low or hi >= high:
                raise RequestError(
                    400,
                    f"input {info.name!r} holds ids from {lo} to {hi}, outside the verified id range "
                    f"{low}..{high - 1} (the model was verified on ids {low} <= id < {high}; "
                    f"map unknown ids to a known one before sending)",
                )

    @property
    def has_id_ranges(self) -> bool:
        return any(t.value_range is not None for t in self.inputs)


def _id_range(datatype: str, record: Any) -> tuple[int, int] | None:
    """The verified id range ``[low, high)`` of an integer input from its sidecar ``range`` record."""
    if not datatype.startswith(("INT", "UINT")) or not isinstance(record, (list, tuple)) or len(record) != 2:
        return None
    try:
        low, high = float(record[0]), float(record[1])
    except (TypeError, ValueError):
        return None
    if not (low.is_integer() and high.is_integer()) or high <= low:
        return None
    return int(low), int(high)


def _ort_datatype(ort_type: str, name: str) -> str:
    try:
        return _ORT_TYPES[ort_type]
    except KeyError:
        raise ServeError(
            f"tensor {name!r} has type {ort_type}, which onnxship serve does not support",
            hint="onnxship serve takes numeric tensors (bool, ints, float16/32/64)",
        ) from None


def _dims(shape: list[Any], records: list[dict[str, Any]]) -> tuple[DimInfo, ...]:
    dims = []
    for i, s in enumerate(shape):
        rec = records[i] if i < len(records) and isinstance(records[i], dict) else {}
        if isinstance(s, int) and s >= 0:  # onnxruntime's static dims win over the sidecar
            dims.append(DimInfo(s))
            continue
        name = rec.get("name") or (s if isinstance(s, str) else None)
        mx = rec.get("max")
        dims.append(DimInfo(None, name, int(rec.get("min", 1) or 1), int(mx) if mx is not None else None))
    return tuple(dims)

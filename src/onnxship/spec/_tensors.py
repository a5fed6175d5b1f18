"""TensorSpec and DimSpec: one model input (name, dims, dtype, value kind, value range) and one of its dims, with
the dtypes an input may declare. The text grammar that builds them is in ``_inputs``.

This module needs numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from onnxship._errors import InputSpecError

DTYPES: dict[str, str] = {
    "float32": "float32",
    "float16": "float16",
    "bfloat16": "float32",
    "float64": "float64",
    "int64": "int64",
    "int32": "int32",
    "int16": "int16",
    "int8": "int8",
    "uint8": "uint8",
    "bool": "bool",
}


@dataclass(frozen=True)
class DimSpec:
    """One axis of an input: static (``name is None``) or dynamic with a sample value and optional max.

    ``step``: sizes must be multiples of it. ``parts``/``offset``: a derived dim, the sum of the named dims plus
    ``offset`` (``total=past+seq``); its ``value`` is that sum at the export sizes. ``bare``: written as a name
    only, its sizes come from another declaration of the same name (see :func:`resolve_specs`).
    """

    value: int  # the size used for the export dummy (static dims: the size)
    name: str | None = None  # symbolic name shared across inputs; None means static
    max: int | None = None  # largest size the sweep/Triton/server may use
    min: int = 1  # smallest size allowed at run time
    step: int | None = None  # sizes must be multiples of step
    parts: tuple[str, ...] = ()  # derived dim: the sum of these dims ...
    offset: int = 0  # ... plus this constant
    bare: bool = False  # size not given here: taken from another input's declaration of the same name

    @property
    def dynamic(self) -> bool:
        return self.name is not None

    @property
    def derived(self) -> bool:
        return bool(self.parts)

    def __str__(self) -> str:
        if self.name is None:
            return str(self.value)
        if self.parts:
            terms = list(self.parts) + ([str(self.offset)] if self.offset else [])
            return f"{self.name}={'+'.join(terms)}"
        if self.bare:
            return self.name + (f"/{self.step}" if self.step else "")
        return (
            f"{self.name}={self.value}"
            + (f"..{self.max}" if self.max is not None else "")
            + (f"/{self.step}" if self.step else "")
        )

    def allowed(self, size: int) -> bool:
        """Whether ``size`` is within min..max and a multiple of step."""
        if size < self.min or (self.max is not None and size > self.max):
            return False
        return not (self.step and size % self.step)


@dataclass(frozen=True)
class TensorSpec:
    """Name, dims, dtype, value kind and value range of one model input (or a declared output).

    ``kind`` says what the values look like (``mask``, ``offsets``, ...; see ``onnxship.spec._values.KINDS``);
    ``of`` is the dim (name or size) a structural kind refers to (``offsets(n)``: offsets into an input of size n).
    """

    name: str
    dims: tuple[DimSpec, ...]
    dtype: str = "float32"
    low: float | None = None  # lower bound of generated values (inclusive)
    high: float | None = None  # upper bound of generated values (exclusive for integers)
    meta: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # range source, sample
    kind: str | None = None  # value kind; None: ids for integers, normal (uniform with a range) for floats
    of: str | None = None  # the dim a structural kind refers to

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(d.value for d in self.dims)

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d.name for i, d in enumerate(self.dims) if d.name is not None}

    @property
    def is_integer(self) -> bool:
        return self.dtype.startswith(("int", "uint"))

    @property
    def is_float(self) -> bool:
        return self.dtype.startswith(("float", "bfloat"))

    @property
    def kind_text(self) -> str | None:
        if self.kind is None:
            return None
        return self.kind + (f"({self.of})" if self.of is not None else "")

    def shape_for(self, values: dict[str, int]) -> tuple[int, ...]:
        """The concrete shape with dynamic dims set from ``values`` (missing names keep their sample value)."""
        out = []
        for d in self.dims:
            if d.name is None:
                out.append(d.value)
            elif d.name in values:
                out.append(int(values[d.name]))
            elif d.parts and all(p in values for p in d.parts):
                out.append(sum(int(values[p]) for p in d.parts) + d.offset)
            else:
                out.append(d.value)
        return tuple(out)

    def with_range(self, low: float | None, high: float | None, source: str | None = None) -> TensorSpec:
        meta = dict(self.meta)
        if source:
            meta["range_source"] = source
        return replace(self, low=low, high=high, meta=meta)

    def with_kind(self, kind: str | None, of: str | None = None, source: str | None = None) -> TensorSpec:
        meta = dict(self.meta)
        if source:
            meta["kind_source"] = source
        return replace(self, kind=kind, of=of, meta=meta)

    def __str__(self) -> str:
        text = f"{self.name}:{' x '.join(str(d) for d in self.dims)}:{self.dtype}"
        if self.kind is not None:
            text += f":{self.kind_text}"
        if self.low is not None and self.high is not None:
            text += f":{_fmt_num(self.low)}..{_fmt_num(self.high)}"
        return text

    def to_dict(self) -> dict[str, Any]:
        dims = []
        for d in self.dims:
            rec: dict[str, Any] = {"value": d.value, "name": d.name, "max": d.max, "min": d.min}
            if d.step:
                rec["step"] = d.step
            if d.parts:
                rec["parts"] = list(d.parts)
                rec["offset"] = d.offset
            dims.append(rec)
        out = {
            "name": self.name,
            "dtype": self.dtype,
            "shape": [d.name if d.name else d.value for d in self.dims],
            "sample_shape": list(self.shape),
            "dims": dims,
            "range": None if self.low is None else [self.low, self.high],
            "spec": str(self),
        }
        if self.kind is not None:
            out["kind"] = self.kind
            out["of"] = self.of
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        """Rebuild a spec from :meth:`to_dict` (e.g. the ``inputs`` metadata an export embeds in the ONNX file)."""
        try:
            dims = tuple(
                DimSpec(
                    value=_whole(d["value"], "value"),
                    name=_dim_name(d.get("name")),
                    max=None if d.get("max") is None else _whole(d["max"], "max"),
                    min=_whole(d.get("min", 1), "min"),
                    step=_whole(d["step"], "step") or None if d.get("step") else None,
                    parts=tuple(str(p) for p in d.get("parts") or ()),
                    offset=_whole(d.get("offset") or 0, "offset"),
                )
                for d in data["dims"]
            )
            for d in dims:
                if d.max is not None and d.max < d.value:
                    raise ValueError(f"dim {d.name} has max {d.max} below its value {d.value}")
            rng = data.get("range")
            low, high = (float(rng[0]), float(rng[1])) if rng else (None, None)
            dtype = str(data.get("dtype", "float32"))
            if dtype not in DTYPES:
                raise ValueError(f"unknown dtype {dtype!r}")
            kind = data.get("kind")
            of = data.get("of")
            spec = cls(
                name=str(data["name"]),
                dims=dims,
                dtype=dtype,
                low=low,
                high=high,
                kind=str(kind) if kind else None,
                of=str(of) if of is not None else None,
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise InputSpecError(
                f"input spec record {data!r} is not a TensorSpec.to_dict() record ({exc})",
                hint="re-export the model, or pass the input specs explicitly",
            ) from None
        return spec  # no memory check here: a release made on a big machine still opens on a small one


def _whole(value: Any, what: str) -> int:
    """A dim size from a metadata record: a non-negative whole number (2 or 2.0; not 2.5, "2", true, nan)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"dim {what} {value!r} is not a whole number")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"dim {what} {value!r} is not a whole number")
    if value < 0:
        raise ValueError(f"dim {what} {value!r} is negative")
    return int(value)


def _dim_name(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"dim name {value!r} is not a string")


def _fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))

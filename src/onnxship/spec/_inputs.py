"""Input specs: ``NAME:DIMS:DTYPE[:LOW..HIGH]`` parsed into TensorSpec, and sample data drawn from them.

Grammar (see DESIGN.md "Input spec")::

    spec  := NAME ":" dims ":" dtype [ ":" LOW ".." HIGH ]
    dims  := dim ( "x" dim )*            spaces around "x" are allowed
    dim   := N | name "=" N | name "=" N ".." MAX

``N`` is a static dim; ``name=N`` is a dynamic dim whose sample (export) value is N; ``name=N..MAX`` also declares the
largest value the shape sweep, Triton and the server may use. LOW..HIGH bounds generated values: integers are drawn
from [LOW, HIGH) (HIGH excluded, like ``range``), floats uniformly from [LOW, HIGH).

This module needs numpy only.

Size: over 400 lines on purpose: one idea, the input-spec grammar: parsing, printing and the sample draw share
the dtype and range tables and must change together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from onnxship._errors import InputSpecError

__all__ = [
    "DTYPES",
    "GRAMMAR",
    "DimSpec",
    "TensorSpec",
    "check_sample_size",
    "dim_table",
    "parse_input_spec",
    "sample_feeds",
    "sweep_points",
]

GRAMMAR = (
    "NAME:DIMS:DTYPE[:LOW..HIGH], DIMS separated by 'x', each dim N (static), name=N (dynamic, N = export value) "
    "or name=N..MAX; e.g. 'input_sequence:batch=2 x seq=10..64:int64:0..30' or 'image:batch=4x3x224x224:float32'"
)

# dtype name -> numpy dtype name; bfloat16 has no numpy dtype and is carried as float32 in numpy.
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
_ALIASES = {
    "float": "float32",
    "fp32": "float32",
    "fp16": "float16",
    "half": "float16",
    "double": "float64",
    "long": "int64",
    "int": "int32",
    "bf16": "bfloat16",
}

_NAME = r"[A-Za-z_][A-Za-z0-9_.\-/]*"
_DIM = re.compile(
    r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*)?(?P<value>\d+)(?:\s*\.\.\s*(?P<max>\d+))?\s*"
)
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^\s*(?P<low>{_NUM})\s*\.\.\s*(?P<high>{_NUM})\s*$")


@dataclass(frozen=True)
class DimSpec:
    """One axis of an input: static (``name is None``) or dynamic with a sample value and optional max."""

    value: int  # the size used for the export dummy (static dims: the size)
    name: str | None = None  # symbolic name shared across inputs; None means static
    max: int | None = None  # largest size the sweep/Triton/server may use
    min: int = 1  # smallest size allowed at run time

    @property
    def dynamic(self) -> bool:
        return self.name is not None

    def __str__(self) -> str:
        if self.name is None:
            return str(self.value)
        return f"{self.name}={self.value}" + (f"..{self.max}" if self.max is not None else "")


@dataclass(frozen=True)
class TensorSpec:
    """Name, dims, dtype and value range of one model input (or a declared output)."""

    name: str
    dims: tuple[DimSpec, ...]
    dtype: str = "float32"
    low: float | None = None  # lower bound of generated values (inclusive)
    high: float | None = None  # upper bound of generated values (exclusive for integers)
    meta: dict[str, Any] = field(default_factory=dict, compare=False)  # e.g. where a default range came from

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

    def shape_for(self, values: dict[str, int]) -> tuple[int, ...]:
        """The concrete shape with dynamic dims set from ``values`` (missing names keep their sample value)."""
        return tuple(values.get(d.name, d.value) if d.name else d.value for d in self.dims)

    def with_range(self, low: float | None, high: float | None, source: str | None = None) -> TensorSpec:
        meta = dict(self.meta)
        if source:
            meta["range_source"] = source
        return replace(self, low=low, high=high, meta=meta)

    def __str__(self) -> str:
        text = f"{self.name}:{' x '.join(str(d) for d in self.dims)}:{self.dtype}"
        if self.low is not None and self.high is not None:
            text += f":{_fmt_num(self.low)}..{_fmt_num(self.high)}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": [d.name if d.name else d.value for d in self.dims],
            "sample_shape": list(self.shape),
            "dims": [{"value": d.value, "name": d.name, "max": d.max, "min": d.min} for d in self.dims],
            "range": None if self.low is None else [self.low, self.high],
            "spec": str(self),
        }

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
            spec = cls(name=str(data["name"]), dims=dims, dtype=dtype, low=low, high=high)
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


def _parse_dims(text: str, whole: str) -> tuple[DimSpec, ...]:
    dims: list[DimSpec] = []
    pos = 0
    text = text.strip()
    if not text:
        raise InputSpecError(f"input spec {whole!r} has no dims", hint=GRAMMAR)
    while True:
        m = _DIM.match(text, pos)
        if not m or m.end() == pos:
            raise InputSpecError(
                f"input spec {whole!r}: cannot read a dim at {text[pos:]!r}",
                hint=GRAMMAR,
            )
        value = int(m["value"])
        mx = int(m["max"]) if m["max"] is not None else None
        name = m["name"]
        if name is None and mx is not None:
            raise InputSpecError(
                f"input spec {whole!r}: a dim with a max must be named (e.g. seq={value}..{mx})", hint=GRAMMAR
            )
        if mx is not None and mx < value:
            raise InputSpecError(
                f"input spec {whole!r}: dim {name} has max {mx} below its sample value {value}",
                hint="write name=N..MAX with N <= MAX",
            )
        if name is None and value == 0:
            raise InputSpecError(
                f"input spec {whole!r}: a static dim of size 0 is not supported", hint=GRAMMAR
            )
        dims.append(DimSpec(value=value, name=name, max=mx))
        pos = m.end()
        if pos >= len(text):
            break
        if text[pos] != "x":
            raise InputSpecError(
                f"input spec {whole!r}: expected 'x' between dims at {text[pos:]!r}", hint=GRAMMAR
            )
        pos += 1
    return tuple(dims)


def _check_range(name: str, dtype: str, low: float, high: float, whole: str) -> None:
    if not low < high:
        raise InputSpecError(
            f"input spec {whole!r}: range {low}..{high} is empty", hint="LOW must be below HIGH"
        )
    if dtype == "bool":
        return
    np_dtype = np.dtype(DTYPES[dtype])
    if np.issubdtype(np_dtype, np.integer):
        if not (float(low).is_integer() and float(high).is_integer()):
            raise InputSpecError(
                f"input {name!r} is {dtype} but its range {low}..{high} is not integral",
                hint="use whole numbers for integer inputs",
            )
        info = np.iinfo(np_dtype)
        if low < info.min or high - 1 > info.max:
            raise InputSpecError(
                f"input {name!r}: range {_fmt_num(low)}..{_fmt_num(high)} overflows {dtype} "
                f"(valid {info.min}..{info.max + 1})",
                hint="narrow the range or pick a wider dtype",
            )
    else:
        info_f = np.finfo(np.float16 if dtype == "float16" else np.float32)
        if abs(low) > float(info_f.max) or abs(high) > float(info_f.max):
            raise InputSpecError(
                f"input {name!r}: range {low}..{high} overflows {dtype}", hint="narrow the range"
            )


def parse_input_spec(text: str) -> TensorSpec:
    """Parse one ``--input`` spec.

    Example:
        >>> str(parse_input_spec("input_sequence:batch=2 x seq=10..64:int64:0..30"))
        'input_sequence:batch=2 x seq=10..64:int64:0..30'
    """
    if not isinstance(text, str) or not text.strip():
        raise InputSpecError("empty input spec", hint=GRAMMAR)
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise InputSpecError(
            f"input spec {text!r} has {len(parts)} ':'-separated fields, expected 3 or 4", hint=GRAMMAR
        )
    name = parts[0].strip()
    if not re.fullmatch(_NAME, name):
        raise InputSpecError(
            f"input spec {text!r}: {name!r} is not a valid input name",
            hint="names start with a letter or '_' (e.g. input_sequence)",
        )
    dims = _parse_dims(parts[1], text)
    dtype = _ALIASES.get(parts[2].strip().lower(), parts[2].strip().lower())
    if dtype not in DTYPES:
        raise InputSpecError(
            f"input spec {text!r}: unknown dtype {parts[2].strip()!r}",
            hint=f"valid dtypes: {', '.join(DTYPES)}",
        )
    low = high = None
    if len(parts) == 4:
        m = _RANGE.match(parts[3])
        if not m:
            raise InputSpecError(f"input spec {text!r}: range {parts[3]!r} is not LOW..HIGH", hint=GRAMMAR)
        low, high = float(m["low"]), float(m["high"])
        _check_range(name, dtype, low, high, text)
    spec = TensorSpec(name=name, dims=dims, dtype=dtype, low=low, high=high)
    check_sample_size(spec, text)
    return spec.with_range(low, high, "spec") if low is not None else spec


def _memory_bytes() -> int:
    try:
        import os

        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 64 * 2**30


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} B"


def check_sample_size(spec: TensorSpec, whole: str | None = None) -> None:
    """Refuse dims whose largest sample (dynamic dims at their max, or 2N+1 without one, as the shape sweep uses
    them) would not fit in half this machine's memory: checked before anything is allocated."""
    shape = [
        d.value if d.name is None else (d.max if d.max is not None else 2 * d.value + 1) for d in spec.dims
    ]
    elements = 1
    for v in shape:
        elements *= max(int(v), 0)
    size = elements * np.dtype(DTYPES.get(spec.dtype, "float32")).itemsize
    limit = _memory_bytes() // 2
    if size > limit:
        where = f"input spec {whole!r}" if whole else f"input {spec.name!r}"
        raise InputSpecError(
            f"{where}: the largest sample {'x'.join(map(str, shape))} {spec.dtype} needs {_human(size)}, more "
            f"than half of this machine's {_human(limit * 2)} of memory",
            hint="use smaller dims (the sample value N and the ..MAX of dynamic dims)",
        )


def dim_table(specs: list[TensorSpec] | tuple[TensorSpec, ...]) -> dict[str, DimSpec]:
    """The dynamic dims by name across inputs; a name used with different values is an error."""
    table: dict[str, DimSpec] = {}
    for spec in specs:
        for d in spec.dims:
            if d.name is None:
                continue
            seen = table.get(d.name)
            if seen is None:
                table[d.name] = d
            elif (seen.value, seen.max) != (d.value, d.max):
                raise InputSpecError(
                    f"dim {d.name!r} is declared twice with different sizes ({seen} and {d})",
                    hint="a shared dim name must have the same N..MAX everywhere",
                )
    return table


def sweep_points(
    specs: list[TensorSpec] | tuple[TensorSpec, ...], *, include_export: bool = True
) -> list[dict[str, int]]:
    """Dim assignments to verify at: the export values, then 1, an odd value and the declared max (deduplicated).

    Every dynamic dim moves together, so a candidate that froze any of them fails at every non-export point.
    """
    table = dim_table(specs)
    if not table:
        return [{}] if include_export else []
    levels: list[dict[str, int]] = []
    export = {n: d.value for n, d in table.items()}
    low = {n: max(d.min, 1) for n, d in table.items()}
    odd = {}
    for n, d in table.items():
        v = d.value + 1 if (d.value + 1) % 2 else d.value + 2
        if d.max is not None and v > d.max:
            v = d.max if d.max != d.value else max(d.min, 1)
        odd[n] = v
    mx = {n: (d.max if d.max is not None else d.value * 2 + 1) for n, d in table.items()}
    for point in ([export] if include_export else []) + [low, odd, mx]:
        if point not in levels and (include_export or point != export):
            levels.append(point)
    return levels


def _default_bounds(spec: TensorSpec) -> tuple[float, float]:
    if spec.low is not None and spec.high is not None:
        return spec.low, spec.high
    if spec.is_integer:
        return (0.0, 2.0) if "mask" in spec.name.lower() else (0.0, 10.0)
    return (-1.0, 1.0)


def sample_feeds(
    specs: list[TensorSpec] | tuple[TensorSpec, ...],
    values: dict[str, int] | None = None,
    *,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Random inputs that follow the specs at the given dim values (default: the export values)."""
    rng = np.random.default_rng(seed)
    values = values or {}
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = spec.shape_for(values)
        np_dtype = np.dtype(DTYPES[spec.dtype])
        if spec.dtype == "bool":
            arr = rng.integers(0, 2, size=shape).astype(bool)
        elif spec.is_integer:
            low, high = _default_bounds(spec)
            arr = rng.integers(int(low), int(high), size=shape).astype(np_dtype)
        else:
            low, high = _default_bounds(spec)
            if spec.low is None:
                arr = rng.standard_normal(size=shape).astype(np_dtype)
            else:
                arr = rng.uniform(low, high, size=shape).astype(np_dtype)
        feeds[spec.name] = arr
    return feeds

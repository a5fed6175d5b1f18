"""Input specs: ``NAME:DIMS:DTYPE[:KIND][:LOW..HIGH]`` parsed into TensorSpec, and sample data drawn from them.

Grammar (see DESIGN.md "Input spec")::

    spec  := NAME ":" dims ":" dtype [ ":" kind ] [ ":" LOW ".." HIGH ]     (kind and range in either order)
    dims  := dim ( "x" dim )*            spaces around "x" are allowed
    dim   := N                            static
           | name "=" N [ ".." MAX ] [ "/" STEP ]   dynamic: export size N, largest size MAX, sizes multiples of STEP
           | name "=" term ( "+" term )+  dynamic, the sum of other dims (and constants): total=past+seq
           | name                         dynamic, size declared by another input (same name)
    kind  := ids | mask | normal | uniform | image | positive | offsets(DIM) | lengths(DIM) | indices(DIM)
           | positions[(DIM)]

``N`` is a static dim; ``name=N`` is a dynamic dim whose sample (export) value is N; ``name=N..MAX`` also declares the
largest value the shape sweep, Triton and the server may use; ``/STEP`` says sizes must be multiples of STEP (the sweep
picks only multiples). LOW..HIGH bounds generated values: integers are drawn from [LOW, HIGH) (HIGH excluded, like
``range``), floats uniformly from [LOW, HIGH). The value kinds are described in ``onnxship.spec._values.KINDS``.

This module needs numpy only.

Size: over 400 lines: the grammar, the resolution of dims shared across inputs, the sweep points and the
sample draw all read the same DimSpec rules (sizes, steps, sums); the natural split, when this grows again:
grammar / dim resolution and sweep points / sample draw.
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
    "complete_point",
    "dim_table",
    "parse_dynamic_dim",
    "parse_input_spec",
    "parse_input_specs",
    "resolve_specs",
    "sample_feeds",
    "sweep_points",
]

GRAMMAR = (
    "NAME:DIMS:DTYPE[:KIND][:LOW..HIGH], DIMS separated by 'x', each dim N (static), name=N (dynamic, N = export "
    "value), name=N..MAX, name=N..MAX/STEP (sizes multiples of STEP), name=a+b (sum of other dims) or name "
    "(size given by another input); KIND one of ids, mask, normal, uniform, image, positive, offsets(DIM), "
    "lengths(DIM), indices(DIM), positions; e.g. 'input_ids:batch=2 x seq=10..64:int64:0..30', "
    "'attention_mask:batch x seq:int64:mask', 'image:batch=4x3xheight=224..512/16xwidth=224..512/16:float32:image'"
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
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DIM = re.compile(
    rf"\s*(?:(?P<name>{_IDENT})\s*=\s*)?(?P<value>\d+)(?:\s*\.\.\s*(?P<max>\d+))?"
    r"(?:\s*/\s*(?P<step>\d+))?\s*"
)
_DERIVED = re.compile(
    rf"\s*(?P<name>{_IDENT})\s*=\s*(?P<expr>(?:{_IDENT}|\d+)(?:\s*\+\s*(?:{_IDENT}|\d+))+)\s*"
)
_BARE = re.compile(rf"\s*(?P<name>{_IDENT})(?:\s*/\s*(?P<step>\d+))?\s*(?=x|$)")
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^\s*(?P<low>{_NUM})\s*\.\.\s*(?P<high>{_NUM})\s*$")
_KIND = re.compile(rf"^\s*(?P<kind>[a-z_]+)\s*(?:\(\s*(?P<of>{_IDENT}|\d+)\s*\))?\s*$")


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


def _sized_dim(name: str | None, value: int, mx: int | None, step: int | None, whole: str) -> DimSpec:
    if name is None and mx is not None:
        raise InputSpecError(
            f"input spec {whole!r}: a dim with a max must be named (e.g. seq={value}..{mx})", hint=GRAMMAR
        )
    if name is None and step is not None:
        raise InputSpecError(
            f"input spec {whole!r}: a dim with a step must be named (e.g. height={value}/{step})",
            hint=GRAMMAR,
        )
    if mx is not None and mx < value:
        raise InputSpecError(
            f"input spec {whole!r}: dim {name} has max {mx} below its sample value {value}",
            hint="write name=N..MAX with N <= MAX",
        )
    if name is None and value == 0:
        raise InputSpecError(f"input spec {whole!r}: a static dim of size 0 is not supported", hint=GRAMMAR)
    if step is not None:
        if step < 1:
            raise InputSpecError(f"input spec {whole!r}: dim {name} has step {step}", hint="a step is >= 1")
        if value % step:
            raise InputSpecError(
                f"input spec {whole!r}: dim {name} has export size {value}, not a multiple of its step {step}",
                hint=f"use an export size that is a multiple of {step} (e.g. {max(step, value - value % step)})",
            )
    return DimSpec(value=value, name=name, max=mx, step=step or None, min=step or 1)


def _parse_one_dim(text: str, pos: int, whole: str) -> tuple[DimSpec, int]:
    m = _DERIVED.match(text, pos)
    if m:
        terms = [t.strip() for t in m["expr"].split("+")]
        names = tuple(t for t in terms if not t.isdigit())
        if not names:
            raise InputSpecError(
                f"input spec {whole!r}: dim {m['name']} = {m['expr']} names no other dim", hint=GRAMMAR
            )
        if m["name"] in names:
            raise InputSpecError(f"input spec {whole!r}: dim {m['name']} is defined by itself", hint=GRAMMAR)
        offset = sum(int(t) for t in terms if t.isdigit())
        return DimSpec(value=0, name=m["name"], parts=names, offset=offset), m.end()
    m = _DIM.match(text, pos)
    if m and m.end() > pos:
        step = int(m["step"]) if m["step"] is not None else None
        mx = int(m["max"]) if m["max"] is not None else None
        return _sized_dim(m["name"], int(m["value"]), mx, step, whole), m.end()
    m = _BARE.match(text, pos)
    if m and m.end() > pos:
        step = int(m["step"]) if m["step"] is not None else None
        return DimSpec(value=0, name=m["name"], step=step, min=step or 1, bare=True), m.end()
    raise InputSpecError(f"input spec {whole!r}: cannot read a dim at {text[pos:]!r}", hint=GRAMMAR)


def _parse_dims(text: str, whole: str) -> tuple[DimSpec, ...]:
    dims: list[DimSpec] = []
    pos = 0
    text = text.strip()
    if not text:
        raise InputSpecError(f"input spec {whole!r} has no dims", hint=GRAMMAR)
    while True:
        dim, pos = _parse_one_dim(text, pos, whole)
        dims.append(dim)
        if pos >= len(text):
            break
        if text[pos] != "x":
            raise InputSpecError(
                f"input spec {whole!r}: expected 'x' between dims at {text[pos:]!r}", hint=GRAMMAR
            )
        pos += 1
    return tuple(dims)


def parse_dynamic_dim(text: str, size: int, where: str = "dynamic dim") -> DimSpec:
    """A dynamic dim of the Python API (``dynamic={"x": {0: TEXT}}``) whose export size is ``size``.

    TEXT is ``name``, ``name..MAX``, ``name..MAX/STEP``, ``name/STEP`` or ``name=a+b`` (a sum of other dims).
    """
    raw = str(text).strip()
    m = re.fullmatch(rf"(?P<name>{_IDENT})\s*(?:\.\.\s*(?P<max>\d+))?\s*(?:/\s*(?P<step>\d+))?", raw)
    if m:
        mx = int(m["max"]) if m["max"] else None
        step = int(m["step"]) if m["step"] else None
        return _sized_dim(m["name"], int(size), mx, step, f"{where} {raw!r}")
    d = _DERIVED.fullmatch(raw)
    if d:
        dim, _ = _parse_one_dim(raw, 0, f"{where} {raw!r}")
        return replace(dim, value=int(size))
    raise InputSpecError(
        f"{where} {raw!r} must be 'name', 'name..MAX', 'name..MAX/STEP' or 'name=a+b'",
        hint="e.g. {0: 'batch', 2: 'height..512/16', 1: 'total=past+seq'}",
    )


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


def parse_kind(text: str, dtype: str, where: str) -> tuple[str, str | None]:
    """``mask`` / ``offsets(n)`` -> (kind, of), checked against the dtype."""
    from onnxship.spec._values import KINDS, check_kind

    m = _KIND.match(text)
    if not m or m["kind"] not in KINDS:
        raise InputSpecError(
            f"{where}: {text.strip()!r} is neither a value kind nor a LOW..HIGH range",
            hint="kinds: " + ", ".join(f"{k}{'(DIM)' if v.needs_of else ''}" for k, v in KINDS.items()),
        )
    check_kind(m["kind"], m["of"], dtype, where)
    return m["kind"], m["of"]


def parse_input_spec(text: str) -> TensorSpec:
    """Parse one ``--input`` spec.

    Example:
        >>> str(parse_input_spec("input_sequence:batch=2 x seq=10..64:int64:0..30"))
        'input_sequence:batch=2 x seq=10..64:int64:0..30'
    """
    if not isinstance(text, str) or not text.strip():
        raise InputSpecError("empty input spec", hint=GRAMMAR)
    parts = text.split(":")
    if len(parts) not in (3, 4, 5):
        raise InputSpecError(
            f"input spec {text!r} has {len(parts)} ':'-separated fields, expected 3 or 4 (5 with both a kind and a range)",
            hint=GRAMMAR,
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
    kind = of = None
    for extra in parts[3:]:
        m = _RANGE.match(extra)
        if m:
            if low is not None:
                raise InputSpecError(f"input spec {text!r}: two ranges", hint=GRAMMAR)
            low, high = float(m["low"]), float(m["high"])
            _check_range(name, dtype, low, high, text)
        elif ".." in extra:
            raise InputSpecError(f"input spec {text!r}: range {extra!r} is not LOW..HIGH", hint=GRAMMAR)
        else:
            if kind is not None:
                raise InputSpecError(f"input spec {text!r}: two value kinds", hint=GRAMMAR)
            kind, of = parse_kind(extra, dtype, f"input spec {text!r}")
    spec = TensorSpec(name=name, dims=dims, dtype=dtype, low=low, high=high, kind=kind, of=of)
    check_sample_size(spec, text)
    if kind is not None:
        spec = spec.with_kind(kind, of, "spec")
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


def parse_input_specs(items: list[str | TensorSpec] | tuple[str | TensorSpec, ...]) -> list[TensorSpec]:
    """Parse several specs (strings or TensorSpecs) and resolve shared, bare and derived dims across them."""
    specs = [parse_input_spec(s) if isinstance(s, str) else s for s in items]
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputSpecError(f"input names given twice: {dupes}", hint="give each input once")
    return resolve_specs(specs)


def _merge(seen: DimSpec, d: DimSpec) -> DimSpec:
    """Two declarations of one dim name: bare ones take the sized one's size; sized ones must agree."""
    if d.bare:
        if d.step and seen.step and d.step != seen.step:
            raise InputSpecError(
                f"dim {d.name!r} is declared with steps {seen.step} and {d.step}", hint="use one step per dim"
            )
        return replace(seen, step=seen.step or d.step, min=max(seen.min, d.min)) if d.step else seen
    if seen.bare:
        return _merge(d, seen)
    if bool(seen.parts) != bool(d.parts) or (seen.parts, seen.offset) != (d.parts, d.offset):
        raise InputSpecError(
            f"dim {d.name!r} is declared twice differently ({seen} and {d})",
            hint="declare a derived dim (total=past+seq) the same way everywhere, or once and by name elsewhere",
        )
    if not seen.parts and (seen.value, seen.max, seen.step) != (d.value, d.max, d.step):
        raise InputSpecError(
            f"dim {d.name!r} is declared twice with different sizes ({seen} and {d})",
            hint="a shared dim name must have the same N..MAX/STEP everywhere",
        )
    return seen


def _raw_table(specs: list[TensorSpec] | tuple[TensorSpec, ...]) -> dict[str, DimSpec]:
    table: dict[str, DimSpec] = {}
    for spec in specs:
        for d in spec.dims:
            if d.name is None:
                continue
            table[d.name] = _merge(table[d.name], d) if d.name in table else d
    return table


def _resolve_table(table: dict[str, DimSpec]) -> dict[str, DimSpec]:
    out: dict[str, DimSpec] = {}
    for name, d in table.items():
        if d.bare:
            raise InputSpecError(
                f"dim {name!r} has no size: it is only named, never given as {name}=N",
                hint=f"write {name}=N (N = the export size) in one of the input specs",
            )
        out[name] = d
    for name, d in out.items():
        if not d.parts:
            continue
        for p in d.parts:
            src = out.get(p)
            if src is None:
                raise InputSpecError(
                    f"dim {name!r} = {'+'.join(d.parts)} refers to {p!r}, which no input declares",
                    hint=f"declare {p}=N in one of the input specs",
                )
            if src.parts:
                raise InputSpecError(
                    f"dim {name!r} is the sum of {p!r}, which is itself a sum",
                    hint="write derived dims as sums of plain dims",
                )
        value = sum(out[p].value for p in d.parts) + d.offset
        if d.value and d.value != value:
            raise InputSpecError(
                f"dim {name!r} = {'+'.join(d.parts)} is {d.value} in the sample but "
                f"{' + '.join(str(out[p].value) for p in d.parts)} = {value}",
                hint="make the sample sizes consistent with the declared sum",
            )
        mins = sum(out[p].min for p in d.parts) + d.offset
        maxes = [out[p].max for p in d.parts]
        mx = sum(m for m in maxes if m is not None) + d.offset if all(m is not None for m in maxes) else None
        out[name] = replace(d, value=value, min=mins, max=mx)
    return out


def resolve_specs(specs: list[TensorSpec] | tuple[TensorSpec, ...]) -> list[TensorSpec]:
    """Fill in bare dims (``batch``) from their sized declaration and derived dims (``total=past+seq``)."""
    table = _resolve_table(_raw_table(specs))
    out = []
    for spec in specs:
        dims = tuple(table[d.name] if d.name else d for d in spec.dims)
        out.append(spec if dims == spec.dims else replace(spec, dims=dims))
    return out


def dim_table(specs: list[TensorSpec] | tuple[TensorSpec, ...]) -> dict[str, DimSpec]:
    """The dynamic dims by name across inputs (resolved); a name used with different values is an error."""
    return _resolve_table(_raw_table(specs))


def _round_up(v: int, step: int | None) -> int:
    return v if not step else max(step, -(-v // step) * step)


def _round_down(v: int, step: int | None) -> int:
    return v if not step else max(step, v // step * step)


def _levels(d: DimSpec) -> dict[str, int]:
    """A root dim's sweep sizes: low (smallest allowed), odd (just above the export size) and max."""
    step = d.step
    low = _round_up(max(d.min, 1), step)
    if step:
        odd = d.value + step
        if d.max is not None and odd > d.max:
            odd = d.value - step if d.value - step >= low else low
        mx = _round_down(d.max, step) if d.max is not None else d.value * 2
    else:
        odd = d.value + 1 if (d.value + 1) % 2 else d.value + 2
        if d.max is not None and odd > d.max:
            odd = d.max if d.max != d.value else max(d.min, 1)
        mx = d.max if d.max is not None else d.value * 2 + 1
    return {"low": low, "odd": odd, "max": max(mx, low)}


def _complete(point: dict[str, int], table: dict[str, DimSpec]) -> dict[str, int]:
    out = dict(point)
    for name, d in table.items():
        if d.parts:
            out[name] = sum(point[p] for p in d.parts) + d.offset
    return out


def complete_point(point: dict[str, int], specs: list[TensorSpec] | tuple[TensorSpec, ...]) -> dict[str, int]:
    """The point with every derived dim (``total=past+seq``) recomputed from its parts."""
    table = dim_table(specs)
    out = dict(point)
    for name, d in table.items():
        if d.parts and all(p in out for p in d.parts):
            out[name] = sum(int(out[p]) for p in d.parts) + d.offset
    return out


def sweep_points(
    specs: list[TensorSpec] | tuple[TensorSpec, ...], *, include_export: bool = True
) -> list[dict[str, int]]:
    """Dim assignments to verify at: the export values; then every dim together at its smallest allowed size, an
    odd size (the next step with a step) and the max; then each dim on its own at the odd size (so a size rule on
    one axis does not hide the others). Derived dims follow their parts; stepped dims take only multiples.
    """
    table = dim_table(specs)
    if not table:
        return [{}] if include_export else []
    roots = {n: d for n, d in table.items() if not d.parts}
    levels = {n: _levels(d) for n, d in roots.items()}
    export = {n: d.value for n, d in roots.items()}
    candidates = [export] if include_export else []
    for which in ("low", "odd", "max"):
        candidates.append({n: lv[which] for n, lv in levels.items()})
    if len(roots) > 1:
        for n, lv in levels.items():
            candidates.append(export | {n: lv["odd"]})
    full_export = _complete(export, table)
    points: list[dict[str, int]] = []
    for c in candidates:
        point = _complete(c, table)
        if point not in points and (include_export or point != full_export):
            points.append(point)
    return points


def _default_bounds(spec: TensorSpec) -> tuple[float, float]:
    from onnxship.spec._values import default_bounds

    return default_bounds(spec)


def sample_feeds(
    specs: list[TensorSpec] | tuple[TensorSpec, ...],
    values: dict[str, int] | None = None,
    *,
    seed: int = 0,
    use_samples: bool = True,
) -> dict[str, np.ndarray]:
    """Inputs that follow the specs at the given dim values (default: the export values).

    Values follow each input's kind (``mask``: prefix masks, ``offsets``: valid bag offsets, ...). Where an input
    carries the user's sample tensor (``spec.meta["sample"]``) and the shape is the sample's, the sample is used as
    given (``use_samples=False``: always generated, e.g. to test whether generated values are valid).
    """
    from onnxship.spec._values import generate

    rng = np.random.default_rng(seed)
    specs = resolve_specs(specs)
    table = dim_table(specs)
    given = dict(values or {})
    sizes = {n: int(given.get(n, d.value)) for n, d in table.items() if not d.parts} | given
    for n, d in table.items():
        if d.parts and n not in given:
            sizes[n] = sum(sizes[p] for p in d.parts) + d.offset
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = spec.shape_for(sizes)
        sample = spec.meta.get("sample") if use_samples else None
        if sample is not None and tuple(np.shape(sample)) == shape:
            feeds[spec.name] = np.array(sample, dtype=np.dtype(DTYPES[spec.dtype]), copy=True)
            continue
        feeds[spec.name] = generate(spec, shape, sizes, rng)
    return feeds

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

The spec types live in ``_tensors``, the shared-dim table and sweep points in ``_dims``, the sample draw in
``_samples``; every name stays importable from here.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from onnxship._errors import InputSpecError
from onnxship.spec._dims import complete_point, dim_table, resolve_specs, sweep_points
from onnxship.spec._samples import check_sample_size, sample_feeds
from onnxship.spec._tensors import DTYPES, DimSpec, TensorSpec, _fmt_num

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


def parse_input_specs(items: list[str | TensorSpec] | tuple[str | TensorSpec, ...]) -> list[TensorSpec]:
    """Parse several specs (strings or TensorSpecs) and resolve shared, bare and derived dims across them."""
    specs = [parse_input_spec(s) if isinstance(s, str) else s for s in items]
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputSpecError(f"input names given twice: {dupes}", hint="give each input once")
    return resolve_specs(specs)

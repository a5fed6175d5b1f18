"""Value kinds: what generated inputs look like, so synthetic checks feed a model what it will really see.

A random 0/1 per position is not an attention mask (rows with no valid token make fused attention return 0 in
eager PyTorch and a uniform average in a correct ONNX graph), and random integers are not EmbeddingBag offsets.
Each input spec may name a kind (``attention_mask:batch x seq:int64:mask``); the obvious ones are inferred from
the input's name, dtype and sample (:func:`infer_kinds`) with a note saying so.

This module needs numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxship._errors import InputSpecError

if TYPE_CHECKING:
    from onnxship.spec._inputs import TensorSpec

__all__ = [
    "KINDS",
    "STRUCTURAL",
    "Kind",
    "check_kind",
    "default_bounds",
    "effective_kind",
    "generate",
    "infer_kinds",
    "is_structural",
]


@dataclass(frozen=True)
class Kind:
    """One value kind: which dtypes it fits, whether it refers to a dim (``offsets(n)``) and what it means."""

    dtypes: str  # "int", "float", "any"
    needs_of: bool
    doc: str


KINDS: dict[str, Kind] = {
    "ids": Kind(
        "int", False, "integers uniform in [LOW, HIGH) (default for integers; 0..10 or the nn.Embedding size)"
    ),
    "mask": Kind(
        "any",
        False,
        "padding-style prefix masks along the last axis: each row holds 1..L ones then zeros (at least one valid "
        "token per row, the first never masked); the first row is full",
    ),
    "normal": Kind(
        "float", False, "N(0, 1) (default for floats); with LOW..HIGH a normal clipped to the range"
    ),
    "uniform": Kind(
        "float", False, "uniform in [LOW, HIGH) (default -1..1; the default for floats with a range)"
    ),
    "image": Kind("float", False, "image-range values, uniform in [0, 1) (or in LOW..HIGH, e.g. 0..255)"),
    "positive": Kind(
        "any", False, "strictly positive values: floats in [0.1, 2) and integers in [1, 10) by default"
    ),
    "offsets": Kind(
        "int",
        True,
        "offsets(DIM): EmbeddingBag-style bag starts into an input of size DIM: 0 first, non-decreasing, < DIM",
    ),
    "lengths": Kind(
        "int",
        True,
        "lengths(DIM): sequence lengths in [1, DIM], sorted longest first, the first = DIM (pack_padded_sequence)",
    ),
    "indices": Kind("int", True, "indices(DIM): integers in [0, DIM) (indices into another input's axis)"),
    "positions": Kind(
        "int",
        False,
        "0, 1, 2, ... along the last axis; positions(DIM) starts at the size of DIM (past length)",
    ),
}


# Kinds whose values carry structure: shifting, scaling or redrawing them makes inputs the model never sees.
STRUCTURAL = frozenset({"mask", "offsets", "lengths", "indices", "positions"})


def is_structural(spec: TensorSpec) -> bool:
    """Whether an input's values are structural (a mask, offsets, ...): value sweeps must leave them as they are."""
    return effective_kind(spec) in STRUCTURAL


def check_kind(kind: str, of: str | None, dtype: str, where: str) -> None:
    """A kind must fit the dtype and carry its dim reference when it needs one."""
    k = KINDS.get(kind)
    if k is None:
        raise InputSpecError(f"{where}: unknown value kind {kind!r}", hint="kinds: " + ", ".join(KINDS))
    is_int = dtype.startswith(("int", "uint"))
    is_float = dtype.startswith(("float", "bfloat"))
    if (k.dtypes == "int" and not is_int) or (k.dtypes == "float" and not is_float):
        want = "an integer" if k.dtypes == "int" else "a float"
        raise InputSpecError(
            f"{where}: value kind {kind!r} needs {want} dtype, not {dtype}", hint=f"{kind}: {k.doc}"
        )
    if k.needs_of and of is None:
        raise InputSpecError(
            f"{where}: value kind {kind!r} needs the dim it refers to, e.g. {kind}(n)",
            hint=f"{kind}: {k.doc}",
        )
    if of is not None and not k.needs_of and kind != "positions":
        raise InputSpecError(f"{where}: value kind {kind!r} takes no argument", hint=f"{kind}: {k.doc}")


def effective_kind(spec: TensorSpec) -> str:
    """The kind generation uses: the declared one, else mask for 0/1 inputs named like *mask*, else the default."""
    if spec.kind:
        return spec.kind
    if _looks_like_mask(spec):
        return "mask"
    if spec.dtype == "bool":
        return "bool"
    if spec.is_integer:
        return "ids"
    return "normal" if spec.low is None else "uniform"


def _looks_like_mask(spec: TensorSpec) -> bool:
    if "mask" not in spec.name.lower() or not (spec.is_integer or spec.dtype == "bool"):
        return False
    if spec.low is None or spec.high is None:
        return True
    return spec.low >= 0 and spec.high <= 2  # a 0/1 range (a sample of all ones reads as 1..2)


def default_bounds(spec: TensorSpec) -> tuple[float, float]:
    """The value range generation uses (declared, else the kind's default)."""
    if spec.low is not None and spec.high is not None:
        return spec.low, spec.high
    kind = effective_kind(spec)
    if kind in ("mask", "bool"):
        return (0.0, 2.0)
    if kind == "image":
        return (0.0, 1.0)
    if kind == "positive":
        return (1.0, 10.0) if spec.is_integer else (0.1, 2.0)
    if spec.is_integer:
        return (0.0, 10.0)
    return (-1.0, 1.0)


def _size_of(of: str | None, sizes: dict[str, int], default: int) -> int:
    if of is None:
        return default
    if of.isdigit():
        return int(of)
    if of not in sizes:
        raise InputSpecError(
            f"value kind refers to dim {of!r}, which no input declares (dims: {sorted(sizes)})",
            hint="name a dynamic dim of another input, or give a size, e.g. offsets(20)",
        )
    return int(sizes[of])


def generate(
    spec: TensorSpec, shape: tuple[int, ...], sizes: dict[str, int], rng: np.random.Generator
) -> np.ndarray:
    """Values for one input of the given shape, following its kind; ``sizes`` are the dim sizes at this point."""
    from onnxship.spec._inputs import DTYPES

    np_dtype = np.dtype(DTYPES[spec.dtype])
    kind = effective_kind(spec)
    low, high = default_bounds(spec)
    last = shape[-1] if shape else 1
    if kind == "bool":
        arr = rng.integers(0, 2, size=shape).astype(bool)
    elif kind == "mask":
        lead = shape[:-1]
        lengths = rng.integers(1, last + 1, size=lead) if last else np.zeros(lead, np.int64)
        if lengths.size:
            lengths.reshape(-1)[0] = last  # the longest sequence fills the padded length
        arr = np.arange(last) < np.asarray(lengths)[..., None]
        arr = arr.reshape(shape)
    elif kind == "ids":
        arr = rng.integers(int(low), int(high), size=shape)
    elif kind == "normal":
        arr = rng.standard_normal(size=shape)
        if spec.low is not None:
            mid, half = (low + high) / 2, (high - low) / 2
            arr = np.clip(mid + arr * half / 3, low, np.nextafter(high, low))
    elif kind in ("uniform", "image"):
        arr = rng.uniform(low, high, size=shape)
    elif kind == "positive":
        arr = (
            rng.integers(int(low), int(high), size=shape)
            if spec.is_integer
            else rng.uniform(low, high, size=shape)
        )
    elif kind == "offsets":
        n = _size_of(spec.of, sizes, last)
        arr = _offsets(shape, n, rng)
    elif kind == "lengths":
        n = _size_of(spec.of, sizes, last)
        arr = -np.sort(-rng.integers(1, max(n, 1) + 1, size=shape).reshape(-1)).reshape(shape)
        if arr.size:
            arr.reshape(-1)[0] = n
    elif kind == "indices":
        n = _size_of(spec.of, sizes, last)
        arr = rng.integers(0, max(n, 1), size=shape)
    elif kind == "positions":
        start = _size_of(spec.of, sizes, 0) if spec.of is not None else 0
        arr = np.broadcast_to(np.arange(start, start + last), shape).copy() if shape else np.zeros(())
    else:  # pragma: no cover - check_kind rejects unknown kinds
        raise InputSpecError(f"input {spec.name!r}: unknown value kind {kind!r}")
    return np.ascontiguousarray(arr).astype(np_dtype)


def _offsets(shape: tuple[int, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    """Bag starts: 0 first, non-decreasing, all < n (distinct when there are fewer bags than items)."""
    count = int(np.prod(shape)) if shape else 1
    if count == 0:
        return np.zeros(shape, np.int64)
    if n <= 0:
        return np.zeros(shape, np.int64)
    if count <= n:
        rest = np.sort(rng.choice(np.arange(1, n), size=count - 1, replace=False)) if count > 1 else []
    else:
        rest = np.sort(rng.integers(0, n, size=count - 1))
    return np.concatenate([[0], rest]).astype(np.int64).reshape(shape)


# ------------------------------------------------------------------------------------------------ inference


def _other_1d_int(spec: TensorSpec, specs: list[TensorSpec]) -> str | None:
    for s in specs:
        if s.name != spec.name and s.is_integer and len(s.dims) == 1 and "offset" not in s.name.lower():
            d = s.dims[0]
            return d.name if d.name else str(d.value)
    return None


def _seq_dim_for(spec: TensorSpec, specs: list[TensorSpec], sample: Any) -> str | None:
    """The axis a lengths input measures: axis 1 of another input that shares its batch axis."""
    if len(spec.dims) != 1:
        return None
    batch = spec.dims[0]
    top = int(np.max(sample)) if sample is not None and np.size(sample) else None
    for s in specs:
        if s.name == spec.name or len(s.dims) < 2:
            continue
        b = s.dims[0]
        if (b.name or b.value) != (batch.name or batch.value):
            continue
        d = s.dims[1]
        size = d.value
        if top is not None and top > size:
            continue
        return d.name if d.name else str(d.value)
    return None


def infer_kinds(specs: list[TensorSpec]) -> tuple[list[TensorSpec], list[str]]:
    """Give inputs without a kind the obvious one (with a note): masks, EmbeddingBag offsets, sequence lengths.

    A user sample (``spec.meta["sample"]``) must agree with the kind, or nothing is inferred.
    """
    out: list[TensorSpec] = []
    notes: list[str] = []
    for spec in specs:
        if spec.kind is not None:
            out.append(spec)
            continue
        sample = spec.meta.get("sample")
        lname = spec.name.lower()
        new = None
        why = ""
        if _looks_like_mask(spec) and (sample is None or _is_prefix_like_mask(sample)):
            new = spec.with_kind("mask", None, "inferred")
            why = "its name says mask and its values are 0/1"
        elif spec.is_integer and len(spec.dims) == 1 and "offset" in lname:
            target = _other_1d_int(spec, specs)
            if target is not None and (sample is None or _is_offsets(sample)):
                new = spec.with_kind("offsets", target, "inferred")
                why = f"its name says offsets (into the 1-d input of size {target})"
        elif spec.is_integer and len(spec.dims) == 1 and ("length" in lname or lname.endswith("lens")):
            target = _seq_dim_for(spec, specs, sample)
            if target is not None and (sample is None or int(np.min(sample)) >= 1):
                new = spec.with_kind("lengths", target, "inferred")
                why = f"its name says lengths (of axis {target})"
        elif (
            spec.is_integer
            and ("position_ids" in lname or lname in ("positions", "pos_ids", "position"))
            and (sample is None or _is_positions(sample))
        ):
            new = spec.with_kind("positions", None, "inferred")
            why = "its name says position ids"
        if new is None:
            out.append(spec)
            continue
        if new.meta.get("range_source") == "sample":  # the sample's min..max says nothing about a structure
            new = new.with_range(None, None)
        out.append(new)
        notes.append(
            f"input {spec.name!r}: values generated as {new.kind_text} because {why}; "
            f"declare another kind in the spec (e.g. {spec.name}:...:{spec.dtype}:ids) if that is wrong"
        )
    return out, notes


def _is_prefix_like_mask(sample: Any) -> bool:
    arr = np.asarray(sample)
    return bool(np.isin(arr, (0, 1)).all())


def _is_offsets(sample: Any) -> bool:
    arr = np.asarray(sample).reshape(-1)
    return bool(arr.size and arr[0] == 0 and (np.diff(arr) >= 0).all())


def _is_positions(sample: Any) -> bool:
    arr = np.asarray(sample)
    return bool(arr.ndim and arr.shape[-1] and (arr == np.arange(arr.shape[-1])).all())

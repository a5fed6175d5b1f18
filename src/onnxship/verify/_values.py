"""The value sweep: the same inputs shifted, scaled and set to edge values, so data-dependent branches are taken.

Random N(0, 1) samples take one side of a Python ``if x.mean() > -1.0`` every time; a TorchScript trace that froze the
other side passes every shape check. The value sweep feeds each float input as ``x - 3``, ``x + 3``, ``10·x``, ``-x``,
zeros and a constant, and each id input at its smallest and largest valid id, so both sides of such branches are compared.

Structural inputs keep their values: masks stay valid masks, offsets/lengths/indices stay valid, booleans are not
touched. An input whose declared range the shifted values would leave is clipped back into it (a model that only
accepts ``[0, 1)`` images still sees valid images, at their edges). A variant at which PyTorch itself fails, or
returns NaN/Inf, is outside the model's domain: it is recorded as not runnable, never counted against a candidate.

This module needs numpy only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onnxship.spec._inputs import TensorSpec

__all__ = ["VALUE_VARIANTS", "ValueVariant", "value_variants"]

# Value kinds (see spec/_inputs.py) and names whose values carry structure: left exactly as generated.
_STRUCTURAL_KINDS = {"mask", "offsets", "lengths", "indices", "positions", "structural", "index"}
_STRUCTURAL_NAMES = (
    "mask",
    "offset",
    "length",
    "lens",
    "index",
    "indices",
    "position",
    "segment",
    "token_type",
)


@dataclass(frozen=True)
class ValueVariant:
    """One transformation of float inputs (and of id inputs: ``"low"``/``"high"``/``None`` to leave them)."""

    label: str  # shown in reports: "x-3", "10x", ...
    floats: Callable[[np.ndarray], np.ndarray] | None
    ints: str | None = None  # "low" | "high": every id set to the smallest / largest valid id


VALUE_VARIANTS: tuple[ValueVariant, ...] = (
    ValueVariant("x-3", lambda x: x - 3.0, "low"),
    ValueVariant("x+3", lambda x: x + 3.0, "high"),
    ValueVariant("10x", lambda x: x * 10.0),
    ValueVariant("-x", lambda x: -x),
    ValueVariant("zeros", np.zeros_like),
    ValueVariant("constant", lambda x: np.full_like(x, 0.5)),
)


def _kind(spec: TensorSpec) -> str | None:
    kind = getattr(spec, "kind", None) or spec.meta.get("kind")
    return str(kind).lower() if kind else None


def is_structural(spec: TensorSpec) -> bool:
    """Inputs whose values are structure (masks, offsets, lengths, indices): the value sweep keeps them."""
    kind = _kind(spec)
    if kind is not None:
        return kind in _STRUCTURAL_KINDS
    if spec.dtype == "bool":
        return True
    name = spec.name.lower()
    return any(k in name for k in _STRUCTURAL_NAMES) and not spec.is_float


def _id_bounds(spec: TensorSpec, arr: np.ndarray) -> tuple[int, int]:
    if spec.low is not None and spec.high is not None:
        return int(spec.low), int(spec.high) - 1
    return int(arr.min()), int(arr.max())  # no declared range: the extremes the sample itself used


def value_variants(
    specs: list[TensorSpec] | tuple[TensorSpec, ...], feeds: dict[str, np.ndarray]
) -> list[tuple[str, dict[str, np.ndarray]]]:
    """The value-sweep feeds derived from ``feeds`` (one dict per variant that changes at least one input)."""
    by_name = {s.name: s for s in specs}
    out: list[tuple[str, dict[str, np.ndarray]]] = []
    for variant in VALUE_VARIANTS:
        new: dict[str, np.ndarray] = {}
        changed = False
        for name, arr in feeds.items():
            spec = by_name.get(name)
            if spec is None or arr.size == 0 or is_structural(spec):
                new[name] = arr
                continue
            if arr.dtype.kind == "f" and variant.floats is not None:
                v = np.asarray(variant.floats(arr.astype(np.float64)))
                if _kind(spec) in ("positive", "positives"):
                    v = np.abs(v) + 1e-3
                v = v.astype(arr.dtype)
                if spec.low is not None and spec.high is not None:  # [LOW, HIGH) in the input's own dtype
                    top = np.nextafter(np.asarray(spec.high, arr.dtype), np.asarray(spec.low, arr.dtype))
                    v = np.clip(v, np.asarray(spec.low, arr.dtype), top).astype(arr.dtype)
                changed = changed or not np.array_equal(v, arr)
                new[name] = v
            elif arr.dtype.kind in "iu" and variant.ints is not None:
                low, high = _id_bounds(spec, arr)
                v = np.full_like(arr, low if variant.ints == "low" else high)
                changed = changed or not np.array_equal(v, arr)
                new[name] = v
            else:
                new[name] = arr
        if changed:
            out.append((variant.label, new))
    return out

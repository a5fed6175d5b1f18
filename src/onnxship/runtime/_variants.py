"""Variant names (fp32, fp16, int8-dynamic, int8-static) and their aliases.

Shared by ``optimize`` (which builds variants) and ``bench`` (which times them); it sits in the runtime layer so
that timing a variant file never needs the optimizer.
"""

from __future__ import annotations

from onnxship._errors import ConfigError

__all__ = ["VARIANTS", "normalize_variant"]

# variant name -> precision whose tolerance policy judges it
VARIANTS = {"fp32": "fp32", "fp16": "fp16", "int8-dynamic": "int8", "int8-static": "int8"}
_ALIASES = {
    "simplified": "fp32",
    "simplify": "fp32",
    "int8": "int8-dynamic",
    "dynamic": "int8-dynamic",
    "static": "int8-static",
    "half": "fp16",
    "float16": "fp16",
}


def normalize_variant(name: str) -> str:
    """``int8`` -> ``int8-dynamic``, ``simplified`` -> ``fp32``; raises ConfigError listing the valid names."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in VARIANTS:
        raise ConfigError(
            f"unknown variant {name!r}", hint=f"valid: {', '.join(VARIANTS)} (aliases: {', '.join(_ALIASES)})"
        )
    return key

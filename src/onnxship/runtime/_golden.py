"""Golden files: a few inputs with PyTorch's outputs, so any runtime can be re-checked without torch.

Layout of ``golden.npz`` (the contract shared by verify, package, serve and publish)::

    inputs/<input name>    one array per model input (batch of golden samples)
    outputs/<output name>  PyTorch's outputs for those inputs
    __meta__               a 0-d unicode array holding JSON: {"schema": "onnxship.golden/1", "model_name", ...}
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxship._errors import CheckError
from onnxship._util import atomic_write

__all__ = ["GOLDEN_SCHEMA", "Golden", "GoldenRunner", "read_golden", "write_golden"]

GOLDEN_SCHEMA = "onnxship.golden/1"


@dataclass
class Golden:
    """Golden inputs and reference outputs."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)


def write_golden(
    path: str | Path,
    inputs: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write golden.npz atomically."""
    path = Path(path)
    arrays: dict[str, Any] = {f"inputs/{k}": np.asarray(v) for k, v in inputs.items()}
    arrays.update({f"outputs/{k}": np.asarray(v) for k, v in outputs.items()})
    arrays["__meta__"] = np.array(json.dumps({"schema": GOLDEN_SCHEMA, **(meta or {})}, default=str))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))
    return path


def _read_meta(array: np.ndarray) -> Any:
    if array.ndim != 0 or array.dtype.kind not in "US":
        raise ValueError(f"__meta__ is a {array.dtype} array of shape {array.shape}, not a JSON string")
    return json.loads(str(array))


def read_golden(path: str | Path) -> Golden:
    """Read golden.npz (never with pickle); clear errors for missing or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise CheckError(f"golden file {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = list(data.keys())
            inputs = {k.split("/", 1)[1]: data[k] for k in keys if k.startswith("inputs/")}
            outputs = {k.split("/", 1)[1]: data[k] for k in keys if k.startswith("outputs/")}
            meta = _read_meta(data["__meta__"]) if "__meta__" in keys else {}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, TypeError) as exc:
        raise CheckError(
            f"{str(path)!r} is not a readable golden file ({type(exc).__name__})",
            hint="golden.npz is written by `onnxship ship`; re-create it",
        ) from None
    if not inputs or not outputs:
        raise CheckError(
            f"{str(path)!r} has no inputs/ or outputs/ arrays",
            hint="a golden file holds inputs/<name> and outputs/<name> arrays",
        )
    _check_meta(path, meta)
    return Golden(inputs=inputs, outputs=outputs, meta=meta)


def _check_meta(path: Path, meta: Any) -> None:
    """The ``__meta__`` record: a JSON object whose tolerance, when present, holds finite atol/rtol >= 0."""
    import math

    hint = "golden.npz is written by `onnxship ship`; re-create it"
    if not isinstance(meta, dict):
        raise CheckError(
            f"{str(path)!r}: its __meta__ record is a {type(meta).__name__}, not a JSON object", hint=hint
        )
    tol = meta.get("tolerance")
    if tol is None:
        return
    if not isinstance(tol, dict):
        raise CheckError(f"{str(path)!r}: tolerance {tol!r} in __meta__ is not {{'atol', 'rtol'}}", hint=hint)
    for key, value in tol.items():
        ok = (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value >= 0
        )
        if key in ("atol", "rtol") and not (ok or value is None):
            raise CheckError(
                f"{str(path)!r}: tolerance {key}={value!r} in __meta__ is not a finite number >= 0", hint=hint
            )


class GoldenRunner:
    """A runner that answers with the stored outputs for the stored inputs (a reference without torch)."""

    name = "golden"

    def __init__(self, golden: Golden | str | Path) -> None:
        self.golden = golden if isinstance(golden, Golden) else read_golden(golden)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        g = self.golden.inputs
        if sorted(feeds) != sorted(g) or any(
            np.asarray(feeds[k]).shape != g[k].shape or not np.array_equal(feeds[k], g[k]) for k in g
        ):
            raise CheckError(
                "the golden runner only answers for the golden inputs",
                hint=f"feed exactly the arrays stored in the golden file ({sorted(g)})",
            )
        return dict(self.golden.outputs)

"""Calibration data for INT8 static quantization, from the verification data sources.

``--calibration`` takes whatever ``onnxship verify --data`` takes (an .npz with one array per input, an image folder
through the shared preprocessing, parquet/CSV sequences); without it, samples are generated from the input specs.
DO NOT import onnxruntime at module level (the reader class is built on first use).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxship._errors import ConfigError
from onnxship.spec._inputs import TensorSpec

__all__ = ["calibration_batches", "calibration_reader"]


def calibration_batches(
    source: str | Path | None,
    specs: Sequence[TensorSpec],
    *,
    samples: int = 64,
    batch: int = 8,
    seed: int = 0,
) -> list[dict[str, np.ndarray]]:
    """Up to ``samples`` samples in batches: read from ``source`` (first samples) or generated from the specs."""
    from onnxship.runtime._data import SyntheticSource, open_source

    if samples < 1 or batch < 1:
        raise ConfigError(
            f"calibration needs samples >= 1 and batch >= 1, got samples={samples} batch={batch}"
        )
    src = (
        SyntheticSource(list(specs), samples, seed=seed)
        if source is None
        else open_source(source, list(specs))
    )
    if len(src) == 0:
        raise ConfigError(f"calibration data {str(source)!r} holds no samples")
    indices = np.arange(min(samples, len(src)))
    return [b.feeds for b in src.batches(indices, batch)]


def calibration_reader(batches: Sequence[dict[str, np.ndarray]]) -> Any:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over the batches (rewindable)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = list(batches)
            self._pos = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self._pos >= len(self._items):
                return None
            self._pos += 1
            return self._items[self._pos - 1]

        def rewind(self) -> None:
            self._pos = 0

        def __len__(self) -> int:
            return len(self._items)

    return _Reader()

"""Parquet/CSV tables as a data source: one column per input (sequences as list cells), labels in a label column,
read in row groups so a large table streams.

DO NOT import pandas/pyarrow at module level (the ``data`` extra).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from onnxship._errors import ConfigError, require
from onnxship.runtime._data import LABEL_KEYS, Batch, _check_array
from onnxship.spec._inputs import TensorSpec

__all__ = ["TableSource"]


def _parse_cell(value: Any) -> list[Any]:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return list(json.loads(text))
        return [float(t) if any(ch in t for ch in ".eE") else int(t) for t in text.replace(",", " ").split()]
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return [value]
    raise TypeError(f"cell {value!r} is not a sequence of numbers")


class TableSource:
    """Sequences from parquet or CSV: one column per input (a list, or space/comma-separated ids in CSV), and an
    optional ``next_event``/``label`` column. Streams through the file; the selected rows are picked on the way."""

    kind = "table"

    def __init__(self, path: Path, specs: list[TensorSpec]):
        self.path, self.specs = path, list(specs)
        self.is_parquet = path.suffix.lower() in (".parquet", ".pq")
        columns = self._columns()
        names = [s.name for s in specs]
        missing = [n for n in names if n not in columns]
        if missing:
            raise ConfigError(
                f"{path.name}: columns {columns} lack the model inputs {missing}",
                hint=f"name one column per input ({names}); labels go in one of {list(LABEL_KEYS)}",
            )
        self.label_key = next((k for k in LABEL_KEYS if k in columns), None)
        self._labels = self._read_labels()
        self.description = f"{path} ({len(self)} rows{', labelled' if self.label_key else ''})"

    def _columns(self) -> list[str]:
        try:
            if self.is_parquet:
                pq = require("pyarrow.parquet", "data")
                return list(pq.ParquetFile(self.path).schema_arrow.names)
            pd = require("pandas", "data")
            return list(pd.read_csv(self.path, nrows=0).columns)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{str(self.path)!r} is not a readable {'parquet' if self.is_parquet else 'CSV'} "
                f"file ({type(exc).__name__}: {str(exc)[:200]})"
            ) from None

    def _read_labels(self) -> np.ndarray | None:
        if self.label_key is None:
            if self.is_parquet:
                pq = require("pyarrow.parquet", "data")
                self._count = int(pq.ParquetFile(self.path).metadata.num_rows)
            else:
                self._count = sum(
                    len(c[self.specs[0].name]) for c in self._chunks_raw([self.specs[0].name], 65536)
                )
            return None
        parts = [c[self.label_key] for c in self._chunks_raw([self.label_key], 65536)]
        col = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        self._count = int(col.shape[0])
        try:
            return col.astype(np.int64)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{self.path.name}: label column {self.label_key!r} does not hold integers",
                hint="labels are class ids / next-event ids",
            ) from None

    def _chunks_raw(self, columns: list[str], size: int) -> Iterator[dict[str, np.ndarray]]:
        """Column chunks as numpy: [rows, L] for equal-length list columns, [rows] (object or scalar) otherwise."""
        if self.is_parquet:
            pq = require("pyarrow.parquet", "data")
            for rb in pq.ParquetFile(self.path).iter_batches(batch_size=size, columns=columns):
                yield {c: self._arrow_column(rb.column(c)) for c in columns}
        else:
            pd = require("pandas", "data")
            for df in pd.read_csv(self.path, usecols=columns, chunksize=size):
                yield {c: df[c].to_numpy() for c in columns}

    @staticmethod
    def _arrow_column(col: Any) -> np.ndarray:
        pa = require("pyarrow", "data")
        if (
            pa.types.is_list(col.type)
            or pa.types.is_large_list(col.type)
            or pa.types.is_fixed_size_list(col.type)
        ):
            offsets = col.offsets.to_numpy() if not pa.types.is_fixed_size_list(col.type) else None
            values = col.flatten().to_numpy(zero_copy_only=False)
            lengths = np.diff(offsets) if offsets is not None else None
            if col.null_count == 0 and len(col) and (lengths is None or (lengths == lengths[0]).all()):
                return values.reshape(len(col), -1)
            return np.asarray(col.to_pylist(), dtype=object)
        return col.to_numpy(zero_copy_only=False)

    def __len__(self) -> int:
        return self._count

    def labels(self) -> np.ndarray | None:
        return self._labels

    def _to_batch(self, rows: dict[str, np.ndarray], chunk: np.ndarray) -> Batch:
        feeds = {}
        for s in self.specs:
            col = rows[s.name]
            try:
                arr = col if col.dtype != object else np.asarray([_parse_cell(v) for v in col])
            except (ValueError, TypeError) as exc:
                raise ConfigError(
                    f"{self.path.name}: column {s.name!r} does not hold sequences of numbers ({exc})",
                    hint="use lists, or space/comma-separated ids",
                ) from None
            if arr.dtype == object:
                raise ConfigError(
                    f"{self.path.name}: column {s.name!r} holds sequences of different lengths "
                    "within a batch",
                    hint="pad the windows to one length (or use --batch-size 1)",
                )
            if len(s.dims) == 1:
                arr = arr.reshape(-1)
            elif arr.ndim == 1:
                arr = arr.reshape(-1, 1)
            feeds[s.name] = _check_array(s.name, arr, s, self.path.name)
        labels = None if self._labels is None else self._labels[chunk]
        return Batch(feeds, chunk, labels=labels, ids=[f"{self.path.name}:row{i}" for i in chunk.tolist()])

    def batches(self, indices: np.ndarray | None, batch_size: int) -> Iterator[Batch]:
        cols = [s.name for s in self.specs]
        wanted = None if indices is None else np.sort(np.asarray(indices))
        start = 0
        pending: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        held = 0
        for raw in self._chunks_raw(cols, max(batch_size, 1024)):
            n = len(raw[cols[0]])
            rows = np.arange(start, start + n)
            start += n
            local = np.arange(n) if wanted is None else np.flatnonzero(np.isin(rows, wanted))
            if local.size:
                pending.append((rows[local], {c: raw[c][local] for c in cols}))
                held += local.size
            while held >= batch_size:
                idx = np.concatenate([p[0] for p in pending])
                merged = {c: _concat([p[1][c] for p in pending]) for c in cols}
                yield self._to_batch({c: v[:batch_size] for c, v in merged.items()}, idx[:batch_size])
                pending = [(idx[batch_size:], {c: v[batch_size:] for c, v in merged.items()})]
                held -= batch_size
        if held:
            idx = np.concatenate([p[0] for p in pending])
            yield self._to_batch({c: _concat([p[1][c] for p in pending]) for c in cols}, idx)


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    if len(parts) == 1:
        return parts[0]
    if any(p.dtype == object for p in parts) or len({p.shape[1:] for p in parts}) > 1:
        out = np.empty(sum(len(p) for p in parts), dtype=object)
        k = 0
        for p in parts:
            for row in p:
                out[k] = row
                k += 1
        return out
    return np.concatenate(parts)

"""Data sources for verification: synthetic (from input specs), .npz arrays, image folders, parquet/CSV sequences,
golden files. Each yields batches of model feeds (plus labels when known) and streams: a source never holds more
than one batch of inputs, except ``.npz`` whose arrays numpy loads whole (use parquet for very large sets).

DO NOT import pandas/pyarrow/PIL at module level (the ``data`` and ``vision`` extras).

Parquet/CSV tables are in ``_table.py``; ``open_source`` picks the source for a path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from onnxship._errors import ConfigError
from onnxship.runtime._golden import Golden
from onnxship.runtime._preprocess import IMAGE_SUFFIXES, PreprocessConfig, preprocess_images
from onnxship.spec._inputs import DTYPES, TensorSpec, sample_feeds

__all__ = [
    "LABEL_KEYS",
    "Batch",
    "DataSource",
    "GoldenSource",
    "ImageFolderSource",
    "NpzSource",
    "SyntheticSource",
    "open_source",
]

LABEL_KEYS = ("label", "labels", "next_event", "next_events", "target", "targets")


@dataclass
class Batch:
    """Feeds for both engines, with where the samples came from."""

    feeds: dict[str, np.ndarray]
    indices: np.ndarray  # sample indices in the source
    labels: np.ndarray | None = None
    ids: list[str] | None = None  # human-readable sample ids (file names, row numbers)
    reference: dict[str, np.ndarray] | None = None  # stored reference outputs (golden)

    def __len__(self) -> int:
        return int(self.indices.shape[0])


class DataSource(Protocol):
    """A dataset the engine can sample from and stream."""

    kind: str
    description: str

    def __len__(self) -> int: ...

    def labels(self) -> np.ndarray | None:
        """Every sample's label (cheap: read without the inputs), or None when unlabelled."""

    def batches(self, indices: np.ndarray | None, batch_size: int) -> Iterator[Batch]:
        """Stream the given samples (None: all of them, in order) in batches."""


def _chunks(indices: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


def _check_array(name: str, arr: np.ndarray, spec: TensorSpec, where: str) -> np.ndarray:
    """Match a data array to an input spec: same dtype kind (a safe cast within the kind), same static dims."""
    want = np.dtype(DTYPES[spec.dtype])
    kind_ok = (
        (arr.dtype.kind == want.kind)
        or (arr.dtype.kind in "iu" and want.kind in "iu")
        or (arr.dtype.kind == "b" and want.kind == "b")
    )
    if not kind_ok:
        raise ConfigError(
            f"{where}: input {name!r} is {arr.dtype} but the model expects {spec.dtype}",
            hint=f"convert it (e.g. arr.astype('{want}')) or check that the data belongs to this model",
        )
    if arr.ndim != len(spec.dims):
        raise ConfigError(
            f"{where}: input {name!r} has shape {list(arr.shape)} (rank {arr.ndim}); the model "
            f"expects rank {len(spec.dims)} ({spec})",
            hint="the first axis holds the samples",
        )
    for axis, d in enumerate(spec.dims):
        if axis and d.name is None and arr.shape[axis] != d.value:
            raise ConfigError(
                f"{where}: input {name!r} has shape {list(arr.shape)}; axis {axis} must be {d.value} "
                f"({spec})",
                hint="the data was made for another model or preprocessing",
            )
    return arr.astype(want, copy=False)


class SyntheticSource:
    """Inputs generated from the specs by value kind (ids within their range, padding-style prefix masks, valid
    offsets/lengths, floats); at the user's sample shape, the user's sample tensors as given."""

    kind = "synthetic"

    def __init__(
        self, specs: list[TensorSpec], count: int, *, seed: int = 0, dims: dict[str, int] | None = None
    ):
        if count < 1:
            raise ConfigError(f"synthetic sample count {count} must be >= 1")
        self.specs, self.count, self.seed, self.dims = list(specs), count, seed, dict(dims or {})
        first = [s.dims[0] for s in self.specs if s.dims]
        self.batch_dim = first[0].name if first and all(d.name == first[0].name for d in first) else None
        self.description = f"{count} random samples from {', '.join(str(s) for s in self.specs)}"

    def __len__(self) -> int:
        return self.count

    def labels(self) -> np.ndarray | None:
        return None

    def batches(self, indices: np.ndarray | None, batch_size: int) -> Iterator[Batch]:
        idx = np.arange(self.count) if indices is None else np.asarray(indices)
        if self.batch_dim is None:
            batch_size = 1  # a static first axis: one generated sample per batch
        for k, chunk in enumerate(_chunks(idx, batch_size)):
            values = dict(self.dims)
            if self.batch_dim:
                values[self.batch_dim] = len(chunk)
            seed = self.seed * 1_000_003 + int(chunk[0]) + k
            yield Batch(
                sample_feeds(self.specs, values, seed=seed),
                chunk,
                ids=[f"synthetic#{i}" for i in chunk.tolist()],
            )


class NpzSource:
    """``.npz`` with one array per input (axis 0 = samples) and optionally ``label``/``next_event``."""

    kind = "npz"

    def __init__(self, path: Path, specs: list[TensorSpec]):
        self.path = path
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError) as exc:
            raise ConfigError(
                f"{str(path)!r} is not a readable .npz file ({type(exc).__name__})",
                hint="write it with numpy.savez(path, **{input_name: array})",
            ) from None
        names = [s.name for s in specs]
        label_key = next((k for k in LABEL_KEYS if k in arrays), None)
        unknown = sorted(set(arrays) - set(names) - {label_key})
        missing = [n for n in names if n not in arrays]
        if missing or unknown:
            raise ConfigError(
                f"{path.name}: arrays {sorted(arrays)} do not match the model inputs {names}",
                hint=f"missing: {missing}, unknown: {unknown}; labels go in one of {list(LABEL_KEYS)}",
            )
        self.arrays = {s.name: _check_array(s.name, arrays[s.name], s, path.name) for s in specs}
        lengths = {k: v.shape[0] for k, v in self.arrays.items()}
        self._labels = arrays[label_key].reshape(-1) if label_key else None
        if self._labels is not None:
            lengths[label_key] = self._labels.shape[0]  # type: ignore[index]
        if len(set(lengths.values())) != 1:
            raise ConfigError(
                f"{path.name}: arrays hold different sample counts {lengths}",
                hint="axis 0 of every array is the sample axis",
            )
        self.count = next(iter(lengths.values()))
        self.description = f"{path} ({self.count} samples{', labelled' if label_key else ''})"

    def __len__(self) -> int:
        return self.count

    def labels(self) -> np.ndarray | None:
        return self._labels

    def batches(self, indices: np.ndarray | None, batch_size: int) -> Iterator[Batch]:
        idx = np.arange(self.count) if indices is None else np.asarray(indices)
        for chunk in _chunks(idx, batch_size):
            yield Batch(
                {k: np.ascontiguousarray(v[chunk]) for k, v in self.arrays.items()},
                chunk,
                labels=None if self._labels is None else self._labels[chunk],
                ids=[f"{self.path.name}[{i}]" for i in chunk.tolist()],
            )


class ImageFolderSource:
    """``root/<class>/<image>``: classes are the sorted sub-folder names; images go through the shared preprocess."""

    kind = "image_folder"

    def __init__(self, root: Path, spec: TensorSpec, preprocess: PreprocessConfig | None = None):
        self.root = root
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        items: list[tuple[Path, int]] = []
        for ci, c in enumerate(classes):
            items += [(f, ci) for f in sorted((root / c).rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
        if not classes or not items:
            found = "no class sub-folders" if not classes else f"class folders {classes[:5]} but no images"
            raise ConfigError(
                f"data folder {str(root)!r} has {found}",
                hint=f"lay it out as {root}/<class name>/<image> ({', '.join(IMAGE_SUFFIXES[:4])}, ...)",
            )
        if len(spec.dims) != 4:
            raise ConfigError(f"an image folder needs a 4-d image input; the model's input is {spec}")
        if preprocess is None:
            h = spec.dims[2].value if spec.dims[1].value == 3 else spec.dims[1].value
            layout = "NCHW" if spec.dims[1].value == 3 else "NHWC"
            preprocess = PreprocessConfig(size=h, layout=layout, dtype=DTYPES[spec.dtype])
        self.spec, self.preprocess, self.classes, self.items = spec, preprocess, classes, items
        self._labels = np.asarray([c for _, c in items], dtype=np.int64)
        self.description = f"{root} ({len(items)} images in {len(classes)} classes)"

    def __len__(self) -> int:
        return len(self.items)

    def labels(self) -> np.ndarray | None:
        return self._labels

    def batches(self, indices: np.ndarray | None, batch_size: int) -> Iterator[Batch]:
        idx = np.arange(len(self.items)) if indices is None else np.asarray(indices)
        for chunk in _chunks(idx, batch_size):
            paths = [self.items[i][0] for i in chunk.tolist()]
            x = preprocess_images(paths, self.preprocess)
            yield Batch(
                {self.spec.name: x},
                chunk,
                labels=self._labels[chunk],
                ids=[str(p.relative_to(self.root)) for p in paths],
            )


class GoldenSource:
    """The golden inputs, with the stored reference outputs attached (one batch)."""

    kind = "golden"

    def __init__(self, golden: Golden):
        self.golden = golden
        first = next(iter(golden.inputs.values()))
        self.count = int(first.shape[0]) if first.ndim else 1
        self.description = f"golden file ({self.count} samples)"

    def __len__(self) -> int:
        return self.count

    def labels(self) -> np.ndarray | None:
        return None

    def batches(self, indices: np.ndarray | None, batch_size: int) -> Iterator[Batch]:
        # Golden outputs are answers for exactly the stored batch: always one batch, all samples.
        yield Batch(
            dict(self.golden.inputs),
            np.arange(self.count),
            reference=dict(self.golden.outputs),
            ids=[f"golden#{i}" for i in range(self.count)],
        )


def open_source(
    data: str | Path, specs: list[TensorSpec], *, preprocess: PreprocessConfig | None = None
) -> DataSource:
    """Pick the source for ``--data``: a folder of class folders, ``.npz``, ``.parquet``/``.csv``."""
    path = Path(data)
    if not path.exists():
        raise ConfigError(
            f"data path {str(path)!r} does not exist",
            hint="give an image folder (class = sub-folder), a .npz, a .parquet or a .csv file",
        )
    if path.is_dir():
        image_specs = [s for s in specs if s.is_float and len(s.dims) == 4]
        if len(specs) != 1 or not image_specs:
            raise ConfigError(
                f"an image folder feeds one 4-d float input; the model has {[str(s) for s in specs]}",
                hint="use a .npz or parquet file for models with other inputs",
            )
        return ImageFolderSource(path, image_specs[0], preprocess)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return NpzSource(path, specs)
    if suffix in (".parquet", ".pq", ".csv"):
        from onnxship.runtime._table import TableSource

        return TableSource(path, specs)
    raise ConfigError(
        f"unsupported data file {path.name!r}", hint="give an image folder, a .npz, a .parquet or a .csv file"
    )

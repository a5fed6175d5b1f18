"""``onnxship infer``: predictions from PyTorch or ONNX Runtime on real data, through the verification data sources.

Inputs are whatever ``onnxship verify --data`` reads (image folder, .npz, parquet/CSV), a glob of image files
(``"data/val/**/*.jpg"``, preprocessed by the one shared :func:`onnxship.runtime._preprocess.preprocess_images`), or
nothing: then samples are generated from the input specs.
DO NOT import torch or onnxruntime at module level.
"""

from __future__ import annotations

import glob
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxship._errors import ConfigError
from onnxship.runtime._engines import check_engine
from onnxship.spec._inputs import DTYPES, TensorSpec

__all__ = ["InferConfig", "InferResult", "infer", "iter_batches"]

_GLOB_CHARS = ("*", "?", "[")


@dataclass(frozen=True)
class InferConfig:
    """Where the inputs come from and what to print."""

    engine: str = "onnx"  # onnx | torch
    inputs: str | None = None  # data path, image glob, or None (generated from the specs)
    batch: int = 16
    samples: int = 8  # generated samples when inputs is None
    limit: int | None = None  # at most this many samples from the data
    top_k: int = 5  # for score outputs [N, C]: the k best classes per sample
    seed: int = 0
    session: Any = None  # SessionConfig for ONNX Runtime

    def __post_init__(self) -> None:
        if (
            self.batch < 1
            or self.samples < 1
            or self.top_k < 1
            or (self.limit is not None and self.limit < 1)
        ):
            raise ConfigError(
                f"batch, samples, top_k and limit must be >= 1 (got batch={self.batch}, "
                f"samples={self.samples}, top_k={self.top_k}, limit={self.limit})"
            )


@dataclass
class InferResult:
    """One prediction record per sample, plus what ran."""

    engine: str
    model: str
    source: str
    predictions: list[dict[str, Any]]
    output_shapes: dict[str, list[int]] = field(default_factory=dict)  # per batch-1 sample
    providers: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "model": self.model,
            "source": self.source,
            "providers": self.providers,
            "samples": len(self.predictions),
            "seconds": round(self.seconds, 4),
            "output_shapes": self.output_shapes,
            "predictions": self.predictions,
        }


def _image_glob(
    pattern: str, specs: Sequence[TensorSpec], batch: int, limit: int | None
) -> tuple[str, Iterator[tuple[dict[str, np.ndarray], list[str], Any]]]:
    from onnxship.runtime._preprocess import IMAGE_SUFFIXES, PreprocessConfig, preprocess_images

    files = sorted(p for p in glob.glob(pattern, recursive=True) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(
            f"no image files match {pattern!r}", hint=f"image suffixes: {', '.join(IMAGE_SUFFIXES)}"
        )
    image = [s for s in specs if s.is_float and len(s.dims) == 4]
    if len(specs) != 1 or not image:
        raise ConfigError(f"image files feed one 4-d float input; the model has {[str(s) for s in specs]}")
    spec = image[0]
    nchw = spec.dims[1].value == 3
    pre = PreprocessConfig(
        size=spec.dims[2].value if nchw else spec.dims[1].value,
        layout="NCHW" if nchw else "NHWC",
        dtype=DTYPES[spec.dtype],
    )
    files = files[:limit] if limit else files

    def gen() -> Iterator[tuple[dict[str, np.ndarray], list[str], Any]]:
        for i in range(0, len(files), batch):
            chunk = files[i : i + batch]
            yield {spec.name: preprocess_images(chunk, pre)}, chunk, None

    return f"{pattern} ({len(files)} images)", gen()


def iter_batches(
    inputs: str | None,
    specs: Sequence[TensorSpec],
    *,
    batch: int,
    samples: int = 8,
    limit: int | None = None,
    seed: int = 0,
) -> tuple[str, Iterator[tuple[dict[str, np.ndarray], list[str], Any]]]:
    """(description, batches of (feeds, sample ids, labels)) from a data path, an image glob or the specs."""
    from onnxship.runtime._data import SyntheticSource, open_source

    if inputs is not None and any(c in inputs for c in _GLOB_CHARS) and not Path(inputs).exists():
        return _image_glob(inputs, specs, batch, limit)
    src = (
        SyntheticSource(list(specs), samples, seed=seed)
        if inputs is None
        else open_source(inputs, list(specs))
    )
    n = len(src) if limit is None else min(limit, len(src))

    def gen() -> Iterator[tuple[dict[str, np.ndarray], list[str], Any]]:
        for b in src.batches(np.arange(n), batch):
            yield b.feeds, list(b.ids or [str(i) for i in b.indices.tolist()]), b.labels

    return src.description, gen()


def _records(outputs: dict[str, np.ndarray], ids: list[str], labels: Any, top_k: int) -> list[dict[str, Any]]:
    recs: list[dict[str, Any]] = [{"id": i} for i in ids]
    for name, arr in outputs.items():
        a = np.asarray(arr)
        if a.ndim == 0 or a.shape[0] != len(ids):  # not per-sample: attach as is to every record
            for r in recs:
                r[name] = a.tolist()
            continue
        scores = a.ndim == 2 and a.shape[1] > 1 and np.issubdtype(a.dtype, np.floating)
        for j, r in enumerate(recs):
            if scores:
                order = np.argsort(-a[j], kind="stable")[:top_k]
                r[name] = {"top": [[int(c), float(a[j, c])] for c in order]}
            else:
                r[name] = a[j].tolist()
    if labels is not None:
        for r, lab in zip(recs, np.asarray(labels).tolist(), strict=True):
            r["label"] = lab
    return recs


def infer(
    onnx_path: str | Path | None,
    config: InferConfig | None = None,
    *,
    model: Any = None,
    specs: Sequence[TensorSpec] | None = None,
) -> InferResult:
    """Run ``config.engine`` over the inputs and return one prediction record per sample.

    ``onnx_path`` gives the ONNX model (engine onnx) and the input specs (both engines); with engine torch and no
    ONNX file, pass ``specs``.

    Example:
        >>> res = infer("out/deeplog.onnx", InferConfig(inputs="windows.npz"))  # doctest: +SKIP
        >>> res.predictions[0]["predictions"]["top"][0]  # doctest: +SKIP
        [4, 7.1]
    """
    from onnxship.runtime._engines import onnx_runner, torch_runner
    from onnxship.runtime._io import model_specs

    config = config or InferConfig()
    check_engine(config.engine, model is not None)
    if onnx_path is None and (config.engine == "onnx" or not specs):
        raise ConfigError(
            "no ONNX model given",
            hint="pass the .onnx file (it also carries the input specs), or "
            "--engine torch with --input specs",
        )
    specs = list(specs) if specs else model_specs(onnx_path)  # type: ignore[arg-type]
    output_names = None
    ort_runner = (
        onnx_runner(onnx_path, config.session) if onnx_path is not None and config.engine == "onnx" else None
    )
    if onnx_path is not None:
        from onnxship.inspect import load_onnx_checked

        output_names = [o.name for o in load_onnx_checked(onnx_path).graph.output]
    runner = ort_runner if ort_runner is not None else torch_runner(model, specs, output_names)
    description, batches = iter_batches(
        config.inputs, specs, batch=config.batch, samples=config.samples, limit=config.limit, seed=config.seed
    )
    preds: list[dict[str, Any]] = []
    shapes: dict[str, list[int]] = {}
    start = time.perf_counter()
    for feeds, ids, labels in batches:
        out = runner.infer(feeds)
        shapes = shapes or {k: list(np.shape(v))[1:] for k, v in out.items()}
        preds.extend(_records(out, ids, labels, config.top_k))
    seconds = time.perf_counter() - start
    providers = list(getattr(runner, "providers", [])) or ["torch-cpu"]
    return InferResult(
        engine=config.engine,
        model=str(onnx_path if config.engine == "onnx" else model),
        source=description,
        predictions=preds,
        output_shapes=shapes,
        providers=providers,
        seconds=seconds,
    )

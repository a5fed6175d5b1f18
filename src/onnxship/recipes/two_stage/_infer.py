"""``onnxship infer --pipeline``: a two-stage manifest run through ``onnxship.runtime``'s engines.

Lives with the recipe (not in ``onnxship.runtime``): the runtime layer knows nothing about recipes.
DO NOT import torch or onnxruntime at module level.
"""

from __future__ import annotations

from pathlib import Path

from onnxship.recipes.two_stage._pipeline import PipelineResult, pipeline_images, run_pipeline
from onnxship.runtime._engines import check_engine
from onnxship.runtime._infer import InferConfig

__all__ = ["infer_pipeline"]


def infer_pipeline(manifest: str | Path, config: InferConfig | None = None) -> PipelineResult:
    """Run a two-stage pipeline manifest (detect -> shared NMS -> crop -> classify -> label map) with
    ``config.engine``; inputs: a .npz, an image glob/folder, or generated scenes."""
    config = config or InferConfig()
    check_engine(config.engine, True)
    source, images = pipeline_images(manifest, config.inputs, config.samples, config.limit, config.seed)
    result = run_pipeline(manifest, images, engine=config.engine, batch=config.batch)
    result.source = source
    return result

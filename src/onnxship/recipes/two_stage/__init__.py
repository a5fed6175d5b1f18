"""Two-stage detect -> crop -> classify pipeline, built on onnxship's public verbs.

::

    build   train a tiny YOLO-style detector and a crop classifier (a few CPU seconds, synthetic scenes), export and
            verify each (detection: mAP deltas after the shared NMS; classification: MSE / top-1), bundle them with
            pipeline.json (models, NMS postprocess block, crop size, label map -> edi_code) and the end-to-end
            torch-vs-ONNX agreement
    run     ``onnxship infer --pipeline pipeline.json --engine torch|onnx``

Imports nothing heavy: torch and onnxruntime are imported inside the verbs.
"""

from __future__ import annotations

from onnxship.recipes.two_stage._build import TwoStageBuildConfig, TwoStageBuildResult, build_two_stage
from onnxship.recipes.two_stage._data import COLOURS, Scene, crop_resize, make_scenes
from onnxship.recipes.two_stage._infer import infer_pipeline
from onnxship.recipes.two_stage._pipeline import (
    MANIFEST_FORMAT,
    PipelineResult,
    compare_pipelines,
    load_manifest,
    pipeline_images,
    run_pipeline,
)

__all__ = [
    "COLOURS",
    "MANIFEST_FORMAT",
    "PipelineResult",
    "Scene",
    "TwoStageBuildConfig",
    "TwoStageBuildResult",
    "build_two_stage",
    "compare_pipelines",
    "crop_resize",
    "infer_pipeline",
    "load_manifest",
    "make_scenes",
    "pipeline_images",
    "run_pipeline",
]

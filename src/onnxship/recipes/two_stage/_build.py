"""``build_two_stage``: train both stages for a few CPU seconds on synthetic scenes, export and verify each through
the public verbs (detection: mAP deltas after the shared NMS; classification: probability MSE + top-1), then write the
bundle: both models, their checkpoints and reports, and ``pipeline.json`` with the end-to-end torch-vs-ONNX
agreement. The bundle lands in a staging folder and is renamed into place only when complete.

DO NOT import torch or onnxruntime at module level.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxship._errors import ConfigError, VerificationError
from onnxship._util import atomic_write_json, atomic_write_text, git_sha, utc_now
from onnxship.recipes.two_stage._data import COLOURS, make_scenes
from onnxship.recipes.two_stage._pipeline import (
    MANIFEST_FORMAT,
    compare_pipelines,
    run_pipeline,
)
from onnxship.verify._tasks import (
    Detections,
    NmsConfig,
)

__all__ = ["TwoStageBuildConfig", "TwoStageBuildResult", "build_two_stage"]

_FACTORIES = "onnxship.recipes.two_stage._models"
DEFAULT_LABELS = {
    str(i): {"name": name, "edi_code": code}
    for i, (name, code) in enumerate(
        (("red", "EDI-640000001"), ("green", "EDI-640000002"), ("blue", "EDI-640000003"))
    )
}


@dataclass
class TwoStageBuildConfig:
    """What to train, export and bundle."""

    out: Path = Path("releases/two_stage")  # bundles: <out>/two_stage-<UTC>-<gitsha7|nogit>/; <out>/latest
    image_size: int = 64  # detector input H = W (static; the batch dim is dynamic)
    crop_size: int = 32  # classifier input H = W
    detector_steps: int = 150  # training steps (a few CPU seconds)
    classifier_steps: int = 120
    eval_images: int = 24  # synthetic scenes for verification and the end-to-end agreement
    nms: NmsConfig = field(
        default_factory=lambda: NmsConfig(
            conf_threshold=0.3, iou_threshold=0.5, max_detections=100, class_agnostic=False
        )
    )
    label_map: dict[str, dict[str, str]] = field(default_factory=lambda: dict(DEFAULT_LABELS))
    strategy: str = "auto"  # exporter chain for both models: auto | dynamo | torchscript
    seed: int = 0
    # model families: "builtin" (default), or the real families of the `families` extra (random weights):
    classifier: str = (
        "builtin"  # builtin | timm:<model name>, e.g. timm:convnext_atto, timm:tf_efficientnetv2_b0
    )
    detector: str = (
        "builtin"  # builtin | yolo:<Ultralytics model yaml>, e.g. yolo:yolov8n.yaml, yolo:yolo11n.yaml
    )

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        for what, value, family in (
            ("classifier", self.classifier, "timm"),
            ("detector", self.detector, "yolo"),
        ):
            kind, _, arg = value.partition(":")
            if not (value == "builtin" or (kind == family and arg)):
                raise ConfigError(
                    f"{what} {value!r} is not a known model family",
                    hint=f"use builtin or {family}:<name> (e.g. "
                    + ("timm:convnext_atto" if family == "timm" else "yolo:yolov8n.yaml")
                    + ")",
                )
        if self.image_size % 8 or self.image_size < 32:
            raise ConfigError(f"image_size={self.image_size} must be a multiple of 8, at least 32")
        if self.crop_size < 8:
            raise ConfigError(f"crop_size={self.crop_size} must be >= 8")
        if sorted(int(k) for k in self.label_map) != list(range(len(COLOURS))):
            raise ConfigError(
                f"label_map keys {sorted(self.label_map)} must be the class ids 0..{len(COLOURS) - 1}",
                hint='e.g. {"0": {"name": "red", "edi_code": "..."}, ...}',
            )


@dataclass
class TwoStageBuildResult:
    """The bundle and how each stage and the whole pipeline verified."""

    path: Path
    manifest: dict[str, Any]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "manifest": str(self.path / "pipeline.json"),
            "seconds": round(self.seconds, 3),
            **{k: self.manifest[k] for k in ("detector", "classifier", "agreement")},
        }


def _export_and_verify(
    module: Any,
    spec: str,
    name: str,
    outputs: tuple[str, ...],
    out: Path,
    data: Path,
    task: str,
    cfg: TwoStageBuildConfig,
    box_format: str = "xyxy",
) -> dict[str, Any]:
    """``onnxship.export`` then ``onnxship.verify`` on real samples with the stage's task gate."""
    from onnxship.export import ExportConfig, export
    from onnxship.verify import VerifyConfig, verify
    from onnxship.verify._compare import Tolerance

    # YOLO's raw boxes are pixels decoded through a 16-bin softmax times the stride (up to 32): float32 rounding in
    # the head grows by that factor (measured: up to ~0.02 px on random weights), so its elementwise tolerance is
    # 0.05 px absolute, far below what IoU or NMS can notice; the detection task gate (mAP deltas after the shared
    # NMS) is the decision that matters for it.
    tolerance = Tolerance(atol=0.05, rtol=3e-3) if box_format == "yolo" else None
    result = export(
        module,
        inputs=[spec],
        out=out,
        name=name,
        config=ExportConfig(strategy=cfg.strategy, output_names=outputs, seed=cfg.seed, tolerance=tolerance),
    )
    report = verify(
        result.path,
        model=module,
        config=VerifyConfig(
            mode="full",
            task=task,
            data=data,
            nms=cfg.nms,
            batch_size=8,
            box_format=box_format,
            tolerance=tolerance,
        ),
    )
    report.write_json(out / f"{name}.report.json")
    if not report.passed:
        raise VerificationError(f"{name}: {report.failure_reason}", report=report)
    return {
        "strategy": result.strategy,
        "opset": result.opset,
        "tolerance": tolerance.to_dict() if tolerance else "default",
        "verdict": report.summary(),
        "task_metrics": report.task_metrics,
    }


def _point_latest(root: Path, version: str) -> None:
    """``latest`` (relative symlink) and ``LATEST`` (text) -> ``version``, each replaced atomically."""
    tmp = root / f".latest-{os.getpid()}"
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(version, tmp)
    os.replace(tmp, root / "latest")
    atomic_write_text(root / "LATEST", version + "\n")


def build_two_stage(config: TwoStageBuildConfig | None = None) -> TwoStageBuildResult:
    """Train, export, verify and bundle both stages; the bundle appears only when everything passed.

    Raises:
        ExportError / VerificationError: a stage did not export or verify, or the pipeline's torch and ONNX
            paths disagree end to end (nothing is left in ``out``).
    """
    import torch

    from onnxship.recipes.two_stage import _models
    from onnxship.recipes.two_stage._train import (
        calibrate_batchnorm,
        crops_of,
        train_classifier,
        train_detector,
    )

    cfg = config or TwoStageBuildConfig()
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    det_loss: float | None = None
    if cfg.detector == "builtin":
        det_factory, det_kwargs = "build_detector", {"num_classes": 1, "image_size": cfg.image_size}
        det_outputs, box_format = ("boxes", "scores"), "xyxy"
        detector = _models.build_detector(**det_kwargs)
        det_loss = train_detector(detector, steps=cfg.detector_steps, seed=cfg.seed)
    else:  # an Ultralytics YOLO model from its yaml, random weights (its own training loop is not part of this)
        det_factory = "build_yolo_detector"
        det_kwargs = {
            "model_yaml": cfg.detector.split(":", 1)[1],
            "num_classes": 1,
            "image_size": cfg.image_size,
        }
        det_outputs, box_format = ("output0",), "yolo"
        detector = _models.build_yolo_detector(**det_kwargs)
        calibrate_batchnorm(detector, make_scenes(32, size=cfg.image_size, seed=cfg.seed + 7).images)
    if cfg.classifier == "builtin":
        cls_factory, cls_kwargs = "build_classifier", {"num_classes": len(cfg.label_map)}
        classifier = _models.build_classifier(**cls_kwargs)
    else:
        cls_factory = "build_timm_classifier"
        cls_kwargs = {"model_name": cfg.classifier.split(":", 1)[1], "num_classes": len(cfg.label_map)}
        classifier = _models.build_timm_classifier(**cls_kwargs)
    cls_loss = train_classifier(
        classifier, crop_size=cfg.crop_size, steps=cfg.classifier_steps, seed=cfg.seed
    )

    stamp = utc_now().strftime("%Y%m%d-%H%M%S")
    version = f"two_stage-{stamp}-{git_sha() or 'nogit'}"
    cfg.out.mkdir(parents=True, exist_ok=True)
    stage = cfg.out / f".staging-{version}-{os.getpid()}"
    stage.mkdir()
    try:
        scenes = make_scenes(cfg.eval_images, size=cfg.image_size, seed=cfg.seed + 1000)
        np.savez(stage / "detector.samples.npz", image=scenes.images)
        xs, ys = crops_of(scenes, cfg.crop_size)
        np.savez(stage / "classifier.samples.npz", crop=xs, label=ys)
        torch.save(detector.state_dict(), stage / "detector.pt")
        torch.save(classifier.state_dict(), stage / "classifier.pt")
        det_v = _export_and_verify(
            detector,
            f"image:batch=2 x 3 x {cfg.image_size} x {cfg.image_size}:float32:0..1",
            "detector",
            det_outputs,
            stage,
            stage / "detector.samples.npz",
            "detection",
            cfg,
            box_format,
        )
        cls_v = _export_and_verify(
            classifier,
            f"crop:batch=2 x 3 x {cfg.crop_size} x {cfg.crop_size}:float32:0..1",
            "classifier",
            ("logits",),
            stage,
            stage / "classifier.samples.npz",
            "classification",
            cfg,
        )
        manifest: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "name": "two_stage",
            "version": version,
            "created_utc": utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "git_sha": git_sha() or "nogit",
            "preprocess": {
                "image_size": cfg.image_size,
                "layout": "NCHW",
                "scale": "[0, 1] RGB, no normalisation",
            },
            "detector": {
                "onnx": "detector.onnx",
                "checkpoint": "detector.pt",
                "factory": f"{_FACTORIES}:{det_factory}",
                "family": cfg.detector,
                "kwargs": det_kwargs,
                "input": "image",
                "outputs": list(det_outputs),
                "box_format": box_format,
                "dynamic_axes": {"image": {"0": "batch"}},
                "train_loss": det_loss,
                **det_v,
            },
            "classifier": {
                "onnx": "classifier.onnx",
                "checkpoint": "classifier.pt",
                "factory": f"{_FACTORIES}:{cls_factory}",
                "family": cfg.classifier,
                "kwargs": cls_kwargs,
                "input": "crop",
                "output": "logits",
                "dynamic_axes": {"crop": {"0": "batch"}},
                "train_loss": cls_loss,
                **cls_v,
            },
            "postprocess": {"nms": cfg.nms.to_dict(), "applied_in": "python_common"},
            "crop_size": cfg.crop_size,
            "crop": "xyxy box clipped to the image, bilinear resize (numpy, shared by both engines)",
            "label_map": cfg.label_map,
        }
        atomic_write_json(stage / "pipeline.json", manifest)
        gts = [Detections(b, np.ones(len(b)), c) for b, c in zip(scenes.boxes, scenes.classes, strict=True)]
        ref = run_pipeline(stage, scenes.images, engine="torch")
        got = run_pipeline(stage, scenes.images, engine="onnx")
        manifest["agreement"] = compare_pipelines(ref, got, gts)
        atomic_write_json(stage / "pipeline.json", manifest)
        if not manifest["agreement"]["passed"]:
            raise VerificationError(
                f"the pipeline's torch and ONNX paths disagree end to end: {manifest['agreement']}"
            )
        final = cfg.out / version
        if final.exists():
            raise ConfigError(f"bundle {str(final)!r} already exists", hint="wait a second and build again")
        stage.rename(final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _point_latest(cfg.out, version)
    return TwoStageBuildResult(path=final, manifest=manifest, seconds=time.perf_counter() - start)

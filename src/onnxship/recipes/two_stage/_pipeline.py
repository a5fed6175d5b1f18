"""Two-stage pipeline manifests: detect -> shared NMS -> crop -> classify -> label map (edi_code).

``pipeline.json`` (format ``MANIFEST_FORMAT``) names both models, the NMS settings in its ``postprocess`` block,
the crop size and the label map; ``build_two_stage`` (``_build.py``) writes it, ``load_manifest`` reads it back.
``run_pipeline`` runs a manifest with either engine; both engines share every numpy step (NMS, crop, label map), so
the only difference between them is the two models. ``compare_pipelines`` measures how far two runs agree.

DO NOT import torch or onnxruntime at module level.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxship._errors import ConfigError
from onnxship.recipes.two_stage._data import crop_resize, make_scenes
from onnxship.verify._tasks import (
    Detections,
    NmsConfig,
    box_iou,
    decode_detections,
    mean_average_precision,
    nms,
    softmax,
)

__all__ = [
    "MANIFEST_FORMAT",
    "PipelineResult",
    "compare_pipelines",
    "load_manifest",
    "pipeline_images",
    "run_pipeline",
]

MANIFEST_FORMAT = "onnxship.pipeline/1"


@dataclass
class PipelineResult:
    """Per-image detections of one engine: ``{"box", "score", "class_id", "name", "edi_code", "prob"}`` each."""

    engine: str
    manifest: str
    images: list[list[dict[str, Any]]]
    seconds: float = 0.0
    source: str = ""  # where the images came from

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "manifest": self.manifest,
            "source": self.source,
            "seconds": round(self.seconds, 4),
            "images": len(self.images),
            "detections": sum(len(d) for d in self.images),
            "predictions": [{"id": i, "detections": d} for i, d in enumerate(self.images)],
        }


def load_manifest(path: str | Path) -> tuple[dict[str, Any], Path]:
    """Read ``pipeline.json`` (or the bundle folder holding it); returns (manifest, bundle folder)."""
    import json

    p = Path(path)
    p = p / "pipeline.json" if p.is_dir() else p
    if not p.is_file():
        raise ConfigError(
            f"pipeline manifest {str(p)!r} does not exist",
            hint="pass the pipeline.json written by `onnxship recipes two-stage build`",
        )
    try:
        manifest = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"pipeline manifest {str(p)!r} is not valid JSON ({exc})") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ConfigError(
            f"{str(p)!r} is not a pipeline manifest (format {manifest.get('format')!r})",
            hint=f"expected format {MANIFEST_FORMAT!r}",
        )
    return manifest, p.parent


def _runner(stage: dict[str, Any], root: Path, engine: str) -> Any:
    from onnxship.inspect import load_onnx_checked
    from onnxship.runtime._engines import onnx_runner, torch_runner
    from onnxship.runtime._io import model_specs
    from onnxship.spec import parse_model_spec

    onnx_path = root / stage["onnx"]
    if engine == "onnx":
        return onnx_runner(onnx_path)
    if engine != "torch":
        raise ConfigError(f"engine {engine!r} is not known", hint="use one of onnx, torch")
    spec = parse_model_spec(stage["factory"], kwargs=stage["kwargs"], checkpoint=root / stage["checkpoint"])
    outputs = [o.name for o in load_onnx_checked(onnx_path).graph.output]
    return torch_runner(spec, model_specs(onnx_path), outputs)


def run_pipeline(
    manifest_path: str | Path, images: np.ndarray, engine: str = "onnx", batch: int = 16
) -> PipelineResult:
    """Detect -> shared NMS -> crop -> classify -> label map over ``images`` ``[N, 3, H, W]`` float32 in [0, 1].

    Example:
        >>> res = run_pipeline("releases/two_stage/latest/pipeline.json", images, engine="onnx")  # doctest: +SKIP
        >>> res.images[0][0]["edi_code"]  # doctest: +SKIP
        'EDI-640000001'
    """
    manifest, root = load_manifest(manifest_path)
    det, cls = manifest["detector"], manifest["classifier"]
    size, crop = int(manifest["preprocess"]["image_size"]), int(manifest["crop_size"])
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1:] != (3, size, size):
        raise ConfigError(
            f"images have shape {list(images.shape)}; the detector takes [N, 3, {size}, {size}]",
            hint="float32 in [0, 1], channels first",
        )
    nms_cfg = NmsConfig(**manifest["postprocess"]["nms"])
    labels = manifest["label_map"]
    start = time.perf_counter()
    det_runner, cls_runner = _runner(det, root, engine), _runner(cls, root, engine)
    results: list[list[dict[str, Any]]] = []
    for i in range(0, images.shape[0], batch):
        chunk = images[i : i + batch]
        out = det_runner.infer({det["input"]: chunk})
        decoded = decode_detections(
            {k: out[k] for k in det["outputs"]}, box_format=det.get("box_format", "xyxy")
        )  # the same raw-layout reader as the detection task metric (boxes+scores, or YOLO's [N, 4 + C, K])
        for img, (boxes, scores) in zip(chunk, decoded, strict=True):
            d = nms(boxes, scores, nms_cfg)
            if not d.boxes.shape[0]:
                results.append([])
                continue
            crops = np.stack([crop_resize(img, b, crop) for b in d.boxes])
            probs = softmax(cls_runner.infer({cls["input"]: crops})[cls["output"]])
            top = probs.argmax(axis=1)
            results.append(
                [
                    {
                        "box": [round(float(v), 4) for v in b],
                        "score": float(s),
                        "class_id": int(c),
                        "prob": float(p[c]),
                        **labels[str(int(c))],
                    }
                    for b, s, c, p in zip(d.boxes, d.scores, top, probs, strict=True)
                ]
            )
    return PipelineResult(
        engine=engine,
        manifest=str(root / "pipeline.json"),
        images=results,
        seconds=time.perf_counter() - start,
    )


def _as_detections(per_image: list[dict[str, Any]]) -> Detections:
    return Detections(
        np.asarray([d["box"] for d in per_image], np.float64).reshape(-1, 4),
        np.asarray([d["score"] for d in per_image], np.float64),
        np.asarray([d["class_id"] for d in per_image], np.int64),
    )


def compare_pipelines(
    ref: PipelineResult, got: PipelineResult, ground_truth: list[Detections] | None = None
) -> dict[str, Any]:
    """End-to-end agreement of two engines' pipeline outputs (and each one's mAP against ground truth if given)."""
    matched = same_code = 0
    iou_deltas: list[float] = []
    exact_images = 0
    for r, g in zip(ref.images, got.images, strict=True):
        rd, gd = _as_detections(r), _as_detections(g)
        used = np.zeros(len(g), bool)
        ious = box_iou(rd.boxes, gd.boxes) if len(r) and len(g) else np.zeros((len(r), len(g)))
        image_same = len(r) == len(g)
        for i in range(len(r)):
            cand = np.where(used, -1.0, ious[i]) if len(g) else np.zeros(0)
            j = int(cand.argmax()) if cand.size else -1
            if j < 0 or cand[j] < 0.5:
                image_same = False
                continue
            used[j] = True
            matched += 1
            iou_deltas.append(1.0 - float(cand[j]))
            if r[i]["edi_code"] == g[j]["edi_code"]:
                same_code += 1
            else:
                image_same = False
        exact_images += int(image_same)
    n_ref, n_got = sum(len(r) for r in ref.images), sum(len(g) for g in got.images)
    res: dict[str, Any] = {
        "reference": ref.engine,
        "candidate": got.engine,
        "images": len(ref.images),
        "detections_reference": n_ref,
        "detections_candidate": n_got,
        "matched": matched,
        "edi_code_agreement": same_code / matched if matched else None,
        "image_agreement": exact_images / len(ref.images) if ref.images else None,
        "iou_delta_max": max(iou_deltas) if iou_deltas else None,
    }
    if ground_truth is not None:
        for key, run in (("reference", ref), ("candidate", got)):
            dets = [_as_detections(d) for d in run.images]
            res[f"map_0_5_{key}"] = mean_average_precision(dets, ground_truth, (0.5,))
        res["map_0_5_delta"] = res["map_0_5_candidate"] - res["map_0_5_reference"]
    res["passed"] = bool(n_ref == n_got == matched and same_code == matched)
    return res


def pipeline_images(
    manifest_path: str | Path,
    inputs: str | None = None,
    samples: int = 8,
    limit: int | None = None,
    seed: int = 0,
) -> tuple[str, np.ndarray]:
    """The images a pipeline run gets: a ``.npz`` (the detector's input array), an image glob/folder (the shared
    :func:`onnxship.runtime._preprocess.preprocess_images`, [0, 1] values, no normalisation), or synthetic scenes."""
    import glob

    manifest, _ = load_manifest(manifest_path)
    size, name = int(manifest["preprocess"]["image_size"]), manifest["detector"]["input"]
    if inputs is None:
        return f"{samples} synthetic scenes (seed {seed})", make_scenes(samples, size=size, seed=seed).images
    if inputs.endswith(".npz"):
        with np.load(inputs) as data:
            if name not in data:
                raise ConfigError(
                    f"{inputs!r} has no array {name!r} (found {sorted(data.files)})",
                    hint=f"save the images as {name}=[N, 3, {size}, {size}] float32 in [0, 1]",
                )
            images = np.asarray(data[name], np.float32)
        images = images[:limit] if limit else images
        return f"{inputs} ({images.shape[0]} images)", images
    from onnxship.runtime._preprocess import IMAGE_SUFFIXES, PreprocessConfig, preprocess_images

    pattern = str(Path(inputs) / "**" / "*") if Path(inputs).is_dir() else inputs
    files = sorted(p for p in glob.glob(pattern, recursive=True) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(
            f"no images in {inputs!r}",
            hint=f"a .npz, an image folder or a glob ({', '.join(IMAGE_SUFFIXES)})",
        )
    files = files[:limit] if limit else files
    pre = PreprocessConfig(size=size, resize=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return f"{inputs} ({len(files)} images)", preprocess_images(files, pre)

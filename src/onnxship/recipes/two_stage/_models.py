"""The two stages, built from code.

Built-in (the default, no extra packages): a tiny YOLO-style detector (raw boxes + scores, no NMS inside) and a
small CNN classifier for the crops.

Real model families (the ``families`` extra: ``pip install 'onnxship[families]'``), random weights, nothing
downloaded:

* ``build_timm_classifier``: ``timm.create_model(name, pretrained=False, num_classes=K)``, e.g. ``convnext_atto`` or
  ``tf_efficientnetv2_b0``; same contract: ``[N, 3, S, S]`` float -> logits ``[N, num_classes]``.
* ``build_yolo_detector``: an Ultralytics YOLO detection model built from its model yaml (``yolov8n.yaml``,
  ``yolo11n.yaml``, ...) with ``nc`` classes; the exported output is Ultralytics' raw Detect output
  ``output0 [N, 4 + C, K]`` (cx, cy, w, h in pixels, then class scores), the layout the detection task metric
  reads as ``box_format="yolo"``.

Both packages import torchvision, whose compiled ops must load beside the installed torch build; when they do not,
the factories raise a MissingDependencyError that says so (onnxship never patches torch).

DO NOT import torch at module level: the factories import it, and the classes are built inside them.
"""

from __future__ import annotations

from typing import Any

from onnxship._errors import MissingDependencyError

__all__ = ["build_classifier", "build_detector", "build_timm_classifier", "build_yolo_detector"]

DETECTOR_OUTPUTS = ("boxes", "scores")
CLASSIFIER_OUTPUTS = ("logits",)


def build_detector(num_classes: int = 1, image_size: int = 64, stride: int = 8, width: int = 16) -> Any:
    """A one-scale anchor-free YOLO-style detector.

    Every cell of the ``image_size / stride`` grid predicts a box (centre offset in the cell, log width/height in
    strides) plus objectness and class logits. Outputs are raw: ``boxes [N, K, 4]`` xyxy in pixels and
    ``scores [N, K, C]`` = sigmoid(objectness) * sigmoid(class); NMS is the shared numpy one, outside the model.
    """
    import torch
    from torch import nn

    if image_size % stride:
        raise ValueError(f"image_size {image_size} must be a multiple of stride {stride}")
    grid = image_size // stride

    class TinyYolo(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            c_in, c = 3, width
            for _ in range(stride.bit_length() - 1):  # one stride-2 block per factor of 2
                layers += [nn.Conv2d(c_in, c, 3, 2, 1), nn.BatchNorm2d(c), nn.SiLU()]
                c_in, c = c, c * 2
            layers += [nn.Conv2d(c_in, c_in, 3, 1, 1), nn.BatchNorm2d(c_in), nn.SiLU()]
            self.backbone = nn.Sequential(*layers)
            self.head = nn.Conv2d(c_in, 5 + num_classes, 1)
            ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
            self.register_buffer(
                "cells", torch.stack([xs, ys], -1).reshape(1, grid * grid, 2).float(), persistent=False
            )
            self.stride = float(stride)
            self.num_classes = num_classes

        def raw(self, image: torch.Tensor) -> torch.Tensor:
            """Head output per cell: ``[N, K, 5 + C]`` (dx, dy, log w, log h, objectness, classes) as logits."""
            p = self.head(self.backbone(image))
            return p.flatten(2).transpose(1, 2)

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            p = self.raw(image)
            centre = (self.cells + torch.sigmoid(p[..., 0:2])) * self.stride
            wh = torch.exp(p[..., 2:4].clamp(-4.0, 4.0)) * self.stride
            boxes = torch.cat([centre - wh / 2, centre + wh / 2], dim=-1)
            scores = torch.sigmoid(p[..., 4:5]) * torch.sigmoid(p[..., 5:])
            return boxes, scores

    return TinyYolo()


def build_classifier(num_classes: int = 3, width: int = 16) -> Any:
    """A small conv net for crops: ``[N, 3, S, S]`` -> logits ``[N, num_classes]`` (any S >= 8)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, width, 3, 1, 1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, width * 2, 3, 1, 1),
        nn.BatchNorm2d(width * 2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width * 2, width * 2, 3, 1, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width * 2, num_classes),
    )


def _family_import(module: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{what} needs the {module!r} package ({exc})", hint="pip install 'onnxship[families]'"
        ) from None
    except RuntimeError as exc:  # torchvision's compiled ops do not load beside this torch build
        raise MissingDependencyError(
            f"{what}: importing {module!r} failed ({exc})",
            hint="install the torchvision build that matches your torch (same version pair, same CPU/CUDA variant)",
        ) from None


def build_timm_classifier(model_name: str = "convnext_atto", num_classes: int = 3) -> Any:
    """``timm.create_model(model_name, pretrained=False, num_classes=num_classes)`` (random weights)."""
    timm = _family_import("timm", f"the timm classifier {model_name!r}")
    try:
        return timm.create_model(model_name, pretrained=False, num_classes=num_classes)
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise MissingDependencyError(
            f"timm has no model {model_name!r} ({exc})", hint="e.g. convnext_atto or tf_efficientnetv2_b0"
        ) from None


def build_yolo_detector(model_yaml: str = "yolov8n.yaml", num_classes: int = 1, image_size: int = 64) -> Any:
    """An Ultralytics YOLO detection model from its model yaml (random weights) that returns the raw Detect output.

    ``forward(image [N, 3, S, S]) -> output0 [N, 4 + num_classes, K]``; NMS stays outside the model (the shared
    numpy one), as in Ultralytics' own ONNX export.
    """
    from torch import nn

    tasks = _family_import("ultralytics.nn.tasks", f"the YOLO detector {model_yaml!r}")
    try:
        model = tasks.DetectionModel(model_yaml, nc=num_classes, verbose=False)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise MissingDependencyError(
            f"Ultralytics cannot build {model_yaml!r} ({exc})", hint="e.g. yolov8n.yaml or yolo11n.yaml"
        ) from None
    # Recompute the anchor grid on every call instead of caching it by input shape: a cached grid made during an
    # inference-mode forward would be baked into a trace (and cannot be saved for autograd).
    model.model[-1].dynamic = True
    stride = int(max(model.stride.tolist())) if hasattr(model, "stride") else 32
    if image_size % stride:
        raise ValueError(f"image_size {image_size} must be a multiple of the model's largest stride {stride}")

    class YoloRaw(nn.Module):
        """The detection model's decoded head output alone (Ultralytics returns it with its raw feature maps)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image: Any) -> Any:
            out = self.model(image)
            return out[0] if isinstance(out, (tuple, list)) else out

    return YoloRaw().eval()

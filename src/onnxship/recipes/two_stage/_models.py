"""The two stages, built from code: a tiny YOLO-style detector (raw boxes + scores, no NMS inside) and a small CNN
classifier for the crops.

timm's ``create_model`` was the intended classifier, but timm 1.0 imports ``torchvision.ops`` at import
time (``timm/layers/create_norm.py``) and torchvision does not load beside this project's torch build, so the
classifier is a small conv net with the same contract: ``[N, 3, S, S]`` float -> logits ``[N, num_classes]``.

DO NOT import torch at module level: the factories import it, and the classes are built inside them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_classifier", "build_detector"]

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

"""The one image preprocessing function: Resize -> CenterCrop -> Normalize, numpy + Pillow only.

Both engines get exactly the arrays this returns: there is no second copy of Resize/CenterCrop/Normalize anywhere
in onnxship (data sources, benchmarks and recipes all call :func:`preprocess_images`).
DO NOT import PIL at module level (it is the ``vision`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxship._errors import ConfigError, require

__all__ = ["IMAGE_SUFFIXES", "PreprocessConfig", "preprocess_images"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class PreprocessConfig:
    """Validation-time preprocessing (torchvision's ImageNet defaults)."""

    size: int = 224  # center-crop size (the model's H = W)
    resize: int | None = None  # shorter side before the crop; None: round(size / 0.875) (256 for 224)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # per channel, on [0, 1] values
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    layout: str = "NCHW"  # NCHW | NHWC
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.size < 1 or (self.resize is not None and self.resize < self.size):
            raise ConfigError(
                f"preprocess size={self.size} resize={self.resize} is not valid",
                hint="size >= 1 and resize >= size",
            )
        if self.layout not in ("NCHW", "NHWC"):
            raise ConfigError(f"unknown layout {self.layout!r}", hint="valid: NCHW, NHWC")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError("mean and std need 3 values each, std > 0")

    @property
    def resize_to(self) -> int:
        return self.resize if self.resize is not None else int(round(self.size / 0.875))

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "resize": self.resize_to,
            "mean": list(self.mean),
            "std": list(self.std),
            "layout": self.layout,
            "dtype": self.dtype,
            "steps": ["resize_shorter", "center_crop", "normalize"],
        }


def preprocess_images(
    paths: Sequence[str | Path], config: PreprocessConfig = PreprocessConfig()
) -> np.ndarray:
    """Load images and apply Resize(shorter side) -> CenterCrop -> Normalize; returns ``[N, 3, H, W]`` (or NHWC).

    Example:
        >>> batch = preprocess_images(["cat.jpg"], PreprocessConfig(size=224))  # doctest: +SKIP
        >>> batch.shape  # doctest: +SKIP
        (1, 3, 224, 224)
    """
    image_mod = require("PIL.Image", "vision")
    out = np.empty((len(paths), config.size, config.size, 3), dtype=np.float32)
    mean = np.asarray(config.mean, np.float32)
    std = np.asarray(config.std, np.float32)
    for i, p in enumerate(paths):
        try:
            with image_mod.open(p) as im:
                im = im.convert("RGB")
                w, h = im.size
                scale = config.resize_to / min(w, h)
                nw, nh = max(config.size, round(w * scale)), max(config.size, round(h * scale))
                im = im.resize((nw, nh), image_mod.Resampling.BILINEAR)
                left, top = (nw - config.size) // 2, (nh - config.size) // 2
                im = im.crop((left, top, left + config.size, top + config.size))
                arr = np.asarray(im, dtype=np.float32)
        except (
            Exception
        ) as exc:  # any reader failure (Pillow, or a plugin another library installed) is a bad file
            raise ConfigError(
                f"cannot read image {str(p)!r} ({type(exc).__name__}: {exc})",
                hint="remove or fix the file; the data folder must hold only images",
            ) from None
        out[i] = (arr / 255.0 - mean) / std
    if config.layout == "NCHW":
        out = out.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(out, dtype=np.dtype(config.dtype))

"""Synthetic scenes for the two-stage recipe: coloured rectangles on a noisy background, with their boxes.

The colour decides the class (the classifier's job); the detector only finds "an object". Deterministic per seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["COLOURS", "Scene", "crop_resize", "make_scenes"]

# class id -> RGB in [0, 1]
COLOURS = ((0.9, 0.15, 0.15), (0.15, 0.85, 0.2), (0.2, 0.3, 0.95))


@dataclass
class Scene:
    """A batch of images ``[N, 3, H, W]`` float32 in [0, 1] with per-image boxes (xyxy pixels) and classes."""

    images: np.ndarray
    boxes: list[np.ndarray]  # [K, 4] per image
    classes: list[np.ndarray]  # [K] per image


def make_scenes(n: int, size: int = 64, max_objects: int = 3, seed: int = 0) -> Scene:
    """``n`` images with 1..max_objects non-overlapping rectangles of 10..24 px each."""
    rng = np.random.default_rng(seed)
    images = (0.1 + 0.08 * rng.standard_normal((n, 3, size, size))).clip(0, 1).astype(np.float32)
    all_boxes, all_classes = [], []
    for i in range(n):
        boxes: list[list[float]] = []
        classes: list[int] = []
        for _ in range(20):  # rejection sampling for non-overlapping boxes
            if len(boxes) >= int(rng.integers(1, max_objects + 1)):
                break
            w, h = (int(v) for v in rng.integers(10, 25, 2))
            x0, y0 = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            if any(
                x0 < b[2] + 2 and b[0] < x0 + w + 2 and y0 < b[3] + 2 and b[1] < y0 + h + 2 for b in boxes
            ):
                continue
            c = int(rng.integers(0, len(COLOURS)))
            shade = np.asarray(COLOURS[c], np.float32)[:, None, None] * float(rng.uniform(0.8, 1.0))
            images[i, :, y0 : y0 + h, x0 : x0 + w] = shade + 0.03 * rng.standard_normal((3, h, w)).astype(
                np.float32
            )
            boxes.append([x0, y0, x0 + w, y0 + h])
            classes.append(c)
        all_boxes.append(np.asarray(boxes, np.float64).reshape(-1, 4))
        all_classes.append(np.asarray(classes, np.int64))
    return Scene(images.clip(0, 1).astype(np.float32), all_boxes, all_classes)


def crop_resize(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Crop ``box`` (xyxy pixels, clipped to the image) from ``[3, H, W]`` and resize it to ``[3, size, size]``
    (bilinear, numpy): the one crop both engines' classifiers see."""
    _, h, w = image.shape
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = np.clip([x0, x1], 0, w)
    y0, y1 = np.clip([y0, y1], 0, h)
    x1, y1 = max(x1, x0 + 1.0), max(y1, y0 + 1.0)
    xs = x0 + (np.arange(size) + 0.5) * (x1 - x0) / size - 0.5
    ys = y0 + (np.arange(size) + 0.5) * (y1 - y0) / size - 0.5
    xs, ys = np.clip(xs, 0, w - 1), np.clip(ys, 0, h - 1)
    xl, yl = np.floor(xs).astype(int), np.floor(ys).astype(int)
    xh, yh = np.minimum(xl + 1, w - 1), np.minimum(yl + 1, h - 1)
    fx, fy = (xs - xl)[None, None, :], (ys - yl)[None, :, None]
    top = image[:, yl][:, :, xl] * (1 - fx) + image[:, yl][:, :, xh] * fx
    bot = image[:, yh][:, :, xl] * (1 - fx) + image[:, yh][:, :, xh] * fx
    return (top * (1 - fy) + bot * fy).astype(np.float32)

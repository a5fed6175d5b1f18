"""A few CPU seconds of training for both stages on synthetic scenes (so the pipeline has real detections to agree on).

DO NOT import torch at module level.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxship import _progress
from onnxship.recipes.two_stage._data import Scene, crop_resize, make_scenes

__all__ = ["calibrate_batchnorm", "crops_of", "train_classifier", "train_detector"]


def _targets(scene: Scene, grid: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell: objectness, box target (dx, dy, log w, log h in strides), positive mask."""
    n = scene.images.shape[0]
    obj = np.zeros((n, grid * grid), np.float32)
    box = np.zeros((n, grid * grid, 4), np.float32)
    for i, boxes in enumerate(scene.boxes):
        for x0, y0, x1, y1 in boxes:
            cx, cy = (x0 + x1) / 2 / stride, (y0 + y1) / 2 / stride
            gx, gy = min(int(cx), grid - 1), min(int(cy), grid - 1)
            k = gy * grid + gx
            obj[i, k] = 1.0
            box[i, k] = [cx - gx, cy - gy, np.log((x1 - x0) / stride), np.log((y1 - y0) / stride)]
    return obj, box, obj > 0


def train_detector(
    model: Any, *, images: int = 256, steps: int = 150, batch: int = 32, seed: int = 0
) -> float:
    """Train ``build_detector(num_classes=1)`` on synthetic scenes; returns the last loss."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    scene = make_scenes(images, size=int(model.cells.shape[1] ** 0.5 * model.stride), seed=seed)
    grid, stride = int(model.cells.shape[1] ** 0.5), int(model.stride)
    obj, box, pos = (torch.from_numpy(a) for a in _targets(scene, grid, stride))
    x = torch.from_numpy(scene.images)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    gen = torch.Generator().manual_seed(seed)
    loss = torch.zeros(())
    shown = _progress.begin("two-stage: detector training step", total=steps)
    for _ in range(steps):
        idx = torch.randint(0, images, (batch,), generator=gen)
        p = model.raw(x[idx])
        o, b, m = obj[idx], box[idx], pos[idx]
        loss = F.binary_cross_entropy_with_logits(p[..., 4], o)
        loss = loss + F.binary_cross_entropy_with_logits(p[..., 5:][m], torch.ones_like(p[..., 5:][m]))
        pred_box = torch.cat([torch.sigmoid(p[..., 0:2]), p[..., 2:4]], -1)
        loss = loss + F.smooth_l1_loss(pred_box[m], b[m])
        opt.zero_grad()
        loss.backward()
        opt.step()
        shown.advance(detail=f"loss {float(loss.detach()):.4f}")
    shown.close()
    model.eval()
    return float(loss.detach())


def crops_of(
    scene: Scene, crop_size: int, jitter: float = 0.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Every ground-truth rectangle as a classifier crop (optionally with jittered boxes, like a detector's)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for img, boxes, classes in zip(scene.images, scene.boxes, scene.classes, strict=True):
        for b, c in zip(boxes, classes, strict=True):
            b = b + rng.uniform(-jitter, jitter, 4) * (b[2] - b[0])
            xs.append(crop_resize(img, b, crop_size))
            ys.append(int(c))
    return np.stack(xs).astype(np.float32), np.asarray(ys, np.int64)


def train_classifier(
    model: Any, *, crop_size: int = 32, images: int = 128, steps: int = 120, batch: int = 32, seed: int = 0
) -> float:
    """Train the crop classifier on ground-truth crops with box jitter; returns the last loss."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    xs, ys = crops_of(make_scenes(images, seed=seed + 1), crop_size, jitter=0.15, seed=seed)
    x, y = torch.from_numpy(xs), torch.from_numpy(ys)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    gen = torch.Generator().manual_seed(seed)
    loss = torch.zeros(())
    shown = _progress.begin("two-stage: classifier training step", total=steps)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=gen)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        shown.advance(detail=f"loss {float(loss.detach()):.4f}")
    shown.close()
    model.eval()
    return float(loss.detach())


def calibrate_batchnorm(model: Any, images: np.ndarray, batch: int = 8) -> int:
    """Set every BatchNorm's running statistics from ``images`` (no gradient step); returns how many were set.

    A randomly initialised network in eval mode normalises with mean 0 / variance 1, so its activations fade to
    almost nothing after a few dozen layers and every anchor of a random YOLO head answers the same number. With
    statistics measured on real inputs the outputs vary as a trained model's do, which the checks need (ties
    between identical scores would make NMS order arbitrary).
    """
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    x = torch.from_numpy(np.asarray(images, np.float32))
    model.train()
    try:
        with torch.no_grad():
            for i in range(0, x.shape[0], batch):
                model(x[i : i + batch])
    finally:
        for m, mom in zip(norms, saved, strict=True):
            m.momentum = mom
        model.eval()
    return len(norms)

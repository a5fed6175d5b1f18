"""Make torchvision importable beside this environment's CPU torch build (tests and benchmarks only).

Why: torchvision's PyPI wheel here is a CUDA build whose compiled ops (``torchvision._C``) do not load beside the
CPU build of torch; ``import torchvision`` then fails in ``torchvision/_meta_registrations.py`` with
"operator torchvision::nms does not exist". timm and Ultralytics import torchvision at import time, so without it
neither model family can be built. Declaring the ``torchvision::nms`` and ``torchvision::qnms`` operator schemas
(and a plain-torch CPU kernel for nms) before the first torchvision import lets torchvision finish importing; the
model families used here never call torchvision's compiled ops in their forward pass (Ultralytics runs its NMS in
its own post-processing, which onnxship does not export).

Library code never does this: it only ever runs in test fixtures and benchmarks.
"""

from __future__ import annotations

import sys

__all__ = ["install_torchvision_shim"]

_LIB = None  # the torch.library.Library holding the schemas (kept alive for the process)


def _nms(boxes, scores, iou_threshold: float):
    """Greedy NMS in plain torch (the reference semantics of torchvision.ops.nms)."""
    import torch

    order = scores.argsort(descending=True)
    keep = []
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    suppressed = torch.zeros(boxes.shape[0], dtype=torch.bool)
    for idx in order.tolist():
        if suppressed[idx]:
            continue
        keep.append(idx)
        xx1 = torch.maximum(x1[idx], x1)
        yy1 = torch.maximum(y1[idx], y1)
        xx2 = torch.minimum(x2[idx], x2)
        yy2 = torch.minimum(y2[idx], y2)
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        iou = inter / (areas[idx] + areas - inter).clamp(min=1e-12)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.int64)


def install_torchvision_shim() -> bool:
    """Declare the operator schemas torchvision needs at import time; True when torchvision now imports."""
    global _LIB
    import torch

    if "torchvision" in sys.modules:
        return True
    try:
        torch._C._dispatch_has_kernel_for_dispatch_key("torchvision::nms", "CPU")
        declared = True
    except RuntimeError:
        declared = False
    if not declared:
        _LIB = torch.library.Library("torchvision", "DEF")  # noqa: PLW0603
        _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIB.define(
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
        )  # quantized nms: schema only
        _LIB.impl("nms", _nms, "CPU")
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001  (any failure means: not importable here)
        return False
    return True

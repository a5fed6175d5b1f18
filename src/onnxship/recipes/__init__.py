"""Recipes: complete worked systems built only on onnxship's public verbs.

``onnxship.recipes.deeplog`` is DeepLog log anomaly detection on real loghub logs (parse -> build -> train -> ship ->
detect); ``onnxship.recipes.mscred`` is MSCRED on the same parsed logs; ``onnxship.recipes.two_stage`` is the
detect -> NMS -> crop -> classify -> edi_code pipeline. Nothing here is imported by ``import onnxship``.
"""

from __future__ import annotations

__all__: list[str] = []

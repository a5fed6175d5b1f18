"""Recipes: complete worked systems built only on onnxship's public verbs.

``onnxship.recipes.deeplog`` is DeepLog log anomaly detection on real loghub logs (parse -> build -> train -> ship ->
detect). Nothing here is imported by ``import onnxship``.
"""

from __future__ import annotations

__all__: list[str] = []

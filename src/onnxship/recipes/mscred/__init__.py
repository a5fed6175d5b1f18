"""MSCRED (multi-scale convolutional recurrent encoder-decoder) beside DeepLog, on the same parsed logs.

::

    train   parsed.parquet -> per-template counts per step -> signature matrices -> windows; conv encoder ->
            ConvLSTM (unrolled over a static window) -> deconv decoder; score = reconstruction residual
    ship    onnxship.ship: golden + batch-dim sweep + the real windows; window_static recorded in the metadata

Imports nothing heavy: pandas and torch are imported inside the verbs.
"""

from __future__ import annotations

from onnxship.recipes.mscred._model import INPUT_NAME, OUTPUT_NAMES, build_mscred
from onnxship.recipes.mscred._recipe import (
    MSCRED_SPEC,
    MscredShipConfig,
    MscredTrainConfig,
    MscredTrainResult,
    ship_mscred,
    train_mscred,
)
from onnxship.recipes.mscred._signatures import (
    SignatureConfig,
    Signatures,
    signature_matrices,
    signature_windows,
)

__all__ = [
    "INPUT_NAME",
    "MSCRED_SPEC",
    "OUTPUT_NAMES",
    "MscredShipConfig",
    "MscredTrainConfig",
    "MscredTrainResult",
    "SignatureConfig",
    "Signatures",
    "build_mscred",
    "ship_mscred",
    "signature_matrices",
    "signature_windows",
    "train_mscred",
]

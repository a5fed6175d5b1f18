"""DeepLog log anomaly detection on real logs, built on onnxship's public verbs (parse -> build -> train -> ship -> detect).

::

    parse   raw HDFS/BGL lines -> Drain3 templates -> parsed.parquet (+ grouping accuracy vs loghub's reference)
    build   vocab.json {"template string": id} + sliding windows -> sequences.parquet
    train   examples/deeplog/model.py (Embedding -> LSTM -> Linear), CPU, loss/grad_norm logged per step
    ship    onnxship.ship with the vocab asset (validated against the model), real-window top-g check
    detect  ONNX Runtime only: windows whose next event is outside the top g; P/R/F1 vs BGL alert labels

Imports nothing heavy: pandas/drain3 (the ``logs`` extra) and torch are imported inside the verbs.
"""

from __future__ import annotations

from onnxship.recipes.deeplog._build import BuildConfig, BuildResult, build_sequences, load_vocab, make_vocab
from onnxship.recipes.deeplog._detect import (
    DetectConfig,
    DetectResult,
    detect_anomalies,
    prf,
    top_g_decisions,
)
from onnxship.recipes.deeplog._formats import FORMATS, LogFormat, get_format
from onnxship.recipes.deeplog._parse import ParseConfig, ParseResult, grouping_accuracy, parse_logs
from onnxship.recipes.deeplog._ship import DeepLogShipConfig, DeepLogShipResult, ship_deeplog
from onnxship.recipes.deeplog._train import TrainConfig, TrainResult, default_model_spec, train_deeplog

__all__ = [
    "FORMATS",
    "BuildConfig",
    "BuildResult",
    "DeepLogShipConfig",
    "DeepLogShipResult",
    "DetectConfig",
    "DetectResult",
    "LogFormat",
    "ParseConfig",
    "ParseResult",
    "TrainConfig",
    "TrainResult",
    "build_sequences",
    "default_model_spec",
    "detect_anomalies",
    "get_format",
    "grouping_accuracy",
    "load_vocab",
    "make_vocab",
    "parse_logs",
    "prf",
    "ship_deeplog",
    "top_g_decisions",
    "train_deeplog",
]

"""``VerifyConfig``: how ``onnxship.verify`` samples, which gate it applies and which checks it runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxship._errors import ConfigError
from onnxship.runtime._preprocess import PreprocessConfig
from onnxship.verify._policy import resolve_policy
from onnxship.verify._sampling import SampleConfig
from onnxship.verify._tasks import NmsConfig

__all__ = ["VerifyConfig"]


@dataclass
class VerifyConfig:
    """How to verify."""

    mode: str = "smoke"  # smoke (sample_count random) | coverage (stratified by class) | full (everything)
    precision: str | None = (
        None  # fp32 | fp16 | int8: picks the default gate; None: the file's metadata, else fp32
    )
    task: str | None = None  # classification | detection | sequence: adds task-level agreement to the gate
    data: str | Path | None = None  # image folder, .npz, .parquet/.csv; None: synthetic from the input specs
    checkpoint: str | Path | None = None  # weights for a "file.py:factory" model
    batch_size: int = 32
    sample_count: int = 32  # smoke: samples compared
    per_class_k: int = 1  # coverage: samples per class
    min_classes: int = 1000  # coverage: classes wanted
    max_total: int = 5000  # coverage: cap
    hardness_bins: tuple[float, ...] | None = None  # e.g. (0.0, 0.3, 0.6, 0.85, 1.0)
    hard_per_bin: int = 8
    synthetic_count: int = 256  # size of the synthetic dataset when no data is given
    tolerance: Any = None  # overall elementwise tolerance (Tolerance, {"atol", "rtol"} or atol)
    tolerances: dict[str, Any] = field(default_factory=dict)  # per-output elementwise overrides
    thresholds: dict[str, float | None] = field(
        default_factory=dict
    )  # gate overrides, e.g. {"mse_mean": 1e-3}
    task_output: str | None = None  # output holding logits/scores for the task (default: the first)
    top_g: int = 9  # sequence: DeepLog's g
    nms: NmsConfig = field(default_factory=NmsConfig)  # detection: the shared NMS
    box_format: str = (
        "xyxy"  # detection raw layout: xyxy | cxcywh | yolo | yolov5 (see _tasks.decode_detections)
    )
    preprocess: PreprocessConfig | None = None  # image folders: default from the input shape
    sweep: bool = True  # run the shape sweep (needs a PyTorch reference)
    providers: tuple[str, ...] | None = None  # onnxruntime providers (default TensorRT -> CUDA -> CPU)
    seed: int = 0
    max_worst: int = 10  # worst samples kept per output
    raise_on_fail: bool = False  # raise VerificationError (carrying the report) when the gate fails
    allow_nonfinite: bool = False  # accept NaN/Inf outputs where both engines agree (off: any NaN/Inf fails)
    value_sweep: bool = True  # also compare shifted/scaled/edge-valued inputs (needs the PyTorch model)
    progress: Callable[[int, int | None], None] | None = None  # called with (samples done, total)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size} must be >= 1")
        if self.top_g < 1:
            raise ConfigError(f"top_g={self.top_g} must be >= 1")
        self.sample_config()  # validates mode and counts
        resolve_policy(
            self.precision or "fp32",
            self.task,
            tolerance=self.tolerance,
            per_output=self.tolerances,
            thresholds=self.thresholds,
        )

    def sample_config(self) -> SampleConfig:
        return SampleConfig(
            mode=self.mode,
            sample_count=self.sample_count,
            per_class_k=self.per_class_k,
            min_classes=self.min_classes,
            max_total=self.max_total,
            hardness_bins=tuple(self.hardness_bins) if self.hardness_bins else None,
            hard_per_bin=self.hard_per_bin,
            seed=self.seed,
        )

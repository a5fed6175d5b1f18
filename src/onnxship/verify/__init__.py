"""Verification: runners, comparison and the shape-sweep parity gate."""

from onnxship.verify._compare import (
    PRECISION_TOLERANCES,
    OutputStats,
    Tolerance,
    compare_arrays,
    compare_outputs,
)
from onnxship.verify._golden import GOLDEN_SCHEMA, Golden, GoldenRunner, read_golden, write_golden
from onnxship.verify._parity import ParityResult, ShapeCheck, check_parity
from onnxship.verify._runners import OnnxRuntimeRunner, Runner, TorchRunner, flatten_outputs

__all__ = [
    "GOLDEN_SCHEMA",
    "Golden",
    "GoldenRunner",
    "read_golden",
    "write_golden",
    "PRECISION_TOLERANCES",
    "OnnxRuntimeRunner",
    "OutputStats",
    "ParityResult",
    "Runner",
    "ShapeCheck",
    "Tolerance",
    "TorchRunner",
    "check_parity",
    "compare_arrays",
    "compare_outputs",
    "flatten_outputs",
]

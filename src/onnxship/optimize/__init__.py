"""Optimized variants (simplified, fp16, int8 dynamic/static), each re-verified before it is kept."""

from onnxship.optimize._api import (
    VARIANTS,
    OptimizeConfig,
    OptimizeResult,
    VariantResult,
    build_variants,
    normalize_variant,
    optimize,
)
from onnxship.optimize._calibration import calibration_batches, calibration_reader
from onnxship.optimize._gate import TASKS, GateConfig, GateResult, detect_task, run_gate
from onnxship.optimize._passes import (
    Fp16Pass,
    Int8DynamicPass,
    Int8StaticPass,
    Pass,
    PassResult,
    PassSequence,
    SimplifyPass,
)
from onnxship.optimize._sensitivity import NodeSensitivity, quantizable_nodes, rank_sensitivity

__all__ = [
    "TASKS",
    "VARIANTS",
    "Fp16Pass",
    "GateConfig",
    "GateResult",
    "Int8DynamicPass",
    "Int8StaticPass",
    "NodeSensitivity",
    "OptimizeConfig",
    "OptimizeResult",
    "Pass",
    "PassResult",
    "PassSequence",
    "SimplifyPass",
    "VariantResult",
    "build_variants",
    "calibration_batches",
    "calibration_reader",
    "detect_task",
    "normalize_variant",
    "optimize",
    "quantizable_nodes",
    "rank_sensitivity",
    "run_gate",
]

from onnxship._util import verb_module  # noqa: E402

verb_module(__name__, "optimize")

"""What to export: model specs and input specs."""

from onnxship.spec._config import ShipConfig, load_ship_config
from onnxship.spec._inputs import (
    DTYPES,
    GRAMMAR,
    DimSpec,
    TensorSpec,
    dim_table,
    parse_input_spec,
    sample_feeds,
    sweep_points,
)
from onnxship.spec._model import ModelSpec, parse_model_spec

__all__ = [
    "DTYPES",
    "GRAMMAR",
    "DimSpec",
    "ModelSpec",
    "ShipConfig",
    "TensorSpec",
    "dim_table",
    "load_ship_config",
    "parse_input_spec",
    "parse_model_spec",
    "sample_feeds",
    "sweep_points",
]

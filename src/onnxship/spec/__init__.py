"""What to export: model specs and input specs."""

from onnxship.spec._config import ShipConfig, load_ship_config
from onnxship.spec._inputs import (
    DTYPES,
    GRAMMAR,
    DimSpec,
    TensorSpec,
    dim_table,
    parse_dynamic_dim,
    parse_input_spec,
    parse_input_specs,
    resolve_specs,
    sample_feeds,
    sweep_points,
)
from onnxship.spec._model import ModelSpec, parse_model_spec
from onnxship.spec._values import KINDS

__all__ = [
    "DTYPES",
    "GRAMMAR",
    "KINDS",
    "DimSpec",
    "ModelSpec",
    "ShipConfig",
    "TensorSpec",
    "dim_table",
    "load_ship_config",
    "parse_dynamic_dim",
    "parse_input_spec",
    "parse_input_specs",
    "resolve_specs",
    "parse_model_spec",
    "sample_feeds",
    "sweep_points",
]

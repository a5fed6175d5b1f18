"""onnxship: take a trained PyTorch model to a verified, versioned, deployable ONNX artifact.

The public verbs are imported lazily so that ``import onnxship`` stays fast and never imports torch or
onnxruntime (a test pins this).

Layers, lowest first; a module imports only its own package or a lower layer (``tests/test_layers.py`` checks
every import, function-level ones included)::

    0  spec, _errors, _util, _version, _secrets   1  onnxfile, inspect   2  runtime   3  verify   4  export
    5  optimize, package   6  ship   7  publish, serve   8  recipes, doctor, testing   9  cli

Where a change goes: reading/checking an ONNX file -> ``onnxfile``; running a model, data sources, preprocess,
golden files, timing -> ``runtime``; the parity gate -> ``verify``; a new exporter -> ``export``; flags -> ``cli``
only. When a lower layer needs a higher one, pass the piece in as an argument (``runtime.bench(build_variants=...)``)
or move the shared code down.

Example:
    >>> import onnxship
    >>> result = onnxship.export(model, {"x": x}, dynamic={"x": {0: "batch"}}, out="out")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from onnxship._errors import (
    CheckError,
    ConfigError,
    ExportError,
    InputSpecError,
    MissingDependencyError,
    ModelLoadError,
    OnnxshipError,
    OptimizeError,
    PackagingError,
    PublishError,
    ServeError,
    VerificationError,
)
from onnxship._version import __version__

if TYPE_CHECKING:
    from onnxship.export import ExportConfig, ExportResult, export
    from onnxship.optimize import OptimizeConfig, OptimizeResult, optimize
    from onnxship.serve import ServeConfig, ServeResult, serve
    from onnxship.ship import ShipResult
    from onnxship.spec import (
        ModelSpec,
        ShipConfig,
        TensorSpec,
        load_ship_config,
        parse_input_spec,
        parse_model_spec,
    )
    from onnxship.verify import VerifyConfig, VerifyReport

__all__ = [
    "CheckError",
    "ConfigError",
    "ExportConfig",
    "ExportError",
    "ExportResult",
    "InputSpecError",
    "MissingDependencyError",
    "ModelLoadError",
    "ModelSpec",
    "OnnxshipError",
    "OptimizeConfig",
    "OptimizeError",
    "OptimizeResult",
    "PackagingError",
    "PublishError",
    "ServeConfig",
    "ServeError",
    "ServeResult",
    "ShipConfig",
    "ShipResult",
    "TensorSpec",
    "VerificationError",
    "VerifyConfig",
    "VerifyReport",
    "__version__",
    "export",
    "inspect_model",
    "load_ship_config",
    "optimize",
    "ship",
    "verify",
    "parse_input_spec",
    "parse_model_spec",
    "publish",
    "serve",
]

# name -> module that defines it; resolved on first attribute access.
_LAZY = {
    "export": "onnxship.export",
    "ExportConfig": "onnxship.export",
    "ExportResult": "onnxship.export",
    "ModelSpec": "onnxship.spec",
    "TensorSpec": "onnxship.spec",
    "parse_input_spec": "onnxship.spec",
    "parse_model_spec": "onnxship.spec",
    "inspect_model": "onnxship.inspect",
    "VerifyConfig": "onnxship.verify",
    "VerifyReport": "onnxship.verify",
    "ShipConfig": "onnxship.spec",
    "ShipResult": "onnxship.ship",
    "load_ship_config": "onnxship.spec",
    "optimize": "onnxship.optimize",
    "verify": "onnxship.verify",
    "ship": "onnxship.ship",
    "publish": "onnxship.publish",
    "OptimizeConfig": "onnxship.optimize",
    "OptimizeResult": "onnxship.optimize",
    "serve": "onnxship.serve",
    "ServeConfig": "onnxship.serve",
    "ServeResult": "onnxship.serve",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxship' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

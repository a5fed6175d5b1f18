"""Running models: ONNX Runtime sessions and execution-provider policy, the torch / ONNX Runtime / golden runners,
data sources, the one image preprocess, golden files, inference and benchmarking.

Layer 2 (see ``onnxship/__init__.py``): imports only the ground floor, ``onnxfile`` and ``inspect``; whatever a
higher layer must add (``optimize`` building variants for ``bench``) is passed in.
"""

from onnxship.runtime._bench import BenchConfig, BenchResult, BenchRow, bench, find_variant
from onnxship.runtime._data import (
    Batch,
    DataSource,
    GoldenSource,
    ImageFolderSource,
    NpzSource,
    SyntheticSource,
    open_source,
)
from onnxship.runtime._golden import GOLDEN_SCHEMA, Golden, GoldenRunner, read_golden, write_golden
from onnxship.runtime._infer import InferConfig, InferResult, infer
from onnxship.runtime._io import model_metadata, model_specs
from onnxship.runtime._preprocess import PreprocessConfig, preprocess_images
from onnxship.runtime._runners import OnnxRuntimeRunner, Runner, TorchRunner, flatten_outputs
from onnxship.runtime._session import (
    PROVIDER_ALIASES,
    PROVIDER_PREFERENCE,
    ProviderFallback,
    SessionConfig,
    SessionInfo,
    create_session,
    open_session,
    plan_providers,
    provider_options,
    resolve_providers,
)
from onnxship.runtime._table import TableSource

__all__ = [
    "GOLDEN_SCHEMA",
    "Batch",
    "DataSource",
    "Golden",
    "GoldenRunner",
    "GoldenSource",
    "ImageFolderSource",
    "NpzSource",
    "OnnxRuntimeRunner",
    "PreprocessConfig",
    "Runner",
    "SyntheticSource",
    "TableSource",
    "TorchRunner",
    "flatten_outputs",
    "open_source",
    "preprocess_images",
    "read_golden",
    "write_golden",
    "PROVIDER_ALIASES",
    "PROVIDER_PREFERENCE",
    "BenchConfig",
    "BenchResult",
    "BenchRow",
    "InferConfig",
    "InferResult",
    "ProviderFallback",
    "SessionConfig",
    "SessionInfo",
    "bench",
    "create_session",
    "find_variant",
    "infer",
    "model_metadata",
    "model_specs",
    "open_session",
    "plan_providers",
    "provider_options",
    "resolve_providers",
]

"""ONNX Runtime sessions and execution-provider policy, inference and benchmarking."""

from onnxship.runtime._bench import BenchConfig, BenchResult, BenchRow, bench, find_variant
from onnxship.runtime._infer import InferConfig, InferResult, infer
from onnxship.runtime._io import model_metadata, model_specs
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

__all__ = [
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

"""Build runners for ``infer``, ``bench`` and ``optimize``: PyTorch from a model argument, ONNX Runtime from a file.

DO NOT import torch or onnxruntime at module level.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxship._errors import ConfigError
from onnxship.spec._inputs import TensorSpec

if TYPE_CHECKING:
    import torch

    from onnxship.runtime._runners import OnnxRuntimeRunner, TorchRunner
    from onnxship.runtime._session import SessionConfig

__all__ = ["ENGINES", "check_engine", "load_module", "onnx_runner", "torch_runner"]

ENGINES = ("onnx", "torch")


def load_module(model: Any) -> torch.nn.Module:
    """An nn.Module (put in eval on the CPU), a ModelSpec, or a ``file.py:factory`` string -> the module."""
    from onnxship.spec._model import ModelSpec, ensure_module, parse_model_spec, to_cpu_eval

    if isinstance(model, str):
        model = parse_model_spec(model)
    if isinstance(model, ModelSpec):
        return model.load().model
    return to_cpu_eval(ensure_module(model, "the model argument"))


def torch_runner(model: Any, specs: Sequence[TensorSpec], output_names: Sequence[str] | None) -> TorchRunner:
    """A TorchRunner with inputs bound to forward() by name, outputs named like the ONNX model's."""
    from onnxship.runtime._runners import TorchRunner
    from onnxship.spec._binding import bind_inputs

    module = load_module(model)
    binding = bind_inputs(module, [s.name for s in specs])
    return TorchRunner(module, binding, list(output_names) if output_names else None)


def onnx_runner(path: str | Path, session: SessionConfig | None = None) -> OnnxRuntimeRunner:
    from onnxship.runtime._runners import OnnxRuntimeRunner

    return OnnxRuntimeRunner(path, session)


def check_engine(engine: str, has_model: bool) -> str:
    if engine not in ENGINES:
        raise ConfigError(f"engine {engine!r} is not known", hint=f"use one of {', '.join(ENGINES)}")
    if engine == "torch" and not has_model:
        raise ConfigError(
            "engine 'torch' needs the PyTorch model",
            hint="pass --model file.py:factory (and --checkpoint) or use --engine onnx",
        )
    return engine

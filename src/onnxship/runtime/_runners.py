"""Runners: one small protocol, ``infer(feeds) -> dict[str, np.ndarray]``, for every engine.

DO NOT import torch or onnxruntime at module level: each runner imports its engine when it is created.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from onnxship._errors import ConfigError

if TYPE_CHECKING:
    import torch

    from onnxship.runtime._session import SessionConfig
    from onnxship.spec._binding import Binding

__all__ = ["OnnxRuntimeRunner", "Runner", "TorchRunner", "flatten_outputs"]


@runtime_checkable
class Runner(Protocol):
    """An engine that maps named input arrays to named output arrays."""

    name: str

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def flatten_outputs(obj: Any) -> list[Any]:
    """Flatten nested tuple/list/dict outputs in order (dicts in insertion order); None leaves are dropped."""
    if obj is None:
        return []
    if isinstance(obj, (tuple, list)):
        return [leaf for item in obj for leaf in flatten_outputs(item)]
    if isinstance(obj, dict):
        return [leaf for item in obj.values() for leaf in flatten_outputs(item)]
    return [obj]


class TorchRunner:
    """PyTorch eager on the CPU, under inference mode, with inputs bound to forward() by name."""

    name = "torch"

    def __init__(
        self, model: torch.nn.Module, binding: Binding, output_names: list[str] | None = None
    ) -> None:
        import torch

        self._torch = torch
        self.model = model
        self.binding = binding
        self.output_names = list(output_names) if output_names else None

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        missing = [n for n in self.binding.order if n not in feeds]
        if missing:
            raise ConfigError(f"inputs {missing} missing from feeds {sorted(feeds)}")
        values = {n: torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.binding.order}
        args, kwargs = self.binding.call_args(values)
        with torch.inference_mode():
            out = self.model(*args, **kwargs)
        leaves = flatten_outputs(out)
        arrays = [
            leaf.detach().cpu().numpy() if isinstance(leaf, torch.Tensor) else np.asarray(leaf)
            for leaf in leaves
        ]
        names = self.output_names or [f"output_{i}" for i in range(len(arrays))]
        if len(names) != len(arrays):
            raise ConfigError(
                f"the model returned {len(arrays)} outputs but {len(names)} names are expected ({names})"
            )
        return dict(zip(names, arrays, strict=True))


class OnnxRuntimeRunner:
    """ONNX Runtime through the project's one session factory."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, config: SessionConfig | None = None) -> None:
        from onnxship.runtime._session import open_session

        self.path = Path(path)
        self.info = open_session(self.path, config)  # providers in use + every fallback with its reason
        self.session = self.info.session
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.providers = list(self.info.providers)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        unknown = sorted(set(feeds) - set(self.input_names))
        missing = [n for n in self.input_names if n not in feeds]
        if unknown or missing:
            raise ConfigError(
                f"feeds {sorted(feeds)} do not match the model inputs {self.input_names}",
                hint=f"missing: {missing}, unknown: {unknown}",
            )
        outs = self.session.run(None, {n: feeds[n] for n in self.input_names})
        return dict(zip(self.output_names, outs, strict=True))

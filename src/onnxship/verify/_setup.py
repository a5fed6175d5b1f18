"""What verify needs before the first batch: input specs, the PyTorch reference, the golden-file check, the dtype
casts each engine gets, the environment record and the hint for an operator onnxruntime refuses.

DO NOT import torch at module level: with only ``golden=`` verify runs without torch.
"""

from __future__ import annotations

import platform
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from onnxship._errors import CheckError, ConfigError
from onnxship._version import __version__
from onnxship.runtime._golden import Golden
from onnxship.spec._inputs import DimSpec, TensorSpec

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
    "tensor(int16)": "int16",
}


def _specs_from_onnx(info: Any) -> list[TensorSpec]:
    recorded = info.metadata.get("inputs")
    if isinstance(recorded, list) and recorded:
        return [TensorSpec.from_dict(d) for d in recorded]
    specs = []
    for i in info.inputs:
        dims = tuple(
            DimSpec(value=d, name=None)
            if isinstance(d, int) and d > 0
            else DimSpec(value=2 if k == 0 else 8, name=str(d) if d else f"{i['name']}_dim{k}")
            for k, d in enumerate(i["shape"])
        )
        specs.append(TensorSpec(i["name"], dims, i["dtype"] if i["dtype"] != "unknown" else "float32"))
    return specs


def _resolve_specs(inputs: list[Any] | None, info: Any) -> list[TensorSpec]:
    if inputs is None:
        return _specs_from_onnx(info)
    from onnxship.spec._inputs import parse_input_specs  # resolves shared, bare and derived dims

    specs = parse_input_specs([s if isinstance(s, TensorSpec) else str(s) for s in inputs])
    graph = [i["name"] for i in info.inputs]
    if sorted(s.name for s in specs) != sorted(graph):
        raise ConfigError(
            f"input specs {[s.name for s in specs]} do not match the ONNX inputs {graph}",
            hint="give one --input per ONNX input, named as in the graph",
        )
    return specs


def _load_reference(
    model: Any, checkpoint: str | Path | None, specs: list[TensorSpec], output_names: list[str]
) -> tuple[Any, Any, str | None]:
    """A TorchRunner for the model argument; returns (runner, module, checkpoint path)."""
    from onnxship.runtime._runners import TorchRunner
    from onnxship.spec._binding import bind_inputs
    from onnxship.spec._model import ModelSpec, ensure_module, parse_model_spec, to_cpu_eval

    ckpt = None
    if isinstance(model, str):
        model = parse_model_spec(model, checkpoint=checkpoint)
    if isinstance(model, ModelSpec):
        if checkpoint is not None and model.checkpoint is None:
            model = replace(model, checkpoint=Path(checkpoint))
        ckpt = str(model.checkpoint) if model.checkpoint else None
        module = model.load().model
    else:
        module = to_cpu_eval(ensure_module(model, "the model argument"))
    binding = bind_inputs(module, [s.name for s in specs])
    return TorchRunner(module, binding, output_names), module, ckpt


def _check_golden(golden: Golden, info: Any) -> None:
    ins = sorted(i["name"] for i in info.inputs)
    outs = sorted(o["name"] for o in info.outputs)
    problems = []
    if sorted(golden.inputs) != ins:
        problems.append(f"golden inputs {sorted(golden.inputs)} != model inputs {ins}")
    if sorted(golden.outputs) != outs:
        problems.append(f"golden outputs {sorted(golden.outputs)} != model outputs {outs}")
    for key in ("model_name", "weights_sha256"):
        g, m = golden.meta.get(key), info.metadata.get(key)
        if g and m and g != m:
            problems.append(f"golden {key} {g!r} != model {key} {m!r}")
    if problems:
        raise CheckError(
            "the golden file belongs to another model: " + "; ".join(problems),
            hint="use the golden.npz from the same release bundle as the ONNX file",
        )


def _environment() -> dict[str, Any]:
    import onnx
    import onnxruntime

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxship": __version__,
        "torch": None,
    }
    torch = sys.modules.get("torch")  # report torch only when this run used it (golden-only runs need none)
    if torch is not None:
        env["torch"] = str(getattr(torch, "__version__", None))
    return env


class _Casts:
    """Each engine gets the batch in the dtypes it declares (fp16 variants vs an fp32 PyTorch model)."""

    def __init__(self, ort_inputs: dict[str, str], torch_float: str | None) -> None:
        self.ort, self.torch_float = ort_inputs, torch_float

    def for_ort(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for k, v in feeds.items():
            want = self.ort.get(k)
            out[k] = (
                v.astype(want)
                if want and v.dtype.kind == "f" and np.dtype(want).kind == "f" and v.dtype != np.dtype(want)
                else v
            )
        return out

    def for_torch(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.torch_float is None:
            return feeds
        return {
            k: v.astype(self.torch_float)
            if v.dtype.kind == "f" and v.dtype != np.dtype(self.torch_float)
            else v
            for k, v in feeds.items()
        }


_UNSUPPORTED_OP = re.compile(
    r"(?:Could not find an implementation for (?P<a>[\w.]+)\((?P<av>\d+)\)|"
    r"No Op registered for (?P<b>[\w.]+) with domain_version of (?P<bv>\d+)|"
    r"Unrecognized attribute: (?P<attr>\w+) for operator (?P<c>[\w.]+)|"
    r"(?P<d>[\w.]+:[\w.]+)\(-?\d+\) is not a registered function/op)"
)


def unsupported_op_hint(message: str) -> str | None:
    """When onnxruntime refuses an operator: name it and the routes (another opset, a custom op); else None."""
    m = _UNSUPPORTED_OP.search(message)
    if m is None:
        return None
    op = m["a"] or m["b"] or m["c"] or m["d"]
    at = m["av"] or m["bv"]
    what = (
        f"operator {op}"
        + (f" at opset {at}" if at else "")
        + (f" (attribute {m['attr']})" if m["attr"] else "")
    )
    return (
        f"this onnxruntime does not implement {what}: re-export at another opset (onnxship export --opset 18), "
        "upgrade onnxruntime, or register a custom-op library for it (SessionOptions.register_custom_ops_library)"
    )

"""Input specs from Python sample tensors, defaults taken from the model, and safe export dummies.

DO NOT import torch at module level.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxship._errors import ConfigError, InputSpecError
from onnxship.spec._inputs import DTYPES, DimSpec, TensorSpec, parse_input_spec

if TYPE_CHECKING:
    import torch

__all__ = ["bump_dummy_dims", "default_int_ranges", "specs_from_samples", "to_specs"]

_DYN = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:\.\.\s*(\d+))?\s*$")


def _torch_dtype_name(t: torch.Tensor) -> str:
    name = str(t.dtype).replace("torch.", "")
    if name == "bfloat16":  # refused here so every entry point (trace_pytorch too) refuses it before any work
        raise ConfigError(
            "sample input dtype torch.bfloat16 cannot be verified (numpy and most ONNX runtimes have no bfloat16)",
            hint="pass float32 samples (x.float()) and a float32 model, or float16 with fp16=True / --fp16",
        )
    if name not in DTYPES:
        raise ConfigError(
            f"sample input dtype {t.dtype} is not supported", hint=f"supported: {', '.join(DTYPES)}"
        )
    return name


def _normalise_samples(sample_inputs: Any) -> dict[str, Any]:
    import torch

    if isinstance(sample_inputs, torch.Tensor):
        return {"input_0": sample_inputs}
    if isinstance(sample_inputs, dict):
        bad = {k: type(v).__name__ for k, v in sample_inputs.items() if not isinstance(v, torch.Tensor)}
        if bad:
            raise ConfigError(
                f"sample inputs must be tensors; got {bad}", hint="pass torch tensors (dict values)"
            )
        return dict(sample_inputs)
    if isinstance(sample_inputs, (tuple, list)):
        bad_i = [type(v).__name__ for v in sample_inputs if not isinstance(v, torch.Tensor)]
        if bad_i:
            raise ConfigError(
                f"sample inputs must be tensors; got {bad_i}",
                hint="pass a tensor, a tuple of tensors or a dict name -> tensor",
            )
        return {f"input_{i}": v for i, v in enumerate(sample_inputs)}
    raise ConfigError(
        f"sample inputs must be a tensor, a tuple of tensors or a dict; got {type(sample_inputs).__name__}"
    )


def specs_from_samples(
    sample_inputs: Any, dynamic: dict[str, dict[int, str]] | None
) -> tuple[list[TensorSpec], dict[str, Any]]:
    """TensorSpecs (and the tensors by name) from sample tensors plus ``dynamic={input: {axis: "name[..max]"}}``."""
    samples = _normalise_samples(sample_inputs)
    dynamic = dict(dynamic or {})
    unknown = sorted(set(dynamic) - set(samples))
    if unknown:
        raise ConfigError(f"dynamic names inputs {unknown} that are not among the samples {sorted(samples)}")
    specs = []
    for name, t in samples.items():
        axes = {int(a): v for a, v in (dynamic.get(name) or {}).items()}
        dims = []
        for axis, size in enumerate(t.shape):
            if axis in axes:
                m = _DYN.match(str(axes.pop(axis)))
                if not m:
                    raise InputSpecError(f"dynamic dim {axes!r} of {name!r} must be 'name' or 'name..MAX'")
                dims.append(DimSpec(value=int(size), name=m[1], max=int(m[2]) if m[2] else None))
            else:
                dims.append(DimSpec(value=int(size)))
        if axes:
            raise ConfigError(f"dynamic axes {sorted(axes)} of {name!r} exceed its rank {t.dim()}")
        dtype = _torch_dtype_name(t)
        spec = TensorSpec(name=name, dims=tuple(dims), dtype=dtype)
        if spec.is_integer and t.numel():
            spec = spec.with_range(float(t.min()), float(t.max()) + 1, "sample")
        specs.append(spec)
    return specs, samples


def to_specs(inputs: list[str | TensorSpec]) -> list[TensorSpec]:
    specs = [parse_input_spec(s) if isinstance(s, str) else s for s in inputs]
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputSpecError(f"input names given twice: {dupes}")
    return specs


def default_int_ranges(model: torch.nn.Module, specs: list[TensorSpec]) -> tuple[list[TensorSpec], list[str]]:
    """Bound integer inputs without a range by the model's embedding size, so samples are realistic ids."""
    import torch

    sizes = [
        m.num_embeddings
        for m in model.modules()
        if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag))
    ]
    notes = []
    out = []
    for spec in specs:
        if spec.is_integer and spec.low is None and sizes and "mask" not in spec.name.lower():
            high = min(sizes)
            spec = spec.with_range(0, high, "nn.Embedding.num_embeddings")
            notes.append(f"input {spec.name!r}: ids drawn from 0..{high} (the model's nn.Embedding size)")
        out.append(spec)
    return out, notes


def bump_dummy_dims(specs: list[TensorSpec]) -> tuple[list[TensorSpec], list[str]]:
    """Dynamic dims with export value 0 or 1 get 2: a batch-1 dummy makes torch.export specialise the dim."""
    notes = []
    out = []
    for spec in specs:
        dims = []
        for d in spec.dims:
            if d.name and d.value < 2:
                new = 2 if d.max is None else min(2, d.max)
                if new < 2:
                    raise InputSpecError(
                        f"dynamic dim {d.name!r} has max {d.max}: a dynamic dim needs max >= 2",
                        hint=f"make it static ({d.value}) or raise the max",
                    )
                notes.append(
                    f"dim {d.name!r} of {spec.name!r}: export dummy uses {new} instead of {d.value} "
                    f"(a size-{d.value} dummy makes the dynamo exporter specialise the dim; "
                    f"size {d.value} is still verified)"
                )
                d = replace(d, value=new)
            dims.append(d)
        out.append(replace(spec, dims=tuple(dims)))
    return out, notes


def dummy_values(specs: list[TensorSpec], samples: dict[str, Any], seed: int, fp16: bool) -> dict[str, Any]:
    """Torch tensors for the export: the user's samples where their shape fits, generated ones elsewhere."""
    import torch

    from onnxship.spec._inputs import sample_feeds

    generated = sample_feeds(specs, seed=seed)
    values = {}
    for spec in specs:
        t = samples.get(spec.name)
        if t is not None and tuple(t.shape) == spec.shape:
            values[spec.name] = t.detach().cpu()
        else:
            values[spec.name] = torch.from_numpy(np.ascontiguousarray(generated[spec.name]))
        if fp16 and values[spec.name].is_floating_point():
            values[spec.name] = values[spec.name].half()
    return values

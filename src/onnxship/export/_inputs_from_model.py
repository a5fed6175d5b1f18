"""Input specs from Python sample tensors, defaults taken from the model, and safe export dummies.

DO NOT import torch at module level.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxship._errors import ConfigError, InputSpecError
from onnxship.spec._inputs import (
    DTYPES,
    DimSpec,
    TensorSpec,
    parse_dynamic_dim,
    parse_input_specs,
    resolve_specs,
)
from onnxship.spec._values import infer_kinds

if TYPE_CHECKING:
    import torch

__all__ = ["bump_dummy_dims", "default_int_ranges", "specs_from_samples", "to_specs"]


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


def _flatten_dict(prefix: str, value: dict[str, Any], out: dict[str, Any]) -> None:
    import torch

    for key, v in value.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(
                f"sample input key {key!r} under {prefix!r} is not a name",
                hint="nested dict keys become ONNX input names (parent.key): use identifiers",
            )
        name = f"{prefix}.{key}"
        if isinstance(v, dict):
            _flatten_dict(name, v, out)
        elif isinstance(v, torch.Tensor):
            out[name] = v
        else:
            raise ConfigError(
                f"sample input {name!r} is a {type(v).__name__}, not a tensor",
                hint="nested dict values must be tensors (or dicts of tensors)",
            )


def _normalise_samples(sample_inputs: Any) -> dict[str, Any]:
    import torch

    if isinstance(sample_inputs, torch.Tensor):
        return {"input_0": sample_inputs}
    if isinstance(sample_inputs, dict):
        out: dict[str, Any] = {}
        bad = {}
        for k, v in sample_inputs.items():
            if isinstance(v, torch.Tensor):
                out[k] = v
            elif isinstance(v, dict) and isinstance(k, str) and v:
                _flatten_dict(k, v, out)  # forward(self, inputs: dict): ONNX inputs "inputs.image", ...
            else:
                bad[k] = type(v).__name__
        if bad:
            raise ConfigError(
                f"sample inputs must be tensors (or dicts of tensors); got {bad}",
                hint="pass torch tensors (dict values); a dict value feeds a dict parameter of forward()",
            )
        return out
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
    sample_inputs: Any, dynamic: dict[str, dict[int, str]] | None, kinds: dict[str, str] | None = None
) -> tuple[list[TensorSpec], dict[str, Any]]:
    """TensorSpecs (and the tensors by name) from sample tensors plus ``dynamic={input: {axis: "name[..max]"}}``.

    A dynamic dim is ``name``, ``name..MAX``, ``name..MAX/STEP``, ``name/STEP`` or ``name=a+b`` (a sum of other
    dims); ``kinds={input: "mask"}`` declares value kinds. Each spec carries its sample tensor (``meta["sample"]``)
    so that checks at the sample's shape use it exactly as given. Nested dict samples are flattened to names like
    ``inputs.image``.
    """
    samples = _normalise_samples(sample_inputs)
    dynamic = dict(dynamic or {})
    kinds = dict(kinds or {})
    for what, given in (("dynamic", dynamic), ("kinds", kinds)):
        unknown = sorted(set(given) - set(samples))
        if unknown:
            raise ConfigError(
                f"{what} names inputs {unknown} that are not among the samples {sorted(samples)}",
                hint="use the input names (nested dict inputs are named parent.key)",
            )
    specs = []
    for name, t in samples.items():
        axes = {int(a): v for a, v in (dynamic.get(name) or {}).items()}
        dims = []
        for axis, size in enumerate(t.shape):
            if axis in axes:
                dims.append(parse_dynamic_dim(str(axes.pop(axis)), int(size), f"dynamic dim of {name!r}"))
            else:
                dims.append(DimSpec(value=int(size)))
        if axes:
            raise ConfigError(f"dynamic axes {sorted(axes)} of {name!r} exceed its rank {t.dim()}")
        dtype = _torch_dtype_name(t)
        spec = TensorSpec(name=name, dims=tuple(dims), dtype=dtype)
        spec.meta["sample"] = t.detach().cpu().numpy()  # bfloat16 was refused by _torch_dtype_name
        if name in kinds:
            from onnxship.spec._inputs import parse_kind

            kind, of = parse_kind(str(kinds[name]), dtype, f"value kind of {name!r}")
            spec = spec.with_kind(kind, of, "kinds")
        if spec.is_integer and t.numel() and spec.kind in (None, "ids"):
            spec = spec.with_range(float(t.min()), float(t.max()) + 1, "sample")
        specs.append(spec)
    return resolve_specs(specs), samples


def to_specs(inputs: list[str | TensorSpec]) -> list[TensorSpec]:
    return parse_input_specs(list(inputs))


def _embedding_consumers(
    model: torch.nn.Module, specs: list[TensorSpec], names: list[str], low: int
) -> dict[str, int]:
    """For id inputs fed straight into an nn.Embedding/EmbeddingBag: that embedding's size (one probe forward)."""
    import torch

    from onnxship.spec._binding import bind_inputs
    from onnxship.spec._inputs import sample_feeds

    probe_specs = [s.with_range(0, low) if s.name in names else s for s in specs]
    try:
        tensors = {k: torch.from_numpy(v) for k, v in sample_feeds(probe_specs, seed=0).items()}
        binding = bind_inputs(model, [s.name for s in specs])
    except Exception:  # the probe is an optimisation: keep the safe default
        return {}
    seen: dict[str, list[int]] = {}

    def record(mod: Any, args: tuple[Any, ...]) -> None:
        for n in names:
            t = tensors[n]
            a = args[0] if args else None
            if a is t or (
                isinstance(a, torch.Tensor) and a.numel() == t.numel() and a.data_ptr() == t.data_ptr()
            ):  # the input itself or a view of it (reshape, flatten)
                seen.setdefault(n, []).append(int(mod.num_embeddings))

    hooks = [
        m.register_forward_pre_hook(record)
        for m in model.modules()
        if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag))
    ]
    try:
        args, kwargs = binding.call_args(tensors)
        with torch.inference_mode():
            model(*args, **kwargs)
    except Exception:  # the user's model: any failure means "use the safe default"
        return {}
    finally:
        for h in hooks:
            h.remove()
    return {n: min(v) for n, v in seen.items()}


def default_int_ranges(model: torch.nn.Module, specs: list[TensorSpec]) -> tuple[list[TensorSpec], list[str]]:
    """Infer obvious value kinds (masks, offsets, lengths; see ``infer_kinds``) and bound integer ids without a range
    by the size of the nn.Embedding they feed (else the model's smallest), so samples are realistic ids."""
    import torch

    sizes = [
        m.num_embeddings
        for m in model.modules()
        if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag))
    ]
    specs, notes = infer_kinds(list(specs))
    ids = [
        s.name
        for s in specs
        if s.is_integer and s.low is None and s.kind in (None, "ids") and "mask" not in s.name.lower()
    ]
    if not (ids and sizes):
        return specs, notes
    fed = _embedding_consumers(model, specs, ids, min(sizes))
    out = []
    for spec in specs:
        if spec.name in ids:
            high = fed.get(spec.name, min(sizes))
            spec = spec.with_range(0, high, "nn.Embedding.num_embeddings")
            why = (
                "the size of the nn.Embedding it feeds"
                if spec.name in fed
                else "the model's smallest nn.Embedding"
            )
            notes.append(f"input {spec.name!r}: ids drawn from 0..{high} ({why})")
        out.append(spec)
    return out, notes


def bump_dummy_dims(specs: list[TensorSpec]) -> tuple[list[TensorSpec], list[str]]:
    """Dynamic dims with export value 0 or 1 get 2: a batch-1 dummy makes torch.export specialise the dim."""
    notes = []
    out = []
    for spec in specs:
        dims = []
        for d in spec.dims:
            if d.name and d.value < 2 and not d.parts:
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
    if notes:  # derived dims (total=past+seq) follow their bumped parts
        out = resolve_specs(
            [replace(s, dims=tuple(replace(d, value=0) if d.parts else d for d in s.dims)) for s in out]
        )
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

"""The trained model and its sample input, as ``trace_pytorch`` and ``log_onnx_model`` receive them: dynamic dims
from the arguments, sample validation, the model's train/eval modes, a CPU copy for export, and output names.

DO NOT import torch at module level.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from onnxship._errors import ConfigError

_OUTPUT_KEY = re.compile(r"^output(_\d+)?$")
_DIM_NAME = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:\.\.\s*(\d+))?\s*$")


def _describe(obj: Any) -> str:
    if obj is None:
        return "None (is the `return model` missing?)"
    if isinstance(obj, tuple):
        return f"a tuple ({', '.join(type(v).__name__ for v in obj)})"
    if isinstance(obj, dict):
        return f"a dict with keys {list(obj)[:6]}"
    if isinstance(obj, str):
        return f"a str ({obj[:60]!r})"
    kind = (
        type(obj).__name__
        if type(obj).__module__ == "builtins"
        else f"{type(obj).__module__}.{type(obj).__name__}"
    )
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _dynamic_from(
    samples: dict[str, Any], dynamic_axes: Any, max_batch_size: int | None, named_outputs: bool = False
) -> dict[str, dict[int, str]]:
    """onnxship's ``dynamic=`` from ``dynamic_axes`` (default: axis 0 of every input is ``batch``), every name and
    axis checked; ``max_batch_size`` becomes the batch dim's declared maximum (so the sweep verifies it)."""
    if dynamic_axes is None:
        dynamic = {n: {0: "batch"} for n, t in samples.items() if t.dim() >= 1}
    elif not isinstance(dynamic_axes, dict):
        raise ConfigError(
            f"dynamic_axes must be a dict name -> {{axis: dim_name}}; got {type(dynamic_axes).__name__}",
            hint="e.g. dynamic_axes={'input_0': {0: 'batch', 1: 'seq'}}",
        )
    else:
        dynamic = {}
        for key, axes in dynamic_axes.items():
            # outputs: output_N, or any name when the outputs are named by forward()'s dict keys
            is_output = (
                key not in samples
                and isinstance(key, str)
                and bool(_OUTPUT_KEY.match(key) or (named_outputs and key))
            )
            if key not in samples and not is_output:
                raise ConfigError(
                    f"dynamic_axes names {key!r}, which is not an input; inputs are {list(samples)}",
                    hint="use the sample dict's keys (or 'input_0' for a single tensor); outputs are output_N",
                )
            if isinstance(axes, (list, tuple)) and axes and all(isinstance(a, int) for a in axes):
                # torch.onnx's list form: names are generated (axis 0 is the shared batch dim)
                axes = {a: "batch" if a == 0 else f"{key}_dim{a}" for a in axes}
            if not isinstance(axes, dict) or not axes:
                raise ConfigError(
                    f"dynamic_axes[{key!r}] must map axis numbers to dim names; got {axes!r}",
                    hint="e.g. {0: 'batch', 1: 'seq'}",
                )
            rank = samples[key].dim() if not is_output else None
            clean: dict[int, str] = {}
            for axis, dim in axes.items():
                if not isinstance(axis, int) or isinstance(axis, bool):
                    raise ConfigError(
                        f"dynamic_axes[{key!r}] axis {axis!r} is not an int", hint="e.g. {0: 'batch'}"
                    )
                if not isinstance(dim, str) or not _DIM_NAME.match(dim):
                    raise ConfigError(
                        f"dynamic_axes[{key!r}][{axis}] = {dim!r} is not a dim name",
                        hint="a name like 'batch' or 'seq_len' (letters, digits, '_'; optional '..MAX')",
                    )
                if rank is not None:
                    if not -rank <= axis < rank:
                        raise ConfigError(
                            f"dynamic_axes[{key!r}] names axis {axis}, but the sample {key!r} has rank {rank} "
                            f"(shape {list(samples[key].shape)})",
                            hint=f"axes of {key!r} are 0..{rank - 1}",
                        )
                    clean[axis % rank] = dim.strip()
            if not is_output:
                dynamic[key] = clean  # output dims are taken from the verified model, not the declaration
    sizes: dict[str, tuple[int, str]] = {}
    for key, axes in dynamic.items():
        for axis, dim in axes.items():
            name = _DIM_NAME.match(dim)[1]  # type: ignore[index]
            size = int(samples[key].shape[axis])
            if name in sizes and sizes[name][0] != size:
                raise ConfigError(
                    f"dim {name!r} is {sizes[name][0]} in {sizes[name][1]!r} but {size} in {key!r} "
                    "(one dynamic name is one size at a time)",
                    hint="give the samples the same size on that axis, or use two names",
                )
            sizes[name] = (size, key)
    if max_batch_size:
        batch = [axes.get(0) for axes in dynamic.values()]
        if not dynamic or len(dynamic) != len(samples) or any(b is None for b in batch):
            raise ConfigError(
                f"max_batch_size={max_batch_size} needs a dynamic axis 0 on every input",
                hint="drop dynamic_axes (axis 0 is dynamic by default) or add {0: 'batch'} for every input",
            )
        top = max(2, max_batch_size)  # a dynamic dim needs a max >= 2; Triton still gets max_batch_size
        for axes in dynamic.values():
            m = _DIM_NAME.match(axes[0])
            if m[2] and int(m[2]) != top:  # type: ignore[index]
                raise ConfigError(
                    f"max_batch_size={max_batch_size} but dynamic_axes declares {axes[0]!r}",
                    hint="give the maximum once (max_batch_size)",
                )
            axes[0] = f"{m[1]}..{top}"  # type: ignore[index]
    return dynamic


def _validate_sample(
    sample: Any, dynamic_axes: Any, max_batch_size: int | None, named_outputs: bool = False
) -> dict[str, dict[int, str]]:
    """Check the sample before any training: a tensor or a dict name -> tensor, with exportable dtypes."""
    import torch

    from onnxship.export._inputs_from_model import specs_from_samples

    if isinstance(sample, (tuple, list)):
        raise ConfigError(
            f"sample_input is a {type(sample).__name__} of {len(sample)}; trace_pytorch takes a tensor "
            "or a dict name -> tensor",
            hint="name the inputs after forward()'s parameters: {'image': ..., 'mask': ...}",
        )
    if not isinstance(sample, (torch.Tensor, dict)):
        raise ConfigError(
            f"sample_input is {_describe(sample)}; expected a torch.Tensor or a dict name -> tensor",
            hint="e.g. torch.randn(1, 3, 224, 224) or {'image': torch.randn(1, 3, 224, 224)}",
        )
    samples = {"input_0": sample} if isinstance(sample, torch.Tensor) else dict(sample)
    if isinstance(sample, dict):
        bad = [k for k in sample if not isinstance(k, str) or not k]
        if bad or not sample:
            raise ConfigError(
                f"sample_input dict keys must be non-empty input names; got {list(sample)}",
                hint="e.g. {'image': torch.randn(1, 3, 224, 224)}",
            )
        for key, value in sample.items():
            if not isinstance(value, torch.Tensor):
                raise ConfigError(
                    f"sample_input[{key!r}] is {_describe(value)}; every value must be a torch.Tensor",
                    hint=f"e.g. {key!r}: torch.tensor(...) (a list/tuple/number is not an ONNX input)",
                )
    for key, t in samples.items():
        if t.dtype == torch.bfloat16:
            raise ConfigError(
                f"sample_input {key!r} is bfloat16: ONNX inputs are exported in float32 (bfloat16 has no "
                "MLflow signature or Triton type)",
                hint="pass the sample as float32 (sample.float()); the model is exported in float32",
            )
        if t.is_complex() or t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            raise ConfigError(
                f"sample_input {key!r} has dtype {t.dtype}, which onnxship does not export",
                hint="use float32/float16 or an integer/bool dtype",
            )
        if t.dim() == 0:
            raise ConfigError(
                f"sample_input {key!r} is a 0-d tensor", hint="give it a batch axis: sample.reshape(1)"
            )
        if any(s == 0 for s in t.shape):
            raise ConfigError(f"sample_input {key!r} has an empty axis (shape {list(t.shape)})")
    dynamic = _dynamic_from(samples, dynamic_axes, max_batch_size, named_outputs)
    specs_from_samples(sample, dynamic)  # dtypes, ranks, dynamic axes (raises ConfigError)
    return dynamic


def _check_returned(obj: Any, fn: Callable[..., Any]) -> Any:
    import torch

    if not isinstance(obj, torch.nn.Module):
        raise ConfigError(
            f"{getattr(fn, '__name__', 'the function')}() returned {_describe(obj)}; a @trace_pytorch "
            "function must return the trained torch.nn.Module only",
            hint="return model; log metrics with mlflow.log_metric(...) inside the function",
        )
    return obj


def _modes(model: Any) -> list[tuple[Any, bool]]:
    """Every submodule's training flag (a fine-tuned model often keeps some in eval, e.g. frozen BatchNorm)."""
    return [(m, m.training) for m in model.modules()]


def _restore(modes: list[tuple[Any, bool]]) -> None:
    for m, training in modes:
        m.training = training


def _cpu_model(model: Any, force_copy: bool = False) -> Any:
    """The model to export: the model itself when it lives on the CPU (ship() restores nothing but the mode, which
    the caller restores), else a CPU copy made tensor by tensor, so the user's model never leaves its device (and
    no second copy is made on the accelerator)."""
    import copy

    import torch

    tensors = list(model.parameters()) + list(model.buffers())
    if not force_copy and all(t.device.type in ("cpu", "meta") for t in tensors):
        return model  # (meta tensors: export refuses them with a clear error)
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = torch.nn.Parameter(p.detach().to("cpu", copy=True), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = b.detach().to("cpu", copy=True)
    try:
        clone = copy.deepcopy(model, memo)
    except Exception as exc:  # user code: a module attribute that cannot be copied
        raise ConfigError(
            f"the model is on {sorted({str(t.device) for t in tensors})} and cannot be copied to the CPU for "
            f"export ({type(exc).__name__}: {exc})",
            hint="make the module deep-copyable, or move it to the CPU before returning it",
        ) from None
    return clone.to("cpu")


def _output_names(model: Any, sample: Any, dict_output_keys: bool) -> tuple[list[str] | None, str]:
    """Output names and how they were chosen: ``output_N`` by position, or the keys of forward()'s dict."""
    if not dict_output_keys:
        return None, "position (output_N)"
    import torch

    from onnxship.spec._binding import bind_inputs

    samples = {"input_0": sample} if isinstance(sample, torch.Tensor) else dict(sample)
    binding = bind_inputs(model, list(samples))
    args, kwargs = binding.call_args({k: v.detach().cpu() for k, v in samples.items()})
    modes = _modes(model)
    try:
        model.eval()
        with torch.inference_mode():
            out = model(*args, **kwargs)
    finally:
        _restore(modes)
    if not isinstance(out, dict) or not out or not all(isinstance(v, torch.Tensor) for v in out.values()):
        what = f"a dict with non-tensor values ({list(out)[:6]})" if isinstance(out, dict) else _describe(out)
        raise ConfigError(
            f"dict_output_keys=True, but forward() returned {what}",
            hint="return a flat dict name -> tensor from forward(), or drop dict_output_keys (names output_N)",
        )
    keys = list(out)
    bad = [k for k in keys if not isinstance(k, str) or not re.fullmatch(r"[A-Za-z_][\w.\-/]*", k)]
    if bad:
        raise ConfigError(
            f"forward()'s dict keys {bad} cannot be ONNX output names",
            hint="use identifiers like 'logits', 'boxes'",
        )
    return keys, "dict keys"

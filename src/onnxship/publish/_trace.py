"""``@trace_pytorch`` (train inside an MLflow run, then export → verify → bundle → publish) and ``log_onnx_model``.

A drop-in for a keynet-train style decorator: the decorated function still returns the trained model (in the mode
and on the device it had); the publish result is ``<function>.last_result`` / ``onnxship.publish.last_result()``.
Everything that can be checked from the decorator's arguments is checked when it is applied, the environment
(tracking store, S3 credentials, notification target) before the training function runs.
DO NOT import torch or mlflow at module level.

Size: over 400 lines on purpose: ``trace_pytorch`` and ``log_onnx_model`` share the argument checks, the
sample/dynamic-dim handling and the ship-then-publish steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onnxship._errors import CheckError, ConfigError
from onnxship._util import check_name, git_sha, utc_now
from onnxship.publish._api import (
    _pre_checks,
    _triton_text,
    golden_check,
    log_release,
    notify_in_run,
    prepare_target,
)
from onnxship.publish._bundle import BundleView, open_bundle
from onnxship.publish._config import (
    NotifyConfig,
    PublishConfig,
    PublishResult,
    check_no_secrets,
    experiment_name,
)

__all__ = ["last_result", "log_onnx_model", "trace_pytorch"]

_OUTPUT_KEY = re.compile(r"^output(_\d+)?$")
_DIM_NAME = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:\.\.\s*(\d+))?\s*$")
_LAST: list[PublishResult] = []
# keyword arguments other tools take that mean something else here
_KWARG_HINTS = {
    "output_names": "outputs are output_0..N; return a dict from forward() and pass dict_output_keys=True "
    "to name them by its keys",
    "input_names": "inputs are named by the sample: pass a dict name -> tensor as sample_input",
    "opset_version": "onnxship picks each exporter's opset (dynamo 18, TorchScript 17; onnxship.yaml export.opsets)",
    "opset": "onnxship picks each exporter's opset (dynamo 18, TorchScript 17; onnxship.yaml export.opsets)",
}


def last_result() -> PublishResult | None:
    """The PublishResult of the most recent ``@trace_pytorch`` call in this process (None before the first)."""
    return _LAST[-1] if _LAST else None


def _publish_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(PublishConfig)]


def _check_kwargs(options: dict[str, Any], own: list[str], where: str) -> None:
    """Unknown keyword arguments are one clear ConfigError (never a TypeError after training)."""
    valid = sorted(set(own) | set(_publish_fields()))
    unknown = [k for k in options if k not in _publish_fields()]
    if not unknown:
        return
    key = unknown[0]
    close = difflib.get_close_matches(key, valid, n=1)
    hint = _KWARG_HINTS.get(key) or (f"did you mean {close[0]!r}? " if close else "") + "valid: " + ", ".join(
        valid
    )
    raise ConfigError(f"{where} got unknown keyword argument(s) {unknown}", hint=hint)


def _check_name(name: str) -> None:
    check_name(name, "model name")


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


def _ship_bundle(
    model: Any,
    sample: Any,
    dynamic: dict[str, dict[int, str]],
    name: str,
    releases: Path,
    export_options: dict[str, Any],
    output_names: list[str] | None,
    names_from: str,
) -> BundleView:
    """Ship the trained model (gated export -> verify -> golden -> bundle) and open the committed release."""
    from onnxship.export._inputs_from_model import specs_from_samples
    from onnxship.ship import ship
    from onnxship.spec import ShipConfig

    specs, _ = specs_from_samples(sample, dynamic)
    cfg = export_options.get("ship_config") or ShipConfig()
    cfg.model.name = name
    cfg.paths.releases = str(releases)
    if export_options["strategy"] is not None:
        cfg.export.strategy = export_options["strategy"]
    cfg.export.allow_static = bool(export_options["allow_static"] or cfg.export.allow_static)
    cfg.export.output_names = output_names
    cfg.export.metadata = {"output_names_from": names_from}
    modes = _modes(model)
    try:
        result = ship(model, inputs=specs, config=cfg)
    finally:
        _restore(modes)  # ship() exports in eval(); the user's model keeps its modes
    return open_bundle(result.path)


_OWN_OPTIONS = [
    "model_name",
    "sample_input",
    "dynamic_axes",
    "enable_autolog",
    "config",
    "strategy",
    "allow_static",
    "out",
    "max_batch_size",
    "dict_output_keys",
    "return_result",
]


def trace_pytorch(
    model_name: str,
    sample_input: Any,
    dynamic_axes: dict[str, dict[int, str]] | None = None,
    enable_autolog: bool = True,
    *,
    config: PublishConfig | None = None,
    strategy: str | None = None,
    allow_static: bool = False,
    out: str | Path | None = None,
    max_batch_size: int | None = None,
    dict_output_keys: bool = False,
    return_result: bool = False,
    **publish_options: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a training function: it runs inside an MLflow run; the model it returns is exported, verified and
    published to that run, and handed back to the caller.

    Args:
        model_name: the model's name; the experiment is ``{MODEL_ID}_{model_name}`` or ``model_name``.
        sample_input: a tensor (ONNX input ``input_0``) or a dict name -> tensor (bound to forward() by name).
        dynamic_axes: ``{input: {axis: dim_name}}``; default axis 0 of every input is dynamic (``batch``). Output
            entries (``output_N``) are accepted and ignored: output dims come from the verified model.
        enable_autolog: log the models into the run: ONNX (``mlflow.onnx.log_model``, + registration) and PyTorch
            (``mlflow.pytorch.log_model``, unless ``log_pytorch=False``). False: the bundle only.
        config: PublishConfig (tracking URI, register/alias, notify, ...); ``publish_options`` override its fields
            (an unknown keyword is a ConfigError at decoration time).
        strategy: export strategy (auto | dynamo | torchscript); default ``ONNXSHIP_EXPORT_STRATEGY``, else auto.
            Other ``ONNXSHIP_<SECTION>_<KEY>`` export/verify settings of the environment apply as in ``ship``.
        allow_static: accept a static export when no dynamic candidate verifies (recorded loudly).
        out: releases folder to keep the bundle in (default: a temporary folder).
        max_batch_size: the Triton config's max_batch_size; the batch dim is verified up to it (0: no batching;
            None: the largest verified batch).
        dict_output_keys: name the ONNX outputs by the keys of the dict forward() returns (recorded as the run
            param ``onnxship.output_names_from``); default ``output_0..N`` by position.
        return_result: return the PublishResult instead of the model.

    Returns:
        The decorated function returns the trained model, in the training mode and on the device it had; the
        PublishResult is ``<function>.last_result`` (and ``onnxship.publish.last_result()``). An error after
        training carries the model as ``err.model``; the run is then marked FAILED.

    Example:
        >>> @trace_pytorch("mnist-classifier", {"image": torch.randn(1, 1, 28, 28)})  # doctest: +SKIP
        ... def train():
        ...     mlflow.log_metric("loss", 0.1)
        ...     return model
        >>> model = train()  # doctest: +SKIP
        >>> train.last_result.model_uri  # doctest: +SKIP
    """
    _check_kwargs(publish_options, _OWN_OPTIONS, "trace_pytorch()")
    _check_name(model_name)
    if max_batch_size is not None and (
        isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 0
    ):
        raise ConfigError(
            f"max_batch_size={max_batch_size!r} must be an int >= 0",
            hint="e.g. max_batch_size=32 (0: no batching)",
        )
    if strategy is not None and strategy not in ("auto", "dynamo", "torchscript"):
        raise ConfigError(f"unknown export strategy {strategy!r}", hint="valid: auto, dynamo, torchscript")
    if isinstance(publish_options.get("notify"), str):
        publish_options["notify"] = NotifyConfig(publish_options["notify"])
    base = {f: getattr(config, f) for f in _publish_fields()} if config else {}
    if max_batch_size is not None:
        publish_options["triton_max_batch_size"] = max_batch_size
    cfg = PublishConfig(**{**base, **publish_options})
    if not enable_autolog and cfg.register:
        raise ConfigError(
            f"register={cfg.register!r} needs the model logged, but enable_autolog=False",
            hint="drop register, or keep enable_autolog=True",
        )
    cfg.log_model = bool(enable_autolog and cfg.log_model)
    cfg.log_pytorch = bool(enable_autolog and cfg.log_pytorch)
    dynamic = _validate_sample(sample_input, dynamic_axes, max_batch_size, dict_output_keys)
    export_options = {"strategy": strategy, "allow_static": allow_static}

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(fn):
            raise ConfigError(
                f"@trace_pytorch(...) decorates a function; got {_describe(fn)}",
                hint="put @trace_pytorch('name', sample) on the line above `def train(): ...`",
            )

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from onnxship.publish import _mlflow

            target, run_cfg = prepare_target(cfg)  # before any training
            options = {**export_options, "ship_config": _env_ship_config()}
            exp_name = experiment_name(model_name, cfg.experiment)
            with (
                tempfile.TemporaryDirectory(prefix=f"onnxship-{model_name}-") as tmp,
                _mlflow.tracking(target),
            ):
                releases = Path(out) if out is not None else Path(tmp) / "releases"
                exp_id = _mlflow.ensure_experiment(exp_name, target)
                _mlflow.check_artifact_store(exp_id, exp_name)
                with _mlflow.active_run(
                    exp_id, cfg.run_name or model_name, {"onnxship.source": "trace_pytorch"}
                ) as run:
                    model = _check_returned(fn(*args, **kwargs), fn)
                    try:
                        result = _publish_trained(
                            model,
                            sample_input,
                            dynamic,
                            model_name,
                            releases,
                            options,
                            dict_output_keys,
                            run_cfg,
                            target,
                            run,
                            exp_name,
                        )
                    except BaseException as exc:
                        with contextlib.suppress(Exception):
                            exc.model = model  # type: ignore[attr-defined]
                        raise
            wrapper.last_result = result  # type: ignore[attr-defined]
            _LAST[:] = [result]
            return result if return_result else model

        wrapper.last_result = None  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _env_ship_config() -> Any:
    """ShipConfig with the environment's ``ONNXSHIP_<SECTION>_<KEY>`` overrides (a bad one fails before training)."""
    import os

    from onnxship.spec import ShipConfig

    if not any(k.startswith("ONNXSHIP_") for k in os.environ):
        return ShipConfig()
    from onnxship.spec._config import _env_overrides

    # only the keys the environment sets are validated (defaults stay defaults)
    cfg = ShipConfig.from_dict(_env_overrides(dict(os.environ)), base=None, where="ONNXSHIP_* environment")
    if cfg.export.strategy not in ("auto", "dynamo", "torchscript"):
        raise ConfigError(
            f"ONNXSHIP_EXPORT_STRATEGY={cfg.export.strategy!r} is not an export strategy",
            hint="valid: auto, dynamo, torchscript",
        )
    return cfg


def _publish_trained(
    model: Any,
    sample: Any,
    dynamic: dict[str, dict[int, str]],
    name: str,
    releases: Path,
    export_options: dict[str, Any],
    dict_output_keys: bool,
    cfg: PublishConfig,
    target: Any,
    run: Any,
    exp_name: str,
) -> PublishResult:
    export_model = _cpu_model(model)
    names, names_from = _output_names(export_model, sample, dict_output_keys)
    view = _ship_bundle(export_model, sample, dynamic, name, releases, export_options, names, names_from)
    check = _pre_checks(view, cfg)
    result = log_release(
        view, cfg, target, check, run, exp_name, source="trace_pytorch", pytorch_model=export_model
    )
    return notify_in_run(result, cfg)


def log_onnx_model(
    experiment_name: str,
    onnx_model_path: str | Path,
    metadata: dict[str, Any] | None = None,
    *,
    golden: str | Path | None = None,
    max_batch_size: int | None = None,
    config: PublishConfig | None = None,
    **publish_options: Any,
) -> PublishResult:
    """Log an ONNX model from any framework: check the file, read its signature, verify it against a golden file
    (if given), run it at a few batch sizes, and log it with the user's metadata and the same checked Triton
    ``config.pbtxt`` as ``package triton`` into a new run of ``experiment_name``.

    Returns:
        PublishResult; ``onnx_uri`` (also ``str(result)``) is where the ONNX file was uploaded.

    Raises:
        CheckError: the file is missing, not ONNX, fails onnx.checker or does not load in onnxruntime.
        VerificationError: the model does not reproduce the golden outputs.

    Example:
        >>> log_onnx_model("tf-export", "model.onnx", {"framework": "tensorflow"})  # doctest: +SKIP
    """
    import onnx

    from onnxship.inspect import load_onnx_checked
    from onnxship.onnxfile import external_data_files, file_sha256
    from onnxship.package._release import version_tag
    from onnxship.publish import _mlflow
    from onnxship.verify import OnnxRuntimeRunner

    _check_kwargs(
        publish_options,
        ["experiment_name", "onnx_model_path", "metadata", "golden", "max_batch_size"],
        "log_onnx_model()",
    )
    if max_batch_size is not None:
        publish_options["triton_max_batch_size"] = max_batch_size
    metadata = dict(metadata or {})
    check_no_secrets(metadata, "metadata keys")
    if not experiment_name or not str(experiment_name).strip():
        raise ConfigError("experiment_name is empty", hint="e.g. log_onnx_model('tf-export', 'model.onnx')")
    base = {f: getattr(config, f) for f in _publish_fields()} if config else {}
    cfg = PublishConfig(**{**base, **publish_options, "experiment": experiment_name})
    path = Path(onnx_model_path)
    proto = load_onnx_checked(path)
    try:
        onnx.checker.check_model(str(path))
    except (onnx.checker.ValidationError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckError(
            f"{path.name} fails onnx.checker: {first[:300]}",
            hint="re-export the model; check the exporter's opset",
        ) from None
    runner = OnnxRuntimeRunner(path)  # loads in onnxruntime (CheckError/OnnxshipError otherwise)
    check = golden_check(path, Path(golden)) if golden is not None else None
    name = re.sub(r"[^A-Za-z0-9_-]", "_", path.stem) or "model"
    meta = {"model_name": name, "onnx_sha256": file_sha256(path), **{k: v for k, v in metadata.items()}}
    files = [path.name] + [p.name for p in external_data_files(path, proto)]
    version = version_tag(name, utc_now(), git_sha())
    view = BundleView(
        path=path.parent.resolve(),
        name=name,
        version=version,
        model_path=path,
        meta=meta,
        golden_path=Path(golden) if golden else None,
        report=None,
        passed=None,
        only=[Path(f) for f in files],
    )
    triton_release = None
    if cfg.triton_config:
        triton_release = _own_release(path) or _file_release(
            path, proto, name, version, Path(golden) if golden else None, runner, max_batch_size
        )
    if triton_release is not None and cfg.triton_max_batch_size:
        _triton_text(
            view, cfg, triton_release
        )  # a max batch size the model does not run at fails before the run
    target, cfg = prepare_target(cfg)
    with _mlflow.tracking(target):
        exp_id = _mlflow.ensure_experiment(experiment_name, target)
        _mlflow.check_artifact_store(exp_id, experiment_name)
        with _mlflow.active_run(exp_id, cfg.run_name or name, {"onnxship.source": "log_onnx_model"}) as run:
            if metadata:
                _mlflow.mlflow_module().log_dict(metadata, "metadata.json")
            result = log_release(
                view,
                cfg,
                target,
                check,
                run,
                experiment_name,
                source="log_onnx_model",
                triton_release=triton_release,
            )
            notify_in_run(result, cfg)
    return result


def _own_release(path: Path) -> Any:
    """The onnxship release the file is the model of (its verified signature then makes the Triton config)."""
    from onnxship._errors import OnnxshipError
    from onnxship.package._release import MANIFEST, read_release

    if not (path.parent / MANIFEST).is_file():
        return None
    try:
        rel = read_release(path.parent)
    except OnnxshipError:
        return None
    return rel if rel.model_path.resolve() == path.resolve() else None


def _file_release(
    path: Path,
    proto: Any,
    name: str,
    version: str,
    golden: Path | None,
    runner: Any,
    max_batch_size: int | None,
) -> Any:
    """A Release view of a bare ONNX file for the Triton config: input specs from the declared graph (sizes from the
    golden inputs when given), the batch dim verified by running the model at batch 1, 2 (and max_batch_size) in
    onnxruntime. None when an input dtype has no spec (the Triton tag then says why)."""
    from dataclasses import dataclass

    from onnxship.onnxfile import declared_io
    from onnxship.package._release import Release
    from onnxship.spec._inputs import DTYPES, DimSpec, TensorSpec, sample_feeds

    @dataclass
    class _FileRelease(Release):
        golden: Path | None = None

        @property
        def golden_path(self) -> Path | None:  # type: ignore[override]
            return self.golden

    gold_in: dict[str, Any] = {}
    if golden is not None:
        from onnxship.verify import read_golden

        gold_in = dict(read_golden(golden).inputs)
    io = declared_io(proto)
    specs = []
    for entry in io["inputs"]:
        if entry["dtype"] not in DTYPES:
            return None
        g = gold_in.get(entry["name"])
        dims = []
        for axis, d in enumerate(entry["shape"]):
            if isinstance(d, int) and d > 0:
                dims.append(DimSpec(value=d))
                continue
            value = int(g.shape[axis]) if g is not None and g.ndim == len(entry["shape"]) else 1
            dim_name = (
                d if isinstance(d, str) and d else ("batch" if axis == 0 else f"{entry['name']}_{axis}")
            )
            dims.append(DimSpec(value=max(1, value), name=dim_name))
        spec = TensorSpec(name=entry["name"], dims=tuple(dims), dtype=entry["dtype"])
        if spec.is_integer:
            spec = spec.with_range(0, 1, "zeros: ids valid for any vocabulary")
        specs.append(spec)
    first = specs[0].dims[0] if specs and specs[0].dims else None
    verified: list[dict[str, int]] = []
    if first is not None and first.dynamic:
        batch = str(first.name)
        for size in sorted({1, 2, int(first.value), *([max_batch_size] if max_batch_size else [])}):
            feeds = sample_feeds(specs, {batch: size})
            try:
                outs = runner.infer(feeds)
            except Exception:  # noqa: BLE001 - a size the model does not run at is simply not verified
                continue
            if all(getattr(o, "ndim", 0) >= 1 and o.shape[0] == size for o in outs.values()):
                verified.append({batch: size})
    manifest = {"name": name, "version": version, "model_file": path.name}
    meta = {"inputs": [s.to_dict() for s in specs], "verified_dims": verified}
    return _FileRelease(path=path.parent.resolve(), manifest=manifest, meta=meta, golden=golden)

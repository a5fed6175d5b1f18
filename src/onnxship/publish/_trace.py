"""``@trace_pytorch`` (train inside an MLflow run, then export → verify → bundle → publish).

A drop-in for a keynet-train style decorator: the decorated function still returns the trained model (in the mode
and on the device it had); the publish result is ``<function>.last_result`` / ``onnxship.publish.last_result()``.
Everything that can be checked from the decorator's arguments is checked when it is applied, the environment
(tracking store, S3 credentials, notification target) before the training function runs.
DO NOT import torch or mlflow at module level.

The model/sample handling is in ``_sample.py``; ``log_onnx_model`` (shares the keyword checks) in ``_log_model.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onnxship import _progress
from onnxship._errors import ConfigError
from onnxship._util import check_name
from onnxship.publish._api import notify_in_run, prepare_target
from onnxship.publish._bundle import BundleView, open_bundle
from onnxship.publish._checks import _pre_checks
from onnxship.publish._config import (
    NotifyConfig,
    PublishConfig,
    PublishResult,
    experiment_name,
)
from onnxship.publish._record import log_release
from onnxship.publish._sample import (
    _check_returned,
    _cpu_model,
    _describe,
    _modes,
    _output_names,
    _restore,
    _validate_sample,
)

__all__ = ["last_result", "trace_pytorch"]

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
            with _progress.ensure_reporter():  # training + ship + publish take a while: say what is going on
                return _traced(*args, **kwargs)

        def _traced(*args: Any, **kwargs: Any) -> Any:
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
                    with _progress.stage(f"{model_name}: training ({getattr(fn, '__name__', 'fn')})"):
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
    with _progress.stage(f"{name}: logging to MLflow"):
        result = log_release(
            view, cfg, target, check, run, exp_name, source="trace_pytorch", pytorch_model=export_model
        )
    return notify_in_run(result, cfg)

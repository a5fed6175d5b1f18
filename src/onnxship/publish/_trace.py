"""``@trace_pytorch`` (train inside an MLflow run, then export → verify → bundle → publish) and ``log_onnx_model``.

DO NOT import torch or mlflow at module level.
"""

from __future__ import annotations

import functools
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from onnxship import _progress
from onnxship._errors import CheckError, ConfigError
from onnxship._util import check_name, git_sha, utc_now
from onnxship.publish._api import _pre_checks, golden_check, log_release, notify_published
from onnxship.publish._bundle import BundleView, open_bundle
from onnxship.publish._config import (
    NotifyConfig,
    PublishConfig,
    PublishResult,
    check_no_secrets,
    experiment_name,
    resolve_tracking,
)

__all__ = ["log_onnx_model", "trace_pytorch"]

F = TypeVar("F", bound=Callable[..., Any])
_OUTPUT_KEY = re.compile(r"^output(_\d+)?$")


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
    return f"a {type(obj).__module__}.{type(obj).__name__}"


def _dynamic_from(sample: Any, dynamic_axes: dict[str, dict[int, str]] | None) -> dict[str, dict[int, str]]:
    """onnxship's ``dynamic=`` from seed-003 ``dynamic_axes`` (default: axis 0 of every input is ``batch``)."""
    import torch

    samples = {"input_0": sample} if isinstance(sample, torch.Tensor) else dict(sample)
    if dynamic_axes is None:
        return {n: {0: "batch"} for n, t in samples.items() if t.dim() >= 1}
    if not isinstance(dynamic_axes, dict):
        raise ConfigError(
            f"dynamic_axes must be a dict name -> {{axis: dim_name}}; got {type(dynamic_axes).__name__}",
            hint="e.g. dynamic_axes={'input_0': {0: 'batch', 1: 'seq'}}",
        )
    dynamic: dict[str, dict[int, str]] = {}
    for key, axes in dynamic_axes.items():
        if key not in samples:
            if _OUTPUT_KEY.match(str(key)):
                continue  # output dims are taken from verified behaviour, not from the declaration
            raise ConfigError(
                f"dynamic_axes names {key!r}, which is not an input; inputs are {list(samples)}",
                hint="use the sample dict's keys (or 'input_0' for a single tensor)",
            )
        if not isinstance(axes, dict) or not all(
            isinstance(a, int) and isinstance(n, str) for a, n in axes.items()
        ):
            raise ConfigError(
                f"dynamic_axes[{key!r}] must map axis numbers to dim names; got {axes!r}",
                hint="e.g. {0: 'batch', 1: 'seq'}",
            )
        dynamic[key] = dict(axes)
    return dynamic


def _validate_sample(
    sample: Any, dynamic_axes: dict[str, dict[int, str]] | None
) -> dict[str, dict[int, str]]:
    """Check the sample before any training: a tensor or a dict name -> tensor, with supported dtypes."""
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
    if isinstance(sample, dict):
        bad = [k for k in sample if not isinstance(k, str) or not k]
        if bad or not sample:
            raise ConfigError(f"sample_input dict keys must be non-empty input names; got {list(sample)}")
    dynamic = _dynamic_from(sample, dynamic_axes)
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


def _ship_bundle(
    model: Any,
    sample: Any,
    dynamic: dict[str, dict[int, str]],
    name: str,
    releases: Path,
    export_options: dict[str, Any],
) -> BundleView:
    """Ship the trained model (gated export -> verify -> golden -> bundle) and open the committed release."""
    from onnxship.export._inputs_from_model import specs_from_samples
    from onnxship.ship import ship
    from onnxship.spec import ShipConfig

    specs, _ = specs_from_samples(sample, dynamic)
    cfg = ShipConfig()
    cfg.model.name = name
    cfg.paths.releases = str(releases)
    cfg.export.strategy = export_options["strategy"]
    cfg.export.allow_static = export_options["allow_static"]
    was_training = model.training
    try:
        result = ship(model, inputs=specs, config=cfg)
    finally:
        model.train(was_training)  # ship() exports in eval(); the user's model keeps its mode
    return open_bundle(result.path)


def trace_pytorch(
    model_name: str,
    sample_input: Any,
    dynamic_axes: dict[str, dict[int, str]] | None = None,
    enable_autolog: bool = True,
    *,
    config: PublishConfig | None = None,
    strategy: str = "auto",
    allow_static: bool = False,
    out: str | Path | None = None,
    **publish_options: Any,
) -> Callable[[F], F]:
    """Decorate a training function: it runs inside an MLflow run; the model it returns is exported, verified and
    published to that run.

    Args:
        model_name: the model's name; the experiment is ``{MODEL_ID}_{model_name}`` or ``model_name``.
        sample_input: a tensor (ONNX input ``input_0``) or a dict name -> tensor (bound to forward() by name).
        dynamic_axes: ``{input: {axis: dim_name}}``; default axis 0 of every input is dynamic (``batch``). Output
            entries are accepted and ignored: output dims come from the verified model.
        enable_autolog: log the ONNX model (``mlflow.onnx.log_model``, + registration) into the run.
        config: PublishConfig (tracking URI, register/alias, notify, ...); ``publish_options`` override its fields.
        strategy: export strategy (auto | dynamo | torchscript).
        allow_static: accept a static export when no dynamic candidate verifies (recorded loudly).
        out: releases folder to keep the bundle in (default: a temporary folder; the bundle is uploaded to the run
            as ``bundle/`` either way).

    The sample is checked at decoration time (before any training); the return value after. A failure anywhere
    marks the run FAILED. The decorated function returns a PublishResult.

    Example:
        >>> @trace_pytorch("mnist-classifier", {"image": torch.randn(1, 1, 28, 28)})  # doctest: +SKIP
        ... def train():
        ...     mlflow.log_metric("loss", 0.1)
        ...     return model
    """
    _check_name(model_name)
    if isinstance(publish_options.get("notify"), str):
        publish_options["notify"] = NotifyConfig(publish_options["notify"])
    cfg = PublishConfig(**{**(config.__dict__ if config else {}), **publish_options})
    if not enable_autolog and cfg.register:
        raise ConfigError(
            f"register={cfg.register!r} needs the model logged, but enable_autolog=False",
            hint="drop register, or keep enable_autolog=True",
        )
    cfg.log_model = bool(enable_autolog and cfg.log_model)
    dynamic = _validate_sample(sample_input, dynamic_axes)
    export_options = {"strategy": strategy, "allow_static": allow_static}

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> PublishResult:
            with _progress.ensure_reporter():  # training + ship + publish take a while: say what is going on
                return _traced(fn, args, kwargs)

        def _traced(fn: F, args: Any, kwargs: Any) -> PublishResult:
            from onnxship.publish import _mlflow

            _mlflow.ensure_no_active_run()
            target = resolve_tracking(cfg.tracking_uri, cfg.store_dir)
            _mlflow.check_reachable(target, cfg.connect_timeout)
            exp_name = experiment_name(model_name, cfg.experiment)
            with (
                tempfile.TemporaryDirectory(prefix=f"onnxship-{model_name}-") as tmp,
                _mlflow.tracking(target),
            ):
                releases = Path(out) if out is not None else Path(tmp) / "releases"
                exp_id = _mlflow.ensure_experiment(exp_name, target)
                with _mlflow.active_run(
                    exp_id, cfg.run_name or model_name, {"onnxship.source": "trace_pytorch"}
                ) as run:
                    with _progress.stage(f"{model_name}: training ({fn.__name__})"):
                        model = _check_returned(fn(*args, **kwargs), fn)
                    view = _ship_bundle(model, sample_input, dynamic, model_name, releases, export_options)
                    check = _pre_checks(view, cfg)
                    with _progress.stage(f"{model_name}: logging to MLflow"):
                        result = log_release(view, cfg, target, check, run, exp_name)
            return notify_published(result, cfg, target)

        return wrapper  # type: ignore[return-value]

    return decorate


def log_onnx_model(
    experiment_name: str,
    onnx_model_path: str | Path,
    metadata: dict[str, Any] | None = None,
    *,
    golden: str | Path | None = None,
    config: PublishConfig | None = None,
    **publish_options: Any,
) -> PublishResult:
    """Log an ONNX model from any framework: check the file, read its signature, verify it against a golden file
    (if given) and log it with the user's metadata into a new run of ``experiment_name``.

    Returns:
        PublishResult; ``model_uri`` is where the model was uploaded.

    Raises:
        CheckError: the file is missing, not ONNX, fails onnx.checker or does not load in onnxruntime.
        VerificationError: the model does not reproduce the golden outputs.

    Example:
        >>> log_onnx_model("tf-export", "model.onnx", {"framework": "tensorflow"})  # doctest: +SKIP
    """
    import onnx

    from onnxship.export._onnxfile import external_data_files, file_sha256
    from onnxship.inspect import load_onnx_checked
    from onnxship.package._release import version_tag
    from onnxship.publish import _mlflow
    from onnxship.verify import OnnxRuntimeRunner

    metadata = dict(metadata or {})
    check_no_secrets(metadata, "metadata keys")
    if not experiment_name or not str(experiment_name).strip():
        raise ConfigError("experiment_name is empty", hint="e.g. log_onnx_model('tf-export', 'model.onnx')")
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
    OnnxRuntimeRunner(path)  # loads in onnxruntime (CheckError/OnnxshipError otherwise)
    cfg = PublishConfig(
        **{**(config.__dict__ if config else {}), **publish_options, "experiment": experiment_name}
    )
    check = golden_check(path, Path(golden)) if golden is not None else None
    name = re.sub(r"[^A-Za-z0-9_-]", "_", path.stem) or "model"
    meta = {"model_name": name, "onnx_sha256": file_sha256(path), **{k: v for k, v in metadata.items()}}
    files = [path.name] + [p.name for p in external_data_files(path, proto)]
    view = BundleView(
        path=path.parent.resolve(),
        name=name,
        version=version_tag(name, utc_now(), git_sha()),
        model_path=path,
        meta=meta,
        golden_path=Path(golden) if golden else None,
        report=None,
        passed=None,
        only=[Path(f) for f in files],
    )
    _mlflow.ensure_no_active_run()
    target = resolve_tracking(cfg.tracking_uri, cfg.store_dir)
    _mlflow.check_reachable(target, cfg.connect_timeout)
    with _mlflow.tracking(target):
        exp_id = _mlflow.ensure_experiment(experiment_name, target)
        with _mlflow.active_run(exp_id, cfg.run_name or name, {"onnxship.source": "log_onnx_model"}) as run:
            if metadata:
                _mlflow.mlflow_module().log_dict(metadata, "metadata.json")
            result = log_release(view, cfg, target, check, run, experiment_name)
    return notify_published(result, cfg, target)

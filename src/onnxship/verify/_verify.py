"""``onnxship.verify``: does an ONNX file behave like its PyTorch model (or its golden file) on real data?

Both engines get exactly the same batches; statistics stream (memory stays flat as the dataset grows); a shape sweep
over the declared dynamic dims catches axes that were silently frozen. DO NOT import torch at module level: with only
``golden=`` verify runs without torch.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from onnxship._errors import CheckError, ConfigError, VerificationError
from onnxship._util import git_sha, utc_now
from onnxship.runtime._data import DataSource, GoldenSource, SyntheticSource, open_source
from onnxship.runtime._golden import Golden, read_golden
from onnxship.spec._inputs import TensorSpec, dim_table
from onnxship.verify._config import VerifyConfig
from onnxship.verify._diagnose import _diag, _evidence, _likely_causes, _output_dim_issues
from onnxship.verify._engine import _Engine, _run_data
from onnxship.verify._policy import resolve_policy
from onnxship.verify._report import VerifyReport
from onnxship.verify._sampling import SamplePlan, add_hard_samples, plan_samples
from onnxship.verify._setup import (
    _ORT_DTYPES,
    _Casts,
    _check_golden,
    _environment,
    _load_reference,
    _resolve_specs,
    unsupported_op_hint,
)
from onnxship.verify._sweep import _run_sweep, _run_value_sweep
from onnxship.verify._tasks import softmax_margin
from onnxship.verify._verdict import failure_hint, failure_list, judge_groups

__all__ = ["VerifyConfig", "verify"]


def verify(
    onnx_path: str | Path,
    model: Any = None,
    golden: str | Path | Golden | None = None,
    inputs: list[TensorSpec | str] | None = None,
    config: VerifyConfig | None = None,
    *,
    candidates: list[dict[str, Any]] | None = None,
    diagnostics: list[dict[str, Any]] | None = None,
    **overrides: Any,
) -> VerifyReport:
    """Check that an ONNX file behaves like its PyTorch model (or its golden file) under a precision-aware gate.

    Args:
        onnx_path: the ONNX file to check.
        model: the reference: an ``nn.Module``, a ``ModelSpec`` or ``"file.py:factory"`` (needs torch).
        golden: a golden.npz (inputs + PyTorch outputs): a reference that needs no torch.
        inputs: input specs; default: the ``inputs`` metadata the export embedded, else the graph's inputs.
        config: a VerifyConfig; keyword overrides replace its fields (``mode="coverage"``).
        candidates: export candidates to record in the report (from ``onnxship.export``).
        diagnostics: export diagnostics to record (dicts with code/severity/title/message/advice).

    Returns:
        VerifyReport, truthy when the gate passed.

    Raises:
        ConfigError: bad settings, data that does not fit the model.
        CheckError: an unreadable ONNX or golden file, or a golden file from another model.
        VerificationError: only with ``raise_on_fail=True``, when the gate fails (carries the report).

    Example:
        >>> report = verify("out/deeplog.onnx", golden="golden.npz")  # doctest: +SKIP
        >>> report.passed, report.write_json("out/report.json")  # doctest: +SKIP
    """
    # verify() puts an nn.Module in eval() (dropout/BatchNorm); the caller gets it back in the mode it gave.
    restore_training = bool(getattr(model, "training", False)) and callable(getattr(model, "train", None))
    try:
        return _verify(onnx_path, model, golden, inputs, config, candidates, diagnostics, overrides)
    finally:
        if restore_training:
            model.train(True)


def _verify(
    onnx_path: str | Path,
    model: Any,
    golden: str | Path | Golden | None,
    inputs: list[TensorSpec | str] | None,
    config: VerifyConfig | None,
    candidates: list[dict[str, Any]] | None,
    diagnostics: list[dict[str, Any]] | None,
    overrides: dict[str, Any],
) -> VerifyReport:
    from onnxship.inspect import inspect_model
    from onnxship.runtime._runners import OnnxRuntimeRunner
    from onnxship.runtime._session import SessionConfig

    start = time.perf_counter()
    config = replace(config or VerifyConfig(), **overrides) if overrides else (config or VerifyConfig())
    if model is None and golden is None:
        raise ConfigError(
            "nothing to verify against: give model= (PyTorch) or golden= (golden.npz)",
            hint="onnxship verify X.onnx --model file.py:factory  or  --golden golden.npz",
        )
    info = inspect_model(onnx_path)
    specs = _resolve_specs(inputs, info)
    notes: list[str] = []
    if config.precision is None:  # a variant file says what it is (int8, fp16): its gate follows
        recorded = str(info.metadata.get("precision") or "fp32")
        config = replace(config, precision=recorded if recorded in ("fp32", "fp16", "int8") else "fp32")
        if config.precision != "fp32":
            notes.append(f"precision {config.precision} read from the file's metadata")
    policy = resolve_policy(
        config.precision or "fp32",
        config.task,
        tolerance=config.tolerance,
        per_output=config.tolerances,
        thresholds=config.thresholds,
        allow_nonfinite=config.allow_nonfinite,
    )
    # No spinning: the engines alternate batch by batch, and onnxruntime's spinning threads would starve PyTorch.
    try:
        candidate = OnnxRuntimeRunner(
            Path(onnx_path), SessionConfig(providers=config.providers, allow_spinning=False)
        )
    except CheckError as exc:
        op_hint = unsupported_op_hint(exc.message)
        if op_hint is None:
            raise
        raise CheckError(exc.message, hint=op_hint) from None
    output_names = list(candidate.output_names)
    unknown = sorted(set(config.tolerances) - set(output_names))
    if unknown:
        raise ConfigError(f"tolerances given for unknown outputs {unknown}", hint=f"outputs: {output_names}")
    ort_types = {i.name: _ORT_DTYPES.get(i.type, "") for i in candidate.session.get_inputs()}
    gold = None
    if golden is not None:
        gold = golden if isinstance(golden, Golden) else read_golden(golden)
        _check_golden(gold, info)
    ref_runner, module, ckpt = None, None, None
    torch_float = None
    if model is not None:
        ref_runner, module, ckpt = _load_reference(model, config.checkpoint, specs, output_names)
        p = next(iter(module.parameters()), None)
        if p is not None and p.is_floating_point():
            torch_float = str(p.dtype).replace("torch.", "")
    casts = _Casts(ort_types, torch_float)
    engine = _Engine(ref_runner, candidate, casts, policy, config, output_names)

    # Data: the user's data (or synthetic) with PyTorch as the reference; the golden file on its own otherwise.
    source: DataSource
    if ref_runner is not None:
        source = (
            open_source(config.data, specs, preprocess=config.preprocess)
            if config.data is not None
            else SyntheticSource(specs, config.synthetic_count, seed=config.seed)
        )
    else:
        if config.data is not None:
            notes.append(
                "--data ignored: without a PyTorch model only the golden inputs have reference outputs"
            )
        source = GoldenSource(gold)  # type: ignore[arg-type]
    sample_cfg = config.sample_config()
    if source.kind == "golden":
        plan = SamplePlan(None, "golden", len(source))
    else:
        plan = plan_samples(len(source), source.labels(), sample_cfg)
        if sample_cfg.hardness_bins is not None:

            def margins_of(idx: np.ndarray) -> np.ndarray:
                parts = [
                    softmax_margin(engine.run_reference(b)[engine.task_output])
                    for b in source.batches(idx, config.batch_size)
                ]
                return np.concatenate(parts) if parts else np.zeros(0)

            plan = add_hard_samples(plan, margins_of, sample_cfg)
    t_data = time.perf_counter()
    _run_data(engine, source, plan, config)
    data_seconds = time.perf_counter() - t_data
    if gold is not None and ref_runner is not None:
        gsrc = GoldenSource(gold)
        for batch in gsrc.batches(None, config.batch_size):
            engine.compare(
                batch,
                batch.reference or {},
                engine.run_candidate(batch),
                engine._group("golden", "golden", None, {k: list(v.shape) for k, v in batch.feeds.items()}),
                main=False,
            )

    # Shape sweep over the declared dynamic dims.
    static = bool(info.metadata.get("static"))
    import onnx

    from onnxship.onnxfile import specialized_dims

    proto = onnx.load(str(onnx_path), load_external_data=False)
    static_axes = [] if static else specialized_dims(proto, specs)
    if ref_runner is not None and config.sweep and dim_table(specs):
        notes += _run_sweep(engine, specs, static, config)
    elif ref_runner is None and dim_table(specs):
        notes.append("no shape sweep: it needs the PyTorch model (golden files hold one shape)")
    if ref_runner is not None and config.value_sweep:
        _run_value_sweep(engine, specs, config)

    # Verdicts.
    task_res = engine.task_metric.result() if engine.task_metric is not None else None
    no_mse = replace(policy, mse_mean=None, mse_p99=None)
    summaries = [
        engine.acc[o].summary(
            no_mse if (config.task == "classification" and o == engine.task_output) else policy
        )
        for o in output_names
    ]
    groups = judge_groups(engine, policy, no_mse)
    failures, worst = failure_list(engine, summaries, task_res, config.task, groups, static_axes)
    passed = not failures
    shape_issues = {"static_axes": static_axes, "output_dims": _output_dim_issues(info, groups)}
    diags = list(diagnostics or []) + _likely_causes(
        summaries,
        groups,
        task_res,
        config,
        "torch" if ref_runner is not None else "golden",
        shape_issues,
        policy,
    )
    worst_any = worst or max(summaries, key=lambda s: s.max_abs, default=None)
    worst_output = (
        None
        if worst_any is None
        else {
            "name": worst_any.name,
            "passed": worst_any.passed,
            "max_abs": worst_any.max_abs,
            "min_passing_atol": worst_any.min_passing_atol,
            "smallest_passing": worst_any.smallest_passing(),
            "failures": worst_any.failures,
        }
    )
    hint = None if passed else failure_hint(summaries, worst_any, policy, diags)
    seconds = time.perf_counter() - start
    labels = source.labels()
    sampled_classes = plan.sampled_classes
    top1 = task_res.to_dict() if task_res is not None else None
    mse_src = (top1 or {}) if config.task == "classification" else {}
    main = next((s for s in summaries if s.name == engine.task_output), None)
    compare = {
        "mode": config.mode,
        "sample_policy": plan.policy,
        "sample_count": engine.samples,
        "per_class_k": config.per_class_k,
        "min_classes": config.min_classes,
        "max_total": config.max_total,
        "sampled_classes": sampled_classes,
        "sampled_images": engine.samples if source.kind == "image_folder" else 0,
        "mse_mean": mse_src.get("prob_mse_mean", main.mse_mean if main else None),
        "mse_p99": mse_src.get("prob_mse_p99", main.mse_p99 if main else None),
        "top1_match_rate": (top1 or {}).get("top1_match_rate"),
        "top1_mismatch_count": (top1 or {}).get("top1_mismatch_count"),
        "failed": not passed,
        "failure_reason": "; ".join(failures) if failures else None,
        "deltas": {
            "map_0_5": (top1 or {}).get("map_0_5_delta"),
            "map_0_5_0_95": (top1 or {}).get("map_0_5_0_95_delta"),
        },
        "notes": "; ".join(plan.notes + notes) or None,
    }
    first = specs[0] if specs else None
    params = info.parameter_count
    meta = info.metadata
    scores = main.sample_shape[-1] if main and main.sample_shape else None
    model_fields = {
        "model_name": meta.get("model_name") or Path(onnx_path).stem,
        "backbone": meta.get("backbone")
        or meta.get("model_type")
        or (type(module).__name__ if module is not None else None),
        "num_classes": meta.get("num_classes")
        or (scores if config.task in ("classification", "sequence") else None),
        "ckpt_path": ckpt or meta.get("checkpoint"),
        "onnx_path": str(onnx_path),
        "onnx_sha256": info.sha256,
        "exported_at_utc": meta.get("exported_at_utc"),
        "git_sha": meta.get("git_sha") or git_sha(),
        "input_shape": list(first.shape) if first else [],
        "inputs": [s.to_dict() for s in specs],
        "output_names": output_names,
        "opset": info.opsets.get("ai.onnx"),
        "exporter": meta.get("exporter"),
        "dynamic_axes": bool(dim_table(specs)) and not static,
        "dynamic_axes_detail": meta.get("dynamic_axes") if isinstance(meta.get("dynamic_axes"), dict) else {},
        "params_million": round(params / 1e6, 4),
        "providers": list(candidate.providers),
        "provider_fallbacks": [f.to_dict() for f in candidate.info.fallbacks],
        "postprocess": {
            "nms": config.nms.to_dict() if config.task == "detection" else None,
            "applied_in": "python_common" if config.task == "detection" else None,
        },
    }
    evidence = _evidence(engine, source.kind, groups, info.metadata, config)
    evidence["nonfinite"] = {
        o.name: {
            "reference": o.nonfinite_reference,
            "candidate": o.nonfinite_candidate,
            "first": o.nonfinite_where,
        }
        for o in summaries
        if o.nonfinite_reference or o.nonfinite_candidate
    }
    if (evidence.get("class_coverage") or {}).get("weak"):
        diags.append(
            _diag(
                "VER111",
                "warning",
                "weak evidence: few classes covered",
                evidence["class_coverage"]["text"],
                "Agreement on a few classes says little about the others: verify with real samples (--data, "
                "--mode coverage) so every class is predicted by the reference at least once.",
            )
        )
    report = VerifyReport(
        passed=passed,
        failure_reason=compare["failure_reason"],
        hint=hint,
        worst_output=worst_output,
        model=model_fields,
        compare=compare,
        precision=config.precision,
        task=config.task,
        reference="torch" if ref_runner is not None else "golden",
        data=source.description,
        policy=policy.to_dict(),
        outputs=[s.to_dict() for s in summaries],
        shapes=groups,
        task_metrics=top1,
        worst_samples=[w.to_dict() for o in output_names for w in engine.acc[o].worst()],
        shape_issues=shape_issues,
        sampling={**plan.to_dict(), "labels": labels is not None, "batch_size": config.batch_size},
        environment=_environment(),
        timing={
            "seconds": round(seconds, 3),
            "reference_seconds": round(engine.ref_seconds, 3),
            "candidate_seconds": round(engine.cand_seconds, 3),
            "data_seconds": round(data_seconds, 3),
            "samples_per_second": round(engine.samples / data_seconds, 2) if data_seconds > 0 else None,
        },
        candidates=list(candidates or []),
        diagnostics=diags,
        verified_at_utc=utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        evidence=evidence,
    )
    if not passed and config.raise_on_fail:
        raise VerificationError(f"verification failed: {report.failure_reason}", hint=hint, report=report)
    return report

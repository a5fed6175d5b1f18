"""After the runs: declared output dims against real ones, the likely causes of a failure (VER1xx diagnostics) and
how strong the evidence is.
"""

from __future__ import annotations

from typing import Any

from onnxship.verify._config import VerifyConfig
from onnxship.verify._engine import _Engine
from onnxship.verify._metrics import OutputSummary
from onnxship.verify._parity import sweep_summary
from onnxship.verify._policy import GatePolicy


def _output_dim_issues(info: Any, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Declared output dims that disagree with what onnxruntime actually returned."""
    issues = []
    declared = {o["name"]: o["shape"] for o in info.outputs}
    for g in groups:
        if g["status"] == "skipped":
            continue
        for name, shape in g.get("output_shapes", {}).items():
            dims = declared.get(name)
            if not dims or len(dims) != len(shape):
                if dims and len(dims) != len(shape):
                    issues.append(
                        {
                            "output": name,
                            "axis": None,
                            "declared": dims,
                            "observed": shape,
                            "where": g["group"],
                        }
                    )
                continue
            for axis, (d, v) in enumerate(zip(dims, shape, strict=True)):
                if isinstance(d, int) and d > 0 and d != v:
                    issues.append(
                        {"output": name, "axis": axis, "declared": d, "observed": v, "where": g["group"]}
                    )
    seen, unique = set(), []
    for i in issues:
        k = (i["output"], i["axis"], str(i["declared"]))
        if k not in seen:
            seen.add(k)
            unique.append(i)
    return unique


def _diag(code: str, severity: str, title: str, message: str, advice: str) -> dict[str, Any]:
    return {
        "code": code,
        "severity": severity,
        "title": title,
        "message": message,
        "advice": advice,
        "source": "verify",
        "count": 1,
        "stage": "verify",
    }


def _likely_causes(
    outputs: list[OutputSummary],
    groups: list[dict[str, Any]],
    task_res: Any,
    config: VerifyConfig,
    reference: str,
    shape_issues: dict[str, list[Any]],
    policy: GatePolicy,
) -> list[dict[str, Any]]:
    diags: list[dict[str, Any]] = []
    sweep = [g for g in groups if g["kind"] == "sweep" and g["status"] != "skipped"]
    sweep_failed = [g for g in sweep if g["status"] == "failed" or not g.get("passed", True)]
    export_ok = any(g.get("is_export_shape") and g.get("passed", False) for g in sweep)
    if shape_issues.get("static_axes"):
        diags.append(
            _diag(
                "VER101",
                "error",
                "dynamic axes exported static",
                "; ".join(shape_issues["static_axes"]),
                "Re-export with the dims declared dynamic (onnxship export --input name=N..MAX); with the "
                "dynamo exporter, code that branches on a size specializes it: use torch.where or keep "
                "sizes as tensors.",
            )
        )
    if sweep_failed and export_ok:
        diags.append(
            _diag(
                "VER102",
                "error",
                "fails only away from the export shape",
                f"passes at the export shape, fails at {[g['group'] for g in sweep_failed]}",
                "A size was frozen during tracing (reshape/view with Python ints, int(x.size(1)), loops "
                "over a dimension). Keep shapes symbolic or export with the dynamo exporter.",
            )
        )
    if shape_issues.get("output_dims"):
        diags.append(
            _diag(
                "VER103",
                "warning",
                "declared output dims disagree with real outputs",
                "; ".join(
                    f"{i['output']}[{i['axis']}] declared {i['declared']}, got {i['observed']}"
                    for i in shape_issues["output_dims"][:5]
                ),
                "Tools that trust declared shapes (Triton config, MLflow signatures) will be wrong; "
                "re-export with onnxship export, which fixes declared output dims.",
            )
        )
    if any(o.nan_mismatches for o in outputs):
        diags.append(
            _diag(
                "VER104",
                "error",
                "NaN/inf in only one engine",
                ", ".join(o.name for o in outputs if o.nan_mismatches),
                "Look for log/div/sqrt of zero or overflow; in fp16 keep Softmax/LayerNorm/exp in fp32.",
            )
        )
    nonfinite = [
        o for o in outputs if (o.nonfinite_reference or o.nonfinite_candidate) and not policy.allow_nonfinite
    ]
    if nonfinite:
        diags.append(
            _diag(
                "VER112",
                "error",
                "NaN/Inf outputs",
                "; ".join(
                    f"{o.name}: {o.nonfinite_reference} in the reference, {o.nonfinite_candidate} in onnxruntime "
                    f"(first at {o.nonfinite_where})"
                    for o in nonfinite
                ),
                "NaN == NaN is not agreement: a served model would answer null. Find the log/div/sqrt of zero or "
                "the overflow that makes them; pass --allow-nonfinite only if they are expected.",
            )
        )
    failing = [
        o
        for o in outputs
        if not o.passed and not o.nan_mismatches and not o.shape_errors and o not in nonfinite
    ]
    for o in failing:
        tol = policy.tolerance_for(o.name)
        atol = tol.atol if tol is not None else 0.0
        if o.cosine_min > 0.99999 and o.min_passing_atol <= max(10 * atol, 1e-5):
            diags.append(
                _diag(
                    "VER105",
                    "warning",
                    "numerical noise just above the tolerance",
                    f"{o.name}: max abs {o.max_abs:.3g}, would pass with atol={o.min_passing_atol:.3g}",
                    "Different kernels and op fusion change the last bits; if the task metrics agree, "
                    f"loosen it for this output (--tolerance '{o.name}:atol={o.min_passing_atol:.1g}').",
                )
            )
        elif o.cosine_min < 0.9:
            cause = (
                "the golden file was written by another model or checkpoint"
                if reference == "golden"
                else "the ONNX file was exported from other weights, the model was not in eval() (dropout, "
                "BatchNorm batch statistics) or the preprocessing differs between engines"
            )
            diags.append(
                _diag(
                    "VER106",
                    "error",
                    "outputs are unrelated",
                    f"{o.name}: cosine {o.cosine_min:.3f}",
                    f"Likely causes: {cause}. Re-export from the checkpoint you verify against.",
                )
            )
        elif config.precision == "fp32":
            diags.append(
                _diag(
                    "VER107",
                    "warning",
                    "drift beyond fp32 noise",
                    f"{o.name}: max abs {o.max_abs:.3g}, cosine {o.cosine_min:.6f}",
                    "Likely causes: an op converted with different semantics (e.g. interpolate "
                    "align_corners, GELU approximation, LayerNorm epsilon), or a normalisation mismatch. "
                    "Bisect by exporting sub-modules; try the other exporter or opset 18.",
                )
            )
        else:
            diags.append(
                _diag(
                    "VER108",
                    "warning",
                    f"{config.precision} drift beyond the gate",
                    f"{o.name}: MSE {o.mse_mean:.3g}, cosine {o.cosine_min:.5f}",
                    "Keep sensitive ops in fp32 (Softmax, LayerNorm, final logits) or calibrate "
                    "quantization on more representative data.",
                )
            )
    if task_res is not None and not task_res.passed:
        diags.append(
            _diag(
                "VER110",
                "error",
                f"{config.task} decisions differ",
                task_res.reason or "",
                "Decisions flip on samples near the decision boundary; inspect the worst classes and "
                "samples, and check the precision (fp16/int8) of the final layers.",
            )
        )
    return diags


def _evidence(
    engine: _Engine,
    source_kind: str,
    groups: list[dict[str, Any]],
    meta: dict[str, Any],
    config: VerifyConfig,
) -> dict[str, Any]:
    """How strong the evidence is, in words the terminal, report.json and report.html show."""
    weak: list[str] = []
    inputs = {"synthetic": "synthetic inputs", "golden": "golden inputs"}.get(
        source_kind, f"real data ({source_kind})"
    )
    if source_kind == "synthetic":
        weak.append("inputs are synthetic (generated from the input specs): pass --data for real samples")
    calibration = meta.get("calibration")
    if isinstance(calibration, dict):
        calibration = calibration.get("source") or calibration.get("kind")
    if config.precision == "int8" and isinstance(calibration, str) and "synthetic" in calibration:
        weak.append("INT8 calibration used synthetic data: calibrate on real samples (--calibration-data)")
    sweep = [g for g in groups if g["kind"] == "sweep"]
    values = [g for g in groups if g["kind"] == "values"]
    coverage = None
    if engine.num_classes:
        covered = len(engine.ref_classes)
        is_weak = covered < min(engine.num_classes, 10) or covered * 2 < engine.num_classes
        text = f"reference top-1 covered {covered} of {engine.num_classes} classes" + (
            ": weak evidence" if is_weak else ""
        )
        coverage = {"covered": covered, "classes": engine.num_classes, "weak": is_weak, "text": text}
        if is_weak:
            weak.append(text)
    return {
        "inputs": inputs,
        "synthetic": source_kind == "synthetic",
        "calibration": calibration if isinstance(calibration, str) else None,
        "sweep": sweep_summary(sweep, values) or None,
        "class_coverage": coverage,
        "weak": weak,
    }

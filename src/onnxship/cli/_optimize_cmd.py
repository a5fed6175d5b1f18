"""``onnxship optimize``: flags -> OptimizeConfig -> optimize() -> a table of variants and their verdicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from onnxship._errors import ConfigError, OptimizeError
from onnxship.cli._app import app
from onnxship.cli._common import USAGE_EXIT, console, err_console, fail, handle_errors, parse_kv
from onnxship.cli._preflight import check_model_flags
from onnxship.cli._render import Table
from onnxship.cli._runtime_cmd import model_argument, session_config

if TYPE_CHECKING:
    from onnxship.optimize import OptimizeResult

__all__ = ["optimize_command"]


@app.command("optimize")
@handle_errors
def optimize_command(
    onnx_path: Path = typer.Argument(..., help="the FP32 .onnx model written by `onnxship export`"),
    quantize: list[str] = typer.Option(
        None, "--quantize", "-q", help="int8-dynamic | int8-static (repeatable)"
    ),
    fp16: bool = typer.Option(False, "--fp16", help="build an fp16 variant (float32 inputs/outputs kept)"),
    fp16_io: bool = typer.Option(False, "--fp16-io", help="fp16 variant: make inputs/outputs float16 too"),
    simplify: bool = typer.Option(
        None,
        "--simplify/--no-simplify",
        help="simplify with onnxslim first (default on; --simplify alone: an fp32 variant)",
    ),
    calibration: Path = typer.Option(
        None,
        "--calibration",
        help="int8-static calibration data (.npz, image folder, "
        "parquet/CSV; default: generated from the specs)",
    ),
    calibration_samples: int = typer.Option(64, "--calibration-samples", help="calibration samples to use"),
    per_channel: bool = typer.Option(False, "--per-channel", help="int8: per-channel weight scales"),
    exclude_nodes: list[str] = typer.Option(None, "--exclude-node", help="int8: keep this node in float32"),
    no_exclude_sensitive: bool = typer.Option(
        False, "--no-exclude-sensitive", help="int8: do not retry with sensitive nodes kept in float32"
    ),
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help="file.py:factory: verify against PyTorch (default: against the FP32 ONNX model)",
    ),
    checkpoint: Path = typer.Option(None, "--checkpoint", "-c", help="weights for --model"),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="allow full pickles"),
    model_args: list[str] = typer.Option(None, "--model-arg", help="factory keyword argument key=value"),
    task: str = typer.Option("auto", "--task", help="auto | classification | sequence | none"),
    task_output: str = typer.Option(None, "--task-output", help="output with the class/event scores"),
    data: Path = typer.Option(
        None, "--data", help="verification data for the task gate (default: generated)"
    ),
    thresholds: list[str] = typer.Option(
        None, "--threshold", help="gate override key=value, e.g. top1_mismatch_rate=0.05 or mse_mean=1e-3"
    ),
    tolerance: float = typer.Option(None, "--tolerance", help="elementwise atol gate for every variant"),
    out_dir: Path = typer.Option(
        None, "--out-dir", "-o", help="where variants go (default: <model dir>/variants)"
    ),
    keep_rejected: bool = typer.Option(
        False, "--keep-rejected", help="keep failed variants as *.rejected.onnx"
    ),
    providers: list[str] = typer.Option(None, "--provider", help="execution provider(s) for the gate runs"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Build optimized variants and keep only those that pass their precision's gate (exit 1 if any fails)."""
    check_model_flags(model, checkpoint=checkpoint)  # before torch loads
    from onnxship.optimize import GateConfig, OptimizeConfig, optimize

    variants = list(quantize or []) + (["fp16"] if fp16 or fp16_io else [])
    if simplify and not variants:
        variants = ["fp32"]
    if not variants:
        raise fail(
            ConfigError(
                "nothing to build",
                hint="add --quantize int8-dynamic, --quantize int8-static, --fp16 or --simplify",
            ),
            USAGE_EXIT,
        )
    try:
        config = OptimizeConfig(
            variants=tuple(variants),
            simplify=simplify is not False,
            keep_io_types=not fp16_io,
            calibration=calibration,
            calibration_samples=calibration_samples,
            per_channel=per_channel,
            exclude_nodes=tuple(exclude_nodes or ()),
            exclude_sensitive=not no_exclude_sensitive,
            gate=GateConfig(
                task=task,
                task_output=task_output,
                data=str(data) if data else None,
                tolerance=tolerance,
                thresholds=parse_kv(thresholds, "--threshold"),
            ),
            out_dir=out_dir,
            keep_rejected=keep_rejected,
            session=session_config(providers, 0, False, None),
        )
    except ConfigError as exc:
        raise fail(exc, USAGE_EXIT) from None
    spec = model_argument(model, checkpoint, trust_checkpoint, model_args)
    if not as_json:
        err_console.print(
            f"optimizing {onnx_path} → {', '.join(config.variants)} "
            f"(verified against {'PyTorch' if spec else 'the FP32 ONNX model'}) ..."
        )
    result = optimize(onnx_path, config, model=spec)
    if as_json:
        console.print_json(json.dumps(result.to_dict(), default=str))
    else:
        _render(result)
    if result.rejected:
        names = ", ".join(f"{v.variant} ({v.reason})" for v in result.rejected)
        raise OptimizeError(
            f"{len(result.rejected)} variant(s) failed their gate and were not kept: {names}",
            hint="see the table; relax with --exclude-node, another --calibration set, or drop the variant",
        )


def _render(result: OptimizeResult) -> None:
    table = Table(
        title=f"variants of {result.source.name} ({result.source_size_bytes:,} bytes), "
        f"verified against {result.reference}",
        header_style="bold",
    )
    for col in ("variant", "verdict", "size", "task", "task metric", "max abs", "notes / reason"):
        table.add_column(col, overflow="fold")
    for v in result.variants:
        m = v.metrics
        task = m.get("task") or {}
        if task.get("task") == "sequence":
            metric = f"decisions {task.get('decision_agreement', 0):.2%}"
        elif task.get("task") == "classification":
            metric = f"top-1 match {task.get('top1_match_rate', 0):.2%}"
        else:
            metric = "-"
        verdict = "[green]kept[/]" if v.passed else "[red]rejected[/]"
        text = v.reason if not v.passed else "; ".join(v.notes)
        max_abs = f"{m['max_abs']:.2e}" if isinstance(m.get("max_abs"), float) else "-"
        table.add_row(
            v.variant,
            verdict,
            f"{v.size_bytes:,}",
            v.gate.task if v.gate is not None else "-",
            metric,
            max_abs,
            escape(text or ""),
        )
    console.print(table)
    for v in result.kept:
        console.print(f"[green]✓[/] {v.path}")
    if result.report_path:
        console.print(f"report: {result.report_path}")

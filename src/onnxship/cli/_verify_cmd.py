"""``onnxship verify``: the Torch <-> ONNX parity gate on synthetic or real data, with report.json / report.html.

Exit codes: 0 the gate passed, 1 it failed (or an OnnxshipError: bad data, unreadable files), 2 usage errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from onnxship._errors import ConfigError, VerificationError
from onnxship.cli._app import app
from onnxship.cli._common import USAGE_EXIT, console, fail, handle_errors, parse_kv
from onnxship.cli._preflight import check_model_flags
from onnxship.cli._render import Table

if TYPE_CHECKING:
    from onnxship.verify import VerifyReport

__all__ = ["verify_command"]

_MODES = ("smoke", "coverage", "full")
_PRECISIONS = ("fp32", "fp16", "int8")
_TASKS = ("classification", "detection", "sequence")


def _choice(value: str | None, valid: tuple[str, ...], flag: str) -> str | None:
    if value is not None and value not in valid:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(valid)}", param_hint=flag)
    return value


def _parse_bins(text: str | None) -> tuple[float, ...] | None:
    if not text:
        return None
    try:
        bins = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a comma-separated list of numbers (e.g. 0,0.3,0.6,0.85,1)",
            param_hint="--hardness-bins",
        ) from None
    if len(bins) < 2 or list(bins) != sorted(bins) or bins[0] < 0 or bins[-1] > 1:
        raise typer.BadParameter(
            f"{text!r}: bins must be >= 2 increasing values in [0, 1]", param_hint="--hardness-bins"
        )
    return bins


def _parse_tolerances(items: list[str] | None) -> tuple[Any, dict[str, Any]]:
    """``--tolerance OUTPUT:atol=1e-3,rtol=1e-2`` (``*`` for every output) -> (overall, per output)."""
    overall: Any = None
    per_output: dict[str, Any] = {}
    for item in items or []:
        name, sep, body = item.partition(":")
        if not sep or not name.strip() or not body.strip():
            raise typer.BadParameter(
                f"{item!r} is not OUTPUT:atol=..,rtol=.. ('*' for every output)", param_hint="--tolerance"
            )
        values = parse_kv([p.strip() for p in body.split(",") if p.strip()], "--tolerance")
        bad = sorted(set(values) - {"atol", "rtol"})
        if bad or not all(isinstance(v, (int, float)) for v in values.values()):
            raise typer.BadParameter(
                f"{item!r}: only numeric atol= and rtol= are allowed (got {sorted(values)})",
                param_hint="--tolerance",
            )
        if name.strip() == "*":
            overall = values
        else:
            per_output[name.strip()] = values
    return overall, per_output


def _check_writable(path: Path | None, what: str) -> None:
    """Refuse a report path in a missing folder before any work is done (nothing is half-written)."""
    if path is None:
        return
    if not path.parent.is_dir():
        raise ConfigError(
            f"cannot write the {what} to {str(path)!r}: folder {str(path.parent)!r} does not exist",
            hint="create the folder first or pick another path",
        )
    if path.is_dir():
        raise ConfigError(
            f"cannot write the {what} to {str(path)!r}: it is a folder", hint="give a file name"
        )


@app.command("verify")
@handle_errors
def verify_command(
    onnx_path: Path = typer.Argument(..., help="the ONNX file to check"),
    model: str = typer.Option(
        None, "--model", "-m", help="reference model: file.py:factory or package.module:factory"
    ),
    checkpoint: Path = typer.Option(None, "--checkpoint", "-c", help="weights (state_dict) for --model"),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="allow full pickles (runs code)"),
    model_args: list[str] = typer.Option(None, "--model-arg", help="factory keyword argument key=value"),
    golden: Path = typer.Option(
        None, "--golden", "-g", help="golden.npz: re-check against stored outputs (no torch)"
    ),
    inputs: list[str] = typer.Option(
        None,
        "--input",
        "-i",
        help="NAME:DIMS:DTYPE[:KIND][:LOW..HIGH] (default: the specs the export embedded)",
    ),
    data: Path = typer.Option(
        None, "--data", "-d", help="image folder (class = sub-folder), .npz, .parquet or .csv"
    ),
    mode: str = typer.Option(
        "smoke", "--mode", help="smoke (N random) | coverage (stratified by class) | full"
    ),
    precision: str = typer.Option(
        None,
        "--precision",
        help="fp32 | fp16 | int8: picks the default gate (default: the file's metadata, else fp32)",
    ),
    task: str = typer.Option(
        None, "--task", help="classification | detection | sequence: adds task agreement"
    ),
    task_output: str = typer.Option(
        None, "--task-output", help="output holding the logits/scores for --task"
    ),
    top_g: int = typer.Option(9, "--top-g", help="sequence: DeepLog's g (true next event among the top g)"),
    sample_count: int = typer.Option(32, "--sample-count", "-n", help="smoke: samples to compare"),
    per_class_k: int = typer.Option(1, "--per-class-k", help="coverage: samples per class"),
    min_classes: int = typer.Option(1000, "--min-classes", help="coverage: classes wanted"),
    max_total: int = typer.Option(5000, "--max-total", help="coverage: cap on samples"),
    hardness_bins: str = typer.Option(
        None,
        "--hardness-bins",
        help="e.g. 0,0.3,0.6,0.85,1: add samples near the decision boundary (by PyTorch margin)",
    ),
    hard_per_bin: int = typer.Option(8, "--hard-per-bin", help="samples added per hardness bin"),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="samples per batch"),
    tolerance: list[str] = typer.Option(
        None, "--tolerance", "-t", help="OUTPUT:atol=..,rtol=.. elementwise override ('*' = every output)"
    ),
    threshold: list[str] = typer.Option(
        None,
        "--threshold",
        help="gate override key=value (mse_mean, mse_p99, cosine_min, top1_mismatch_rate, ...)",
    ),
    no_sweep: bool = typer.Option(False, "--no-sweep", help="skip the shape sweep"),
    allow_nonfinite: bool = typer.Option(
        False,
        "--allow-nonfinite",
        help="accept NaN/Inf outputs where both engines agree (default: they fail)",
    ),
    seed: int = typer.Option(0, "--seed", help="seed of sampling and synthetic inputs"),
    report: Path = typer.Option(None, "--report", "-r", help="write report.json here"),
    html: Path = typer.Option(None, "--html", help="write the self-contained report.html here"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Check an ONNX file against its PyTorch model (or a golden file): exit 0 pass, 1 fail, 2 usage error."""
    from onnxship.verify import VerifyConfig, verify

    _choice(mode, _MODES, "--mode")
    _choice(precision, _PRECISIONS, "--precision")
    _choice(task, _TASKS, "--task")
    bins = _parse_bins(hardness_bins)
    overall, per_output = _parse_tolerances(tolerance)
    thresholds = parse_kv(threshold, "--threshold")
    if model is None and golden is None:
        raise typer.BadParameter(
            "give the reference: --model file.py:factory (needs torch) or --golden golden.npz",
            param_hint="--model/--golden",
        )
    if model is not None and golden is not None:
        raise typer.BadParameter("give either --model or --golden, not both", param_hint="--model/--golden")
    if checkpoint is not None and model is None:
        raise typer.BadParameter("--checkpoint needs --model", param_hint="--checkpoint")
    try:
        config = VerifyConfig(
            mode=mode,
            precision=precision,
            task=task,
            data=data,
            batch_size=batch_size,
            sample_count=sample_count,
            per_class_k=per_class_k,
            min_classes=min_classes,
            max_total=max_total,
            hardness_bins=bins,
            hard_per_bin=hard_per_bin,
            tolerance=overall,
            tolerances=per_output,
            thresholds=thresholds,
            task_output=task_output,
            top_g=top_g,
            sweep=not no_sweep,
            seed=seed,
            allow_nonfinite=allow_nonfinite,
        )
    except ConfigError as exc:
        raise fail(exc, USAGE_EXIT) from None
    _check_writable(report, "report")
    _check_writable(html, "HTML report")
    check_model_flags(model, checkpoint=checkpoint, inputs=inputs)  # before torch loads
    reference: Any = None
    if model is not None:
        from onnxship.spec import parse_model_spec

        try:
            reference = parse_model_spec(
                model,
                kwargs=parse_kv(model_args, "--model-arg"),
                checkpoint=checkpoint,
                trust_checkpoint=trust_checkpoint,
            )
        except ConfigError as exc:
            raise fail(exc, USAGE_EXIT) from None
    result = _run(verify, onnx_path, reference, golden, inputs, config, quiet=as_json)
    if report is not None:
        result.write_json(report)
    if html is not None:
        result.write_html(html)
    if as_json:
        console.print_json(json.dumps(result.to_dict(), default=str))
    else:
        _render(result, report, html)
    if not result.passed:
        raise fail(
            VerificationError(f"verification failed: {result.failure_reason}", hint=_failure_hint(result))
        )


def _run(
    verify: Any,
    onnx_path: Path,
    reference: Any,
    golden: Path | None,
    inputs: list[str] | None,
    config: Any,
    *,
    quiet: bool,
) -> VerifyReport:
    """Run verify() with its samples counted as a progress stage on stderr (none with --json)."""
    from dataclasses import replace

    from onnxship import _progress

    if quiet:
        return verify(
            onnx_path, model=reference, golden=golden, inputs=list(inputs) if inputs else None, config=config
        )
    with _progress.stage("verifying samples") as shown:

        def progress(done: int, total: int | None) -> None:
            shown.total = total
            shown.advance(done - shown.done)

        return verify(
            onnx_path,
            model=reference,
            golden=golden,
            inputs=list(inputs) if inputs else None,
            config=replace(config, progress=progress),
        )


def _failure_hint(result: VerifyReport) -> str:
    """Worst output, the smallest tolerance that would have passed, likely causes (from the report)."""
    worst = result.worst_output or {}
    parts = []
    nonfinite = [
        str(o.get("name"))
        for o in result.outputs
        if (o.get("nonfinite_reference") or o.get("nonfinite_candidate")) and not o.get("passed")
    ]
    if nonfinite:
        parts.append(
            f"outputs {nonfinite} hold NaN/Inf: find the log/div/sqrt/overflow that makes them, or pass "
            "--allow-nonfinite if they are expected"
        )
    elif worst.get("name") is not None:
        smallest = worst.get("smallest_passing") or {}
        tol = ", ".join(
            f"{k}={_fmt(smallest[k])}"
            for k in ("atol", "mse_mean", "mse_p99", "cosine_min")
            if isinstance(smallest.get(k), (int, float))
        )
        parts.append(
            f"worst output {worst['name']!r} (max abs {_fmt(worst.get('max_abs'))}); smallest passing "
            f"tolerance: {tol or 'none (shape or NaN mismatch)'}"
        )
    causes = [
        str(d.get("title")) for d in result.diagnostics if d.get("source") == "verify" and d.get("title")
    ]
    if causes:
        parts.append("likely causes: " + ", ".join(dict.fromkeys(causes)))
    elif result.hint:
        parts.append(result.hint)
    parts.append("see --html for the error histograms and per-shape plots")
    return "; ".join(parts)


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else "n/a"


def _render(result: VerifyReport, report: Path | None, html: Path | None) -> None:
    table = Table(title="outputs", header_style="bold")
    for col in ("output", "ok", "n", "max abs", "max rel", "mse", "mse p99", "cos min", "min atol"):
        table.add_column(col, overflow="fold")
    for o in result.outputs:
        smallest = o.get("smallest_passing") or {}
        table.add_row(
            str(o.get("name")),
            "[green]pass[/]" if o.get("passed") else "[bold red]FAIL[/]",
            str(o.get("samples", "")),
            _fmt(o.get("max_abs")),
            _fmt(o.get("max_rel")),
            _fmt(o.get("mse_mean")),
            _fmt(o.get("mse_p99")),
            _fmt(o.get("cosine_min")),
            _fmt(smallest.get("atol", o.get("min_passing_atol"))),
        )
    console.print(table)
    sweep = [s for s in result.shapes if s.get("kind") == "sweep"]
    if sweep:
        console.print(
            "shapes: "
            + ", ".join(
                f"{s.get('group') or s.get('dims')} [{'green' if s.get('status') == 'passed' else 'red'}]"
                f"{s.get('status')}[/]"
                for s in sweep
            ),
            soft_wrap=True,
        )
    if result.task_metrics:
        t = result.task_metrics
        keys = {
            "classification": ("top1_mismatch_rate", "top1_mismatch_count", "prob_mse_mean"),
            "sequence": ("decision_agreement", "top_g_set_agreement", "top1_agreement"),
            "detection": ("map_0_5_delta", "map_0_5_0_95_delta", "iou_delta_p95"),
        }.get(str(t.get("task")), ())
        console.print(
            f"task {t.get('task')}: "
            + ", ".join(f"{k}={_fmt(t.get(k))}" for k in keys)
            + (" [green]pass[/]" if t.get("passed") else f" [red]FAIL[/] ({t.get('reason')})"),
            soft_wrap=True,
        )
    for path, what in ((report, "report"), (html, "html")):
        if path is not None:
            console.print(f"{what}: {path}")
    evidence = result.evidence or {}
    if evidence.get("sweep"):
        console.print(f"checked: {evidence['sweep']}", soft_wrap=True)
    for w in evidence.get("weak") or []:
        console.print(f"[yellow]evidence:[/] {w}", soft_wrap=True)
    for s in result.shapes:
        if s.get("status") == "skipped" and s.get("error"):
            console.print(f"  [yellow]not verified:[/] {s['error']}", soft_wrap=True)
    nonfinite = [
        (o.get("name"), o.get("nonfinite_reference") or 0, o.get("nonfinite_candidate") or 0)
        for o in result.outputs
        if o.get("nonfinite_reference") or o.get("nonfinite_candidate")
    ]
    for name, r, c in nonfinite:
        console.print(f"[yellow]non-finite:[/] output {name!r}: {r} NaN/Inf in PyTorch, {c} in onnxruntime")
    if result.passed:
        console.print(f"[bold green]{result.summary()}[/]", soft_wrap=True)

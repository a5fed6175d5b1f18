"""``onnxship doctor train-log`` and ``onnxship doctor export-log``: findings with evidence and advice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from onnxship._errors import ConfigError
from onnxship.cli._app import app
from onnxship.cli._common import USAGE_EXIT, console, fail, handle_errors
from onnxship.cli._render import Table, Typer

if TYPE_CHECKING:
    from onnxship.doctor import ExportLogResult, TrainLogResult

__all__ = ["doctor_app", "export_log_command", "train_log_command"]

doctor_app = Typer(
    help="Explain training logs and export logs: findings with evidence and advice.", no_args_is_help=True
)
app.add_typer(doctor_app, name="doctor")

_FORMATS = "auto | trainer-state | trainer-stdout | jsonl | mlflow-csv | lightning-csv"
_STYLE = {"critical": "bold red", "error": "bold red", "warning": "yellow", "info": "cyan", "noise": "dim"}


@doctor_app.command("train-log")
@handle_errors
def train_log_command(
    file: Path = typer.Argument(
        ..., help="trainer_state.json, trainer stdout, metrics CSV or a JSON-lines log"
    ),
    plot: Path = typer.Option(None, "--plot", help="write a PNG plot (loss, grad_norm, lr; findings marked)"),
    as_json: bool = typer.Option(False, "--json", help="print the findings as JSON"),
    fmt: str = typer.Option("auto", "--format", help=_FORMATS),
    explosion_factor: float = typer.Option(
        10.0, "--explosion-factor", help="grad_norm this many times its rolling median is an explosion"
    ),
    spike_factor: float = typer.Option(
        3.0, "--spike-factor", help="loss this many times its local trend is a spike"
    ),
    fail_on_alarm: bool = typer.Option(
        False, "--fail-on-alarm", help="exit 1 when a warning/critical is found"
    ),
) -> None:
    """Find what happened in a training run: phases, explosions, spikes, vanishing gradients, NaN/Inf, lr shape."""
    from onnxship.doctor import TrainLogConfig, diagnose_train_log

    try:
        config = TrainLogConfig(format=fmt, explosion_factor=explosion_factor, spike_factor=spike_factor)
    except ConfigError as exc:
        raise fail(exc, USAGE_EXIT) from None
    result = diagnose_train_log(file, config, plot=plot)
    if as_json:
        console.print_json(json.dumps(result.to_dict(), allow_nan=False))  # console: stdout under --json
    else:
        _render_train(result)
    if fail_on_alarm and result.alarms:
        raise typer.Exit(1)


@doctor_app.command("export-log")
@handle_errors
def export_log_command(
    file: Path = typer.Argument(
        ..., help="a saved export log (stderr/stdout of torch.onnx.export or onnxship)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the classified messages as JSON"),
) -> None:
    """Explain an export log with the exporter's own classifier: what each warning means and what to do."""
    from onnxship.doctor import explain_export_log

    result = explain_export_log(file)
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
    else:
        _render_export(result)


def _render_train(result: TrainLogResult) -> None:
    log = result.log
    console.print(
        f"[bold]{escape(log.path)}[/]: {log.format}, {len(log)} entries, {log.x_label} "
        f"{log.step[0]:g}–{log.step[-1]:g}, metrics: "
        + ", ".join(f"{m} ({escape(c)})" if c != m else m for m, c in log.columns.items())
    )
    table = Table(show_lines=True)
    table.add_column("severity")
    table.add_column("code")
    table.add_column("finding", overflow="fold")
    table.add_column("evidence", overflow="fold")
    for f in result.findings:
        table.add_row(f"[{_STYLE[f.severity]}]{f.severity}[/]", f.code, escape(f.title), escape(f.detail))
    console.print(table)
    advice = [(f, a) for f in result.findings for a in f.advice]
    if advice:
        console.print("[bold]Advice[/]")
        seen: set[str] = set()
        for f, a in advice:
            if a not in seen:
                seen.add(a)
                console.print(f"  [{_STYLE[f.severity]}]{f.code}[/] {escape(a)}")
    if result.suggested_max_norm is not None:
        console.print(f"suggested gradient-clipping max-norm: [bold]{result.suggested_max_norm:g}[/]")
    if result.plot:
        console.print(f"plot: {escape(result.plot)}")
    if result.alarms:
        console.print(f"[bold yellow]{len(result.alarms)} alarm(s)[/]")
    else:
        console.print("[bold green]no alarms[/]")


def _render_export(result: ExportLogResult) -> None:
    counts = result.counts
    console.print(
        f"[bold]{escape(result.path)}[/]: {result.lines} lines; "
        + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    )
    if not result.codes:
        console.print("[green]no exporter warnings or errors found in this log[/]")
        return
    table = Table(show_lines=True)
    for col in ("severity", "code", "count", "what", "example"):
        table.add_column(col, overflow="fold")
    for c in result.codes:
        table.add_row(
            f"[{_STYLE[c.severity]}]{c.severity}[/]",
            c.code,
            str(c.count),
            escape(c.title),
            escape(c.examples[0] if c.examples else ""),
        )
    console.print(table)
    console.print("[bold]Advice[/]")
    for c in result.codes:
        if c.severity != "noise":
            console.print(f"  [{_STYLE[c.severity]}]{c.code}[/] {escape(c.advice)}")
    noise = [c.code for c in result.codes if c.severity == "noise"]
    if noise:
        console.print(f"  [dim]{', '.join(noise)}: noise from the exporter itself, nothing to do[/]")
    console.print("[bold red]the log holds export errors[/]" if not result else "[green]no export errors[/]")

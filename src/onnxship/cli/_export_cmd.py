"""``onnxship export`` and ``onnxship inspect``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from onnxship._errors import ConfigError, OnnxshipError
from onnxship.cli._app import app
from onnxship.cli._common import USAGE_EXIT, console, err_console, fail, handle_errors, parse_kv
from onnxship.cli._preflight import check_model_flags
from onnxship.cli._render import Table

if TYPE_CHECKING:
    from onnxship.export import ExportResult
    from onnxship.inspect import InspectResult

__all__ = ["export_command", "inspect_command"]

_SEV_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan", "noise": "dim"}


@app.command("export")
@handle_errors
def export_command(
    model: str = typer.Option(..., "--model", "-m", help="file.py:factory or package.module:factory"),
    inputs: list[str] = typer.Option(
        None,
        "--input",
        "-i",
        help="NAME:DIMS:DTYPE[:KIND][:LOW..HIGH], repeat per input; a dim is N, name=N, name=N..MAX, "
        "name=N..MAX/STEP (multiples of STEP), name=a+b (sum of dims) or a bare name; KIND: ids, mask, normal, "
        "uniform, image, positive, offsets(DIM), lengths(DIM), indices(DIM), positions "
        "(e.g. 'input_sequence:batch=2 x seq=10..64:int64:0..30', 'attention_mask:batch x seq:int64:mask', "
        "'image:batch=2x3xheight=224..512/16xwidth=224..512/16:float32:image')",
    ),
    checkpoint: Path = typer.Option(None, "--checkpoint", "-c", help="weights (state_dict) to load"),
    trust_checkpoint: bool = typer.Option(
        False, "--trust-checkpoint", help="allow full pickles (runs code from the file)"
    ),
    model_args: list[str] = typer.Option(None, "--model-arg", help="factory keyword argument key=value"),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="output folder"),
    name: str = typer.Option(None, "--name", help="model name (default: from the spec)"),
    strategy: str = typer.Option(
        "auto",
        "--strategy",
        help="auto (dynamo and TorchScript concurrently, dynamo preferred) | fastest (the cheaper exporter "
        "first, the first verified one wins) | dynamo | torchscript",
    ),
    opsets: list[int] = typer.Option(
        None,
        "--opset",
        help="opset(s) to try in order (default: dynamo 18, TorchScript 17; retried on failure)",
    ),
    allow_static: bool = typer.Option(
        False,
        "--allow-static",
        help="accept a static export (at the sample shape, same checks) when no dynamic candidate verifies",
    ),
    output_names: list[str] = typer.Option(
        None, "--output-name", help="output names in order (default output_N)"
    ),
    meta: list[str] = typer.Option(None, "--meta", help="user metadata key=value (e.g. vocab_size=30)"),
    fp16: bool = typer.Option(False, "--fp16", help="export in float16"),
    allow_nonfinite: bool = typer.Option(
        False,
        "--allow-nonfinite",
        help="accept NaN/Inf outputs where both engines agree (default: they fail)",
    ),
    keep_candidates: bool = typer.Option(
        False, "--keep-candidates", help="keep rejected candidates in OUT/candidates"
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="auto: try dynamo even if it already failed for this model code"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Export a model to ONNX; accepted only if it matches PyTorch at the export shape and at sweep shapes."""
    check_model_flags(model, checkpoint=checkpoint, inputs=inputs, inputs_required=True)  # before torch loads
    from onnxship.export import ExportConfig, export
    from onnxship.spec import parse_model_spec

    try:
        spec = parse_model_spec(
            model,
            kwargs=parse_kv(model_args, "--model-arg"),
            checkpoint=checkpoint,
            trust_checkpoint=trust_checkpoint,
        )
        user_meta = parse_kv(meta, "--meta")
        config = ExportConfig(
            strategy=strategy,
            opsets=tuple(opsets) if opsets else None,
            allow_static=allow_static,
            output_names=tuple(output_names) if output_names else None,
            fp16=fp16,
            metadata=user_meta,
            keep_candidates=keep_candidates,
            use_cache=not no_cache,
            allow_nonfinite=allow_nonfinite,
        )
    except ConfigError as exc:
        raise fail(exc, USAGE_EXIT) from None
    default_inputs, default_names, default_meta = spec.export_defaults()
    inputs = inputs or default_inputs
    if not inputs:
        raise fail(
            ConfigError(
                "no --input given and the model module defines no ONNXSHIP_INPUTS",
                hint="add --input NAME:DIMS:DTYPE, e.g. --input 'x:batch=2 x 10:float32'",
            ),
            USAGE_EXIT,
        )
    config.metadata = {**default_meta, **config.metadata}
    if not output_names and default_names:
        config.output_names = default_names
    if not as_json:
        opsets = list(config.opsets) if config.opsets else "default"
        err_console.print(f"exporting [bold]{model}[/] ({config.strategy}, opsets {opsets}) ...")
    try:
        result = export(spec, inputs=list(inputs), out=out, name=name, config=config)
    except OnnxshipError as exc:
        candidates = getattr(exc, "candidates", None)
        if candidates and not as_json:
            _candidate_table(candidates)
        raise
    if as_json:
        console.print_json(json.dumps(result.to_dict(), default=str))
        return
    _render_export(result)


def _candidate_table(candidates: list[Any]) -> None:
    table = Table(title="candidates", show_lines=False, header_style="bold")
    for col in ("strategy", "opset", "mode", "outcome", "export s", "verify s", "reason"):
        table.add_column(col, overflow="fold")
    styles = {"accepted": "green", "rejected": "yellow", "failed": "red", "skipped": "dim"}
    for c in candidates:
        table.add_row(
            c.strategy,
            str(c.opset)
            if not c.file_opset or c.file_opset == c.opset
            else f"{c.opset} (file: {c.file_opset})",
            "dynamic" if c.dynamic else "static",
            f"[{styles.get(c.outcome, '')}]{c.outcome}[/]",
            f"{c.export_seconds:.1f}",
            f"{c.verify_seconds:.1f}",
            c.reason or "",
        )
    err_console.print(table)


def _render_export(result: ExportResult) -> None:
    _candidate_table(result.candidates)
    acc = result.accepted
    if acc.parity is not None:
        shapes = [c for c in acc.parity.shape_checks if c.status == "passed"]
        worst = acc.parity.worst()
        console.print(
            f"{acc.parity.summary()}: "
            + ", ".join(",".join(f"{k}={v}" for k, v in c.dims.items()) or "export" for c in shapes)
            + (f"  (max abs err {worst.max_abs:.2e})" if worst else ""),
            soft_wrap=True,
        )
        for c in acc.parity.checks:
            if c.status == "skipped":
                console.print(f"  [yellow]not verified:[/] {c.error}", soft_wrap=True)
        console.print(
            "  [dim]evidence: synthetic inputs (generated from the input specs; your sample tensors at the export "
            "shape); `onnxship verify --data` checks real samples[/]",
            soft_wrap=True,
        )
    shown = [d for d in result.diagnostics if d.severity != "noise"]
    noise = sum(d.count for d in result.diagnostics if d.severity == "noise")
    if shown:
        console.print("[bold]diagnostics[/]")
        for d in shown:
            style = _SEV_STYLE.get(d.severity, "")
            count = f" ×{d.count}" if d.count > 1 else ""
            msg = d.message if len(d.message) <= 160 else d.message[:157] + "..."
            console.print(
                f"  [{style}]{d.code} {d.severity}[/] {d.title}{count} [dim]({d.stage or ''})[/]: {msg}",
                soft_wrap=True,
            )
            console.print(f"    [dim]→ {d.advice}[/]", soft_wrap=True)
    if noise:
        console.print(
            f"  [dim]{noise} internal exporter messages classified as noise (see the .meta.json)[/]"
        )
    for n in result.notes:
        console.print(f"[cyan]note:[/] {n}")
    if result.static:
        console.print("[bold red]STATIC export: the model only accepts the export shape[/]")
    console.print(
        f"[green]✓[/] {result.path}  ({result.strategy}, opset {result.opset}, "
        f"{result.seconds:.1f} s)  sha256 {result.sha256}"
    )
    console.print(f"  metadata: {result.meta_path}")


@app.command("inspect")
@handle_errors
def inspect_command(
    path: Path = typer.Argument(..., help="an .onnx file"),
    as_json: bool = typer.Option(False, "--json", help="print as JSON"),
) -> None:
    """Show an ONNX file's inputs/outputs with dims, opset, exporter, metadata, size and sha256."""
    from onnxship.inspect import inspect_model

    info = inspect_model(path)
    if as_json:
        console.print_json(json.dumps(info.to_dict(), default=str))
        return
    _render_inspect(info)


def _fmt_shape(shape: list[Any]) -> str:
    from rich.markup import escape

    return escape("[" + ", ".join("?" if d is None else str(d) for d in shape) + "]")


def _render_inspect(info: InspectResult) -> None:
    console.print(f"[bold]{info.path}[/]")
    table = Table(show_header=True, header_style="bold")
    table.add_column("io")
    table.add_column("name")
    table.add_column("dtype")
    table.add_column("shape")
    for kind, items in (("input", info.inputs), ("output", info.outputs)):
        for v in items:
            table.add_row(kind, v["name"], v["dtype"], _fmt_shape(v["shape"]))
    console.print(table)
    console.print(
        f"opset: {', '.join(f'{k} {v}' for k, v in info.opsets.items())}   ir: {info.ir_version}   "
        f"producer: {info.producer or '?'}   exporter: {info.exporter or 'unknown'}"
    )
    console.print(
        f"nodes: {info.node_count}   parameters: {info.parameter_count:,}   "
        f"size: {info.size_bytes:,} bytes   sha256: {info.sha256}"
    )
    if info.external_data:
        console.print(f"external data: {', '.join(info.external_data)}")
    if info.metadata:
        console.print("[bold]metadata[/]")
        for k, v in info.metadata.items():
            text = v if isinstance(v, str) else json.dumps(v)
            console.print(f"  {k}: {text if len(text) < 200 else text[:197] + '...'}")
    if info.sidecar:
        console.print(f"sidecar: {info.sidecar}")

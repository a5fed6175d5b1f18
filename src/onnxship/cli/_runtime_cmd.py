"""``onnxship infer`` and ``onnxship bench``: flags -> config -> verb -> rich rendering (no logic here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from onnxship._errors import ConfigError
from onnxship.cli._app import app
from onnxship.cli._common import USAGE_EXIT, console, err_console, fail, handle_errors, parse_kv
from onnxship.cli._render import Table

if TYPE_CHECKING:
    from onnxship.runtime import BenchResult

__all__ = ["bench_command", "infer_command", "model_argument", "session_config"]


def model_argument(
    model: str | None, checkpoint: Path | None, trust_checkpoint: bool, model_args: list[str] | None
) -> Any:
    """``--model file.py:factory`` (+ checkpoint) as a ModelSpec, or None."""
    if not model:
        if checkpoint:
            raise fail(
                ConfigError("--checkpoint needs --model", hint="add --model file.py:factory"), USAGE_EXIT
            )
        return None
    from onnxship.spec import parse_model_spec

    try:
        return parse_model_spec(
            model,
            kwargs=parse_kv(model_args, "--model-arg"),
            checkpoint=checkpoint,
            trust_checkpoint=trust_checkpoint,
        )
    except ConfigError as exc:
        raise fail(exc, USAGE_EXIT) from None


def session_config(providers: list[str] | None, threads: int, trt_fp16: bool, trt_cache: Path | None) -> Any:
    from onnxship.runtime import SessionConfig

    try:
        return SessionConfig(
            providers=tuple(providers) if providers else None,
            intra_op_threads=threads,
            trt_fp16=trt_fp16,
            trt_engine_cache=str(trt_cache) if trt_cache else None,
        )
    except ConfigError as exc:
        raise fail(exc, USAGE_EXIT) from None


def _int_list(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise fail(
            ConfigError(
                f"{what} {text!r} is not a comma-separated list of integers", hint=f"e.g. {what} 1,8,32"
            ),
            USAGE_EXIT,
        ) from None
    if not values:
        raise fail(ConfigError(f"{what} is empty", hint=f"e.g. {what} 1,8,32"), USAGE_EXIT)
    return values


_PROVIDER_HELP = "execution provider(s) in order: tensorrt, cuda, cpu (default: best available)"


@app.command("infer")
@handle_errors
def infer_command(
    onnx_path: Path = typer.Argument(None, help="the .onnx model (also gives the input specs)"),
    engine: str = typer.Option("onnx", "--engine", "-e", help="onnx | torch"),
    model: str = typer.Option(None, "--model", "-m", help="torch: file.py:factory; onnx: the .onnx path"),
    checkpoint: Path = typer.Option(None, "--checkpoint", "-c", help="weights for --model"),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="allow full pickles"),
    model_args: list[str] = typer.Option(None, "--model-arg", help="factory keyword argument key=value"),
    input_specs: list[str] = typer.Option(
        None, "--input", "-i", help="NAME:DIMS:DTYPE[:LOW..HIGH] (torch without .onnx)"
    ),
    inputs: str = typer.Option(
        None,
        "--inputs",
        help="data: image glob ('data/**/*.jpg'), image folder, .npz, "
        ".parquet/.csv (default: generated samples)",
    ),
    batch: int = typer.Option(16, "--batch", "-b", help="batch size"),
    samples: int = typer.Option(8, "--samples", help="generated samples when --inputs is not given"),
    limit: int = typer.Option(None, "--limit", help="at most this many samples"),
    top_k: int = typer.Option(5, "--top-k", help="classes shown per sample for score outputs"),
    providers: list[str] = typer.Option(None, "--provider", help=_PROVIDER_HELP),
    out: Path = typer.Option(None, "--out", "-o", help="write the predictions as JSON here"),
    pipeline: Path = typer.Option(
        None,
        "--pipeline",
        help="a two-stage pipeline.json (detect -> NMS -> crop -> "
        "classify -> label map) to run instead of one model",
    ),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Run PyTorch or ONNX Runtime over data (the same preprocessing as verification) and show predictions."""
    from onnxship._util import atomic_write_json
    from onnxship.runtime import InferConfig, infer
    from onnxship.spec import parse_input_specs

    if pipeline is not None:
        _infer_pipeline(pipeline, engine, inputs, batch, samples, limit, out, as_json)
        return

    if onnx_path is None and model and model.endswith(".onnx"):
        onnx_path, model = Path(model), None
    try:
        config = InferConfig(
            engine=engine,
            inputs=inputs,
            batch=batch,
            samples=samples,
            limit=limit,
            top_k=top_k,
            session=session_config(providers, 0, False, None),
        )
        specs = parse_input_specs(list(input_specs)) if input_specs else None
    except ConfigError as exc:
        raise fail(exc, USAGE_EXIT) from None
    spec = model_argument(model, checkpoint, trust_checkpoint, model_args)
    if onnx_path is None and specs is None and spec is not None and spec.module_attr("ONNXSHIP_INPUTS", None):
        specs = parse_input_specs(list(spec.module_attr("ONNXSHIP_INPUTS")))  # the model module's defaults
    result = infer(onnx_path, config, model=spec, specs=specs)
    if out:
        if not out.parent.is_dir():
            raise ConfigError(f"folder {str(out.parent)!r} for --out does not exist", hint="create it first")
        atomic_write_json(out, result.to_dict())
    if as_json:
        console.print_json(json.dumps(result.to_dict(), default=str))
        return
    table = Table(title=f"{result.engine} on {result.source}", header_style="bold")
    table.add_column("sample", overflow="fold")
    names = list(result.output_shapes)
    for n in names:
        table.add_column(n, overflow="fold")
    for rec in result.predictions[:50]:
        cells = []
        for n in names:
            v = rec.get(n)
            if isinstance(v, dict) and "top" in v:
                cells.append(", ".join(f"{c}:{s:.3g}" for c, s in v["top"]))
            else:
                text = json.dumps(v)
                cells.append(text if len(text) < 80 else text[:77] + "...")
        label = f" (label {rec['label']})" if "label" in rec else ""
        table.add_row(f"{rec['id']}{label}", *cells)
    console.print(table)
    more = len(result.predictions) - 50
    console.print(
        f"{len(result.predictions)} samples in {result.seconds:.3f} s on {', '.join(result.providers)}"
        + (f"  ({more} more not shown; use --out or --json)" if more > 0 else "")
        + (f"  → {out}" if out else "")
    )


def _infer_pipeline(
    manifest: Path,
    engine: str,
    inputs: str | None,
    batch: int,
    samples: int,
    limit: int | None,
    out: Path | None,
    as_json: bool,
) -> None:
    from onnxship._util import atomic_write_json
    from onnxship.recipes.two_stage import infer_pipeline
    from onnxship.runtime import InferConfig

    try:
        config = InferConfig(engine=engine, inputs=inputs, batch=batch, samples=samples, limit=limit)
    except ConfigError as exc:
        raise fail(exc, USAGE_EXIT) from None
    if out and not out.parent.is_dir():
        raise ConfigError(f"folder {str(out.parent)!r} for --out does not exist", hint="create it first")
    result = infer_pipeline(manifest, config)
    if out:
        atomic_write_json(out, result.to_dict())
    if as_json:
        console.print_json(json.dumps(result.to_dict(), default=str))
        return
    table = Table(title=f"pipeline ({result.engine}) on {result.source}", header_style="bold")
    for col in ("image", "box (xyxy)", "score", "class", "edi_code", "prob"):
        table.add_column(col)
    for i, dets in enumerate(result.images[:50]):
        for d in dets or [None]:
            if d is None:
                table.add_row(str(i), "-", "", "", "", "")
                continue
            table.add_row(
                str(i),
                ", ".join(f"{v:.1f}" for v in d["box"]),
                f"{d['score']:.3f}",
                f"{d['class_id']} {d.get('name', '')}",
                d.get("edi_code", ""),
                f"{d['prob']:.3f}",
            )
    console.print(table)
    console.print(
        f"{len(result.images)} images, {sum(len(d) for d in result.images)} detections in "
        f"{result.seconds:.3f} s" + (f"  → {out}" if out else "")
    )


@app.command("bench")
@handle_errors
def bench_command(
    onnx_path: Path = typer.Argument(..., help="the FP32 .onnx model"),
    model: str = typer.Option(
        None, "--model", "-m", help="file.py:factory: also time PyTorch on the same inputs"
    ),
    checkpoint: Path = typer.Option(None, "--checkpoint", "-c", help="weights for --model"),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="allow full pickles"),
    model_args: list[str] = typer.Option(None, "--model-arg", help="factory keyword argument key=value"),
    variants: str = typer.Option(
        "",
        "--variants",
        help="also time these variants, e.g. int8,fp16 (built and gated by `optimize` when no file exists)",
    ),
    batches: str = typer.Option("1,8,32", "--batch", "-b", help="batch sizes, comma-separated"),
    warmup: int = typer.Option(10, "--warmup", help="untimed runs before measuring"),
    min_runs: int = typer.Option(30, "--min-runs", help="timed runs at least"),
    min_seconds: float = typer.Option(1.0, "--min-seconds", help="time each case for at least this long"),
    threads: int = typer.Option(0, "--threads", help="intra-op threads for both engines (0: default)"),
    providers: list[str] = typer.Option(None, "--provider", help=_PROVIDER_HELP),
    trt_fp16: bool = typer.Option(False, "--trt-fp16", help="TensorRT: allow fp16 kernels"),
    trt_cache: Path = typer.Option(None, "--trt-cache", help="TensorRT: engine cache folder"),
    json_out: Path = typer.Option(None, "--json", help="write the results as JSON here"),
) -> None:
    """Latency p50/p90/p99 and throughput per engine, variant and batch size (same inputs for every engine)."""
    from onnxship._util import atomic_write_json
    from onnxship.runtime import BenchConfig, bench

    try:
        config = BenchConfig(
            batch_sizes=_int_list(batches, "--batch"),
            variants=tuple(v for v in variants.split(",") if v.strip()),
            warmup=warmup,
            min_runs=min_runs,
            min_seconds=min_seconds,
            max_runs=max(5000, min_runs),
            threads=threads,
            session=session_config(providers, threads, trt_fp16, trt_cache),
        )
        from onnxship.optimize import build_variants, normalize_variant

        for v in config.variants:
            normalize_variant(v)
    except ConfigError as exc:
        raise fail(exc, USAGE_EXIT) from None
    if json_out and not json_out.parent.is_dir():
        raise fail(
            ConfigError(f"folder {str(json_out.parent)!r} for --json does not exist", hint="create it first"),
            USAGE_EXIT,
        )
    spec = model_argument(model, checkpoint, trust_checkpoint, model_args)
    err_console.print(f"benchmarking {onnx_path} (batch {list(config.batch_sizes)}) ...")
    result = bench(onnx_path, config, model=spec, build_variants=build_variants)
    _render_bench(result)
    if json_out:
        atomic_write_json(json_out, result.to_dict())
        console.print(f"results: {json_out}")


def _render_bench(result: BenchResult) -> None:
    table = Table(
        title=f"{result.model.name}  ({result.environment.get('cpu_count')} CPUs, threads "
        f"{result.environment.get('threads')})",
        header_style="bold",
    )
    for col in (
        "engine",
        "variant",
        "batch",
        "runs",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "samples/s",
        "vs onnx fp32",
    ):
        table.add_column(col, justify="right" if col not in ("engine", "variant") else "left")
    for r in result.rows:
        if r.skipped:
            table.add_row(
                r.engine, r.variant, str(r.batch), "-", "-", "-", "-", "-", f"[yellow]{r.skipped}[/]"
            )
            continue
        sp = result.speedup(r.variant, r.batch, engine=r.engine)
        sp_text = (
            ""
            if sp is None or (r.engine, r.variant) == ("onnx", "fp32")
            else (f"[green]{sp:.2f}×[/]" if sp >= 1 else f"[red]{sp:.2f}×[/]")
        )
        table.add_row(
            r.engine,
            r.variant,
            str(r.batch),
            str(r.runs),
            f"{r.p50_ms:.3f}",
            f"{r.p90_ms:.3f}",
            f"{r.p99_ms:.3f}",
            f"{r.throughput:,.0f}",
            sp_text,
        )
    console.print(table)
    for name, info in result.variants.items():
        if info.get("skipped"):
            console.print(f"[yellow]variant {name}:[/] {info['skipped']}")

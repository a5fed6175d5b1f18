"""``onnxship recipes deeplog|mscred|two-stage ...``: the worked systems of issue 8.

Size: over 400 lines on purpose: flag parsing only, for the subcommands of three recipes; the logic lives in
onnxship.recipes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from onnxship._errors import ConfigError
from onnxship.cli._app import app
from onnxship.cli._common import USAGE_EXIT, console, err_console, fail, handle_errors
from onnxship.cli._render import Table, Typer

__all__ = [
    "build_command",
    "detect_command",
    "parse_command",
    "ship_command",
    "train_command",
    "mscred_ship_command",
    "mscred_train_command",
    "two_stage_build_command",
]

recipes_app = Typer(help="Complete worked systems built on onnxship's verbs.", no_args_is_help=True)
deeplog_app = Typer(
    help="DeepLog log anomaly detection: parse -> build -> train -> ship -> detect.", no_args_is_help=True
)
recipes_app.add_typer(deeplog_app, name="deeplog")
app.add_typer(recipes_app, name="recipes")


def _config(factory: Any, **kwargs: Any) -> Any:
    """Build a Config; its validation errors are usage errors (exit 2)."""
    try:
        return factory(**kwargs)
    except ConfigError as exc:
        raise fail(exc, USAGE_EXIT) from None


def _emit(result: Any, as_json: bool) -> bool:
    if as_json:
        console.print_json(json.dumps(result.to_dict(), default=str))
    return as_json


def _notes(notes: list[str]) -> None:
    for n in notes:
        console.print(f"[cyan]note:[/] {n}", soft_wrap=True)


@deeplog_app.command("parse")
@handle_errors
def parse_command(
    log: Path = typer.Option(..., "--log", help="raw log file (e.g. ../shared/data/loghub/BGL_2k.log)"),
    fmt: str = typer.Option(..., "--format", help="line format: hdfs | bgl"),
    out: Path = typer.Option(Path("work/parsed.parquet"), "--out", help="parsed.parquet to write"),
    sim_th: float = typer.Option(0.5, "--sim-th", help="Drain similarity threshold"),
    depth: int = typer.Option(4, "--depth", help="Drain parse-tree depth"),
    reference: Path = typer.Option(
        None, "--reference", help="loghub *_structured.csv to score against (default: <log>_structured.csv)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Mine templates with Drain3 and write parsed.parquet (reports grouping accuracy when a reference exists)."""
    from onnxship.recipes.deeplog import ParseConfig, parse_logs

    cfg = _config(ParseConfig, log=log, format=fmt, out=out, sim_th=sim_th, depth=depth, reference=reference)
    r = parse_logs(cfg)
    if _emit(r, as_json):
        return
    ga = f"{r.grouping_accuracy:.4f}" if r.grouping_accuracy is not None else "n/a (no reference)"
    console.print(
        f"[green]✓[/] {r.out}: {r.parsed} lines, {r.templates} templates "
        f"(reference: {r.reference_templates or 'n/a'}), grouping accuracy {ga}  ({r.seconds:.1f} s)"
    )
    _notes(r.notes)


@deeplog_app.command("build")
@handle_errors
def build_command(
    parsed: Path = typer.Option(..., "--parsed", help="parsed.parquet from parse"),
    out_dir: Path = typer.Option(
        Path("work"), "--out-dir", help="folder for sequences.parquet and vocab.json"
    ),
    window: int = typer.Option(10, "--window", help="events per window (the model's seq_len)"),
    template_col: str = typer.Option("template", "--template-col", help="column with the template STRING"),
    session: str = typer.Option("auto", "--session", help="auto | block | node | time | stream"),
    time_window: int = typer.Option(3600, "--time-window", help="seconds per session with --session time"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Build vocab.json (template string -> id) and sliding windows -> next event (sequences.parquet)."""
    from onnxship.recipes.deeplog import BuildConfig, build_sequences

    cfg = _config(
        BuildConfig,
        parsed=parsed,
        out_dir=out_dir,
        window=window,
        template_col=template_col,
        session=session,
        time_window=time_window,
    )
    r = build_sequences(cfg)
    if _emit(r, as_json):
        return
    console.print(
        f"[green]✓[/] {r.sequences}: {r.windows} windows of {r.window} from {r.sessions_used}/{r.sessions} "
        f"{r.session} session(s), {r.alert_windows} with an alert next event"
    )
    console.print(
        f"[green]✓[/] {r.vocab}: {r.vocab_size} templates (keyed by template string, ids 0..{r.vocab_size - 1})"
    )
    _notes(r.notes)


@deeplog_app.command("train")
@handle_errors
def train_command(
    seq: Path = typer.Option(..., "--seq", help="sequences.parquet from build"),
    vocab: Path = typer.Option(..., "--vocab", help="vocab.json from build"),
    out: Path = typer.Option(Path("work/deeplog.pt"), "--out", help="checkpoint to write"),
    log: Path = typer.Option(None, "--log", help="JSON-lines training log (default: <out>.train.jsonl)"),
    model: str = typer.Option(
        None, "--model", help="factory spec (default: examples/deeplog/model.py:build_model)"
    ),
    embed_dim: int = typer.Option(32, "--embed-dim"),
    hidden: int = typer.Option(64, "--hidden"),
    layers: int = typer.Option(2, "--layers"),
    epochs: int = typer.Option(5, "--epochs"),
    max_steps: int = typer.Option(None, "--max-steps", help="stop after this many optimizer steps"),
    batch_size: int = typer.Option(64, "--batch-size"),
    lr: float = typer.Option(2e-3, "--lr", help="learning rate"),
    train_on: str = typer.Option("normal", "--train-on", help="normal (windows without alerts) | all"),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(None, "--threads", help="torch intra-op threads (default: torch's)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Train the DeepLog LSTM on CPU; logs loss/grad_norm/learning_rate per step as JSON lines."""
    from onnxship.recipes.deeplog import TrainConfig, train_deeplog

    cfg = _config(
        TrainConfig,
        sequences=seq,
        vocab=vocab,
        out=out,
        log=log,
        model=model,
        embed_dim=embed_dim,
        hidden=hidden,
        layers=layers,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        learning_rate=lr,
        train_on=train_on,
        seed=seed,
        threads=threads,
    )
    r = train_deeplog(cfg)
    if _emit(r, as_json):
        return
    console.print(
        f"[green]✓[/] {r.checkpoint}: {r.steps} steps / {r.epochs} epochs on {r.windows} windows, loss "
        f"{r.first_loss:.3f} -> {r.final_loss:.3f}, train top-{cfg.top_g} hit rate "
        f"{r.train_top_g_hit_rate:.3f}  ({r.seconds:.1f} s)"
    )
    console.print(f"  training log: {r.log}")
    _notes(r.notes)


@deeplog_app.command("ship")
@handle_errors
def ship_command(
    model: Path = typer.Option(..., "--model", help="checkpoint from train (deeplog.pt)"),
    vocab: Path = typer.Option(..., "--vocab", help="vocab.json from build"),
    seq_len: int = typer.Option(None, "--seq-len", help="export window (default: the checkpoint's seq_len)"),
    portable: bool = typer.Option(False, "--portable", help='also write the engine vocab {"0": "template"}'),
    seq: Path = typer.Option(
        None, "--seq", help="real windows for the top-g check (default: sequences.parquet beside the vocab)"
    ),
    releases: Path = typer.Option(Path("releases"), "--releases", help="releases root"),
    name: str = typer.Option("deeplog", "--name", help="release name"),
    top_g: int = typer.Option(9, "--top-g", help="DeepLog's g (stored in the metadata)"),
    strategy: str = typer.Option("auto", "--strategy", help="exporter chain: auto | dynamo | torchscript"),
    model_spec: str = typer.Option(
        None, "--model-spec", help="factory (default: examples/deeplog/model.py:build_model)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Export, verify and bundle the model with its vocab; latest moves only on 100% top-g agreement."""
    from onnxship.recipes.deeplog import DeepLogShipConfig, ship_deeplog

    cfg = _config(
        DeepLogShipConfig,
        checkpoint=model,
        vocab=vocab,
        releases=releases,
        name=name,
        seq_len=seq_len,
        portable=portable,
        sequences=seq,
        top_g=top_g,
        strategy=strategy,
        model=model_spec,
    )
    if not as_json:
        err_console.print(f"shipping [bold]{model}[/] with {vocab} ({strategy}) ...")
    r = ship_deeplog(cfg)
    if _emit(r, as_json):
        return
    rel = r.release
    console.print(
        f"[green]✓[/] {rel.path}  ({rel.export.strategy}, opset {rel.export.opset}, vocab_size "
        f"{r.vocab_size}, seq_len {r.seq_len})"
    )
    assets = ", ".join(f for a in rel.assets for f in sorted(a.files))
    console.print(f"  assets: {assets}")
    if r.sequence_check:
        c = r.sequence_check
        console.print(
            f"  real windows: {c['samples']}, top-{c['top_g']} decision agreement "
            f"{c['decision_agreement']:.2%}, top-g set agreement {c['top_g_set_agreement']:.2%}"
        )
    console.print(f"  latest -> {rel.version}")
    _notes(r.notes)


@deeplog_app.command("detect")
@handle_errors
def detect_command(
    release: Path = typer.Option(..., "--release", help="releases/deeplog/latest (or a version folder)"),
    parsed: Path = typer.Option(..., "--parsed", help="parsed.parquet from parse"),
    top_g: int = typer.Option(None, "--top-g", help="DeepLog's g (default: the release's, else 9)"),
    session: str = typer.Option("auto", "--session", help="as in build: auto | block | node | time | stream"),
    time_window: int = typer.Option(3600, "--time-window", help="seconds per session with --session time"),
    compare_torch: bool = typer.Option(
        None,
        "--compare-torch/--no-compare-torch",
        help="compare with PyTorch (default: when torch and the checkpoint exist)",
    ),
    checkpoint: Path = typer.Option(
        None, "--checkpoint", help="checkpoint for the comparison (default: recorded)"
    ),
    out: Path = typer.Option(None, "--out", help="write per-window decisions (parquet)"),
    golden_out: Path = typer.Option(
        None, "--golden-out", help="write golden windows JSON for other runtimes"
    ),
    golden_count: int = typer.Option(32, "--golden-count", help="windows in --golden-out"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Flag windows whose next event is outside the top g (ONNX Runtime only); P/R/F1 vs alert labels."""
    from onnxship.recipes.deeplog import DetectConfig, detect_anomalies

    mode = "auto" if compare_torch is None else ("always" if compare_torch else "never")
    cfg = _config(
        DetectConfig,
        release=release,
        parsed=parsed,
        top_g=top_g,
        session=session,
        time_window=time_window,
        compare_torch=mode,
        checkpoint=checkpoint,
        out=out,
        golden_out=golden_out,
        golden_count=golden_count,
    )
    r = detect_anomalies(cfg)
    if _emit(r, as_json):
        return
    console.print(
        f"[green]✓[/] {r.release}: {r.windows} windows ({r.session} sessions, window {r.seq_len}), "
        f"{r.anomalies} anomalous at top-{r.top_g} ({r.anomalies / max(r.windows, 1):.1%}); "
        f"{r.unknown} with unknown templates"
    )
    if r.metrics is not None:
        table = Table(title="vs alert labels", header_style="bold")
        for col in ("engine", "precision", "recall", "F1", "anomalies"):
            table.add_column(col)
        table.add_row(
            "onnxruntime",
            f"{r.metrics['precision']:.3f}",
            f"{r.metrics['recall']:.3f}",
            f"{r.metrics['f1']:.3f}",
            str(r.anomalies),
        )
        if r.torch and r.torch.get("metrics"):
            m = r.torch["metrics"]
            table.add_row(
                "pytorch",
                f"{m['precision']:.3f}",
                f"{m['recall']:.3f}",
                f"{m['f1']:.3f}",
                str(m["tp"] + m["fp"]),
            )
        console.print(table)
    if r.session_metrics is not None:
        s = r.session_metrics
        console.print(
            f"  per {r.session} session ({s['samples']}): precision {s['precision']:.3f}, recall "
            f"{s['recall']:.3f}, F1 {s['f1']:.3f}"
        )
    if r.torch:
        a = r.torch["agreement"]
        console.print(
            f"  torch vs onnx: top-{a['top_g']} decision agreement {a['decision_agreement']:.2%} on "
            f"{a['samples']} scored windows"
        )
    for label, path in (("decisions", r.out), ("golden windows", r.golden)):
        if path:
            console.print(f"  {label}: {path}")
    _notes(r.notes)


# ------------------------------------------------------------------------------------------ two-stage ------------
two_stage_app = Typer(
    help="Two-stage detect -> NMS -> crop -> classify -> edi_code pipeline.", no_args_is_help=True
)
recipes_app.add_typer(two_stage_app, name="two-stage")


@two_stage_app.command("build")
@handle_errors
def two_stage_build_command(
    out: Path = typer.Option(
        Path("releases/two_stage"),
        "--out",
        help="bundles go to <out>/two_stage-<UTC>-<sha>/ (+ <out>/latest)",
    ),
    image_size: int = typer.Option(64, "--image-size", help="detector input H = W"),
    crop_size: int = typer.Option(32, "--crop-size", help="classifier input H = W"),
    detector_steps: int = typer.Option(150, "--detector-steps", help="detector training steps"),
    classifier_steps: int = typer.Option(120, "--classifier-steps", help="classifier training steps"),
    conf: float = typer.Option(0.3, "--conf", help="NMS confidence threshold"),
    iou: float = typer.Option(0.5, "--iou", help="NMS IoU threshold"),
    strategy: str = typer.Option("auto", "--strategy", help="exporter chain: auto | dynamo | torchscript"),
    classifier: str = typer.Option(
        "builtin",
        "--classifier",
        help="builtin | timm:NAME (e.g. timm:convnext_atto; needs the families extra)",
    ),
    detector: str = typer.Option(
        "builtin",
        "--detector",
        help="builtin | yolo:MODEL.yaml (e.g. yolo:yolov8n.yaml; needs the families extra)",
    ),
    threads: int = typer.Option(None, "--threads", help="torch intra-op threads (default: torch's)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Train both stages briefly, export + verify each, bundle them with pipeline.json and the end-to-end check."""
    from onnxship.recipes.two_stage import TwoStageBuildConfig, build_two_stage
    from onnxship.verify._tasks import NmsConfig

    nms = _config(NmsConfig, conf_threshold=conf, iou_threshold=iou)
    cfg = _config(
        TwoStageBuildConfig,
        out=out,
        image_size=image_size,
        crop_size=crop_size,
        detector_steps=detector_steps,
        classifier_steps=classifier_steps,
        nms=nms,
        strategy=strategy,
        classifier=classifier,
        detector=detector,
    )
    if threads:
        import torch

        torch.set_num_threads(threads)
    err_console.print(f"building the two-stage pipeline into {out} ...")
    r = build_two_stage(cfg)
    if _emit(r, as_json):
        return
    m = r.manifest
    for stage in ("detector", "classifier"):
        tm = m[stage]["task_metrics"] or {}
        extra = (
            f"mAP@0.5 Δ {tm.get('map_0_5_delta')}, mAP@0.5:0.95 Δ {tm.get('map_0_5_0_95_delta')}"
            if stage == "detector"
            else f"top-1 mismatch {tm.get('top1_mismatch_rate')}, prob MSE mean {tm.get('prob_mse_mean'):.3g}"
        )
        console.print(
            f"[green]✓[/] {stage}: {m[stage]['strategy']}, opset {m[stage]['opset']}; "
            f"{m[stage]['verdict']}; {extra}",
            soft_wrap=True,
        )
    a = m["agreement"]
    console.print(
        f"[green]✓[/] pipeline torch vs onnx on {a['images']} images: {a['matched']}/"
        f"{a['detections_reference']} detections matched, edi_code agreement {a['edi_code_agreement']}, "
        f"mAP@0.5 vs truth {a.get('map_0_5_reference'):.3f} / {a.get('map_0_5_candidate'):.3f}",
        soft_wrap=True,
    )
    console.print(f"[green]✓[/] {r.path}  (manifest: {r.path / 'pipeline.json'}, {r.seconds:.1f} s)")


# ------------------------------------------------------------------------------------------------------ MSCRED
mscred_app = Typer(
    help="MSCRED beside DeepLog: signature matrices -> conv/ConvLSTM/deconv -> residual score.",
    no_args_is_help=True,
)
recipes_app.add_typer(mscred_app, name="mscred")


@mscred_app.command("train")
@handle_errors
def mscred_train_command(
    parsed: Path = typer.Option(..., "--parsed", help="parsed.parquet from `recipes deeplog parse`"),
    out_dir: Path = typer.Option(
        Path("work"), "--out-dir", help="folder for mscred.pt and mscred_windows.npz"
    ),
    features: int = typer.Option(8, "--features", help="channels: top templates + 'other' (even)"),
    bin_lines: int = typer.Option(10, "--bin-lines", help="log lines per step"),
    window: int = typer.Option(5, "--window", help="steps per input (static in the export)"),
    steps: int = typer.Option(200, "--steps", help="optimizer steps"),
    threads: int = typer.Option(None, "--threads", help="torch intra-op threads (default: torch's)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Train MSCRED on the alert-free windows of a parsed log and calibrate the residual threshold (p99)."""
    from onnxship.recipes.mscred import MscredTrainConfig, SignatureConfig, train_mscred

    sig = _config(SignatureConfig, features=features, bin_lines=bin_lines, window=window)
    cfg = _config(MscredTrainConfig, parsed=parsed, out_dir=out_dir, signatures=sig, steps=steps)
    if threads:
        import torch

        torch.set_num_threads(threads)
    r = train_mscred(cfg)
    if _emit(r, as_json):
        return
    alert = "n/a" if r.score_mean_alert is None else f"{r.score_mean_alert:.3g}"
    console.print(
        f"[green]✓[/] {r.checkpoint}: {r.samples} alert-free windows, loss {r.loss_first:.3g} -> "
        f"{r.loss_last:.3g}  ({r.seconds:.1f} s)",
        soft_wrap=True,
    )
    console.print(
        f"  residual score: normal mean {r.score_mean_normal:.3g}, alert mean {alert}, threshold (p99) "
        f"{r.score_threshold:.3g}; {r.flagged_alert_windows}/{r.alert_windows} alert windows flagged",
        soft_wrap=True,
    )


@mscred_app.command("ship")
@handle_errors
def mscred_ship_command(
    model: Path = typer.Option(..., "--model", help="mscred.pt from train"),
    windows: Path = typer.Option(
        None, "--windows", help="real windows (default: mscred_windows.npz beside --model)"
    ),
    releases: Path = typer.Option(Path("releases"), "--releases", help="releases root"),
    name: str = typer.Option("mscred", "--name", help="release name"),
    strategy: str = typer.Option("auto", "--strategy", help="exporter chain: auto | dynamo | torchscript"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Export, verify (golden, batch sweep, real windows) and bundle MSCRED through `onnxship ship`."""
    from onnxship.recipes.mscred import MscredShipConfig, ship_mscred

    cfg = _config(
        MscredShipConfig, checkpoint=model, windows=windows, releases=releases, name=name, strategy=strategy
    )
    err_console.print(f"shipping {model} ({strategy}) ...")
    r = ship_mscred(cfg)
    if _emit(r, as_json):
        return
    console.print(
        f"[green]✓[/] {r.path}  ({r.export.strategy}, opset {r.export.opset}; window static, batch dynamic)",
        soft_wrap=True,
    )
    console.print(f"  {r.report.summary()}", soft_wrap=True)
    if r.latest:
        console.print(f"  latest -> {r.version}")

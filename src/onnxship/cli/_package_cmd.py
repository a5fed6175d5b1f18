"""``onnxship ship``, ``onnxship package triton|kserve`` and ``onnxship list``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from onnxship.cli._app import app
from onnxship.cli._common import console, err_console, handle_errors, parse_kv
from onnxship.cli._preflight import check_model_flags
from onnxship.cli._render import Table, Typer

if TYPE_CHECKING:
    from onnxship.ship import ShipResult

__all__ = ["kserve_command", "list_command", "package_app", "ship_command", "triton_command"]

package_app = Typer(help="Package a release for a serving platform.", no_args_is_help=True)
app.add_typer(package_app, name="package")


@app.command("ship")
@handle_errors
def ship_command(
    config_path: Path = typer.Option(
        None, "--config", help="onnxship.yaml (flags override it; so do ONNXSHIP_*)"
    ),
    model: str = typer.Option(None, "--model", "-m", help="file.py:factory or package.module:factory"),
    inputs: list[str] = typer.Option(
        None, "--input", "-i", help="NAME:DIMS:DTYPE[:LOW..HIGH], repeat per input"
    ),
    checkpoint: Path = typer.Option(None, "--checkpoint", "-c", help="weights (state_dict) to load"),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="allow full pickles"),
    model_args: list[str] = typer.Option(None, "--model-arg", help="factory keyword argument key=value"),
    name: str = typer.Option(None, "--name", help="model/release name (default: from the spec)"),
    releases: Path = typer.Option(None, "--releases", help="releases root (default: releases)"),
    strategy: str = typer.Option(None, "--strategy", help="auto | dynamo | torchscript"),
    opsets: list[int] = typer.Option(
        None, "--opset", help="opset(s) to try in order (default: dynamo 18, TorchScript 17)"
    ),
    allow_static: bool = typer.Option(
        None,
        "--allow-static/--no-allow-static",
        help="accept a static export when no dynamic candidate verifies",
    ),
    output_names: list[str] = typer.Option(None, "--output-name", help="output names in order"),
    meta: list[str] = typer.Option(None, "--meta", help="user metadata key=value"),
    fp16: bool = typer.Option(None, "--fp16/--no-fp16", help="export in float16"),
    allow_nonfinite: bool = typer.Option(
        None,
        "--allow-nonfinite/--no-allow-nonfinite",
        help="accept NaN/Inf outputs where both engines agree (default: they fail the gate)",
    ),
    assets: list[str] = typer.Option(
        None, "--asset", help="name=path, e.g. vocab=vocab.json, labels=labels.json"
    ),
    portable: bool = typer.Option(
        None, "--portable/--no-portable", help='also write the inference-engine vocab {"0": "template"}'
    ),
    no_latest: bool = typer.Option(False, "--no-latest", help="do not move releases/<name>/latest"),
    golden_samples: int = typer.Option(
        None, "--golden-samples", help="samples stored in golden.npz (default 8)"
    ),
    triton_repo: Path = typer.Option(None, "--triton-repo", help="also write a Triton repository here"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Export, verify and bundle a model into releases/<name>/<name>-<UTC>-<gitsha|nogit>/ and move latest."""
    check_model_flags(model, checkpoint=checkpoint, inputs=inputs)  # before torch loads
    from onnxship.package import parse_asset_arg
    from onnxship.ship import ship
    from onnxship.spec._config import load_ship_config

    cfg = load_ship_config(config_path)
    overrides = [
        (cfg.model, "spec", model),
        (cfg.model, "checkpoint", str(checkpoint) if checkpoint else None),
        (cfg.model, "name", name),
        (cfg.paths, "releases", str(releases) if releases else None),
        (cfg.export, "strategy", strategy),
        (cfg.export, "opsets", list(opsets) if opsets else None),
        (cfg.export, "allow_static", allow_static),
        (cfg.export, "output_names", list(output_names or []) or None),
        (cfg.export, "fp16", fp16),
        (cfg.export, "inputs", list(inputs or []) or None),
        (cfg.package, "portable", portable),
        (cfg.verify, "golden_samples", golden_samples),
        (cfg.verify, "allow_nonfinite", allow_nonfinite),
        (cfg.package.triton, "repo", str(triton_repo) if triton_repo else None),
    ]
    for section, key, value in overrides:
        if value is not None:
            setattr(section, key, value)
    if trust_checkpoint:
        cfg.model.trust_checkpoint = True
    if model_args:
        cfg.model.args = {**cfg.model.args, **parse_kv(model_args, "--model-arg")}
    if meta:
        cfg.export.metadata = {**cfg.export.metadata, **parse_kv(meta, "--meta")}
    if no_latest:
        cfg.package.update_latest = False
    extra_assets = [parse_asset_arg(a) for a in assets or []]
    if not as_json:
        err_console.print(f"shipping [bold]{cfg.model.spec or '?'}[/] → {cfg.paths.releases}/ ...")
    result = ship(config=cfg, assets=extra_assets)
    if as_json:
        console.print_json(json.dumps(result.to_dict(), default=str))
        return
    _render_ship(result)


def _render_ship(result: ShipResult) -> None:
    report = result.report
    worst = report.worst_output or {}
    console.print(
        f"[green]✓[/] released [bold]{result.version}[/]  ({result.export.strategy}, opset "
        f"{result.export.opset}; {report.summary()}; max abs err {float(worst.get('max_abs') or 0.0):.2e};"
        f" {result.seconds:.1f} s)",
        soft_wrap=True,
    )
    for w in (report.evidence or {}).get("weak") or []:
        console.print(f"  [yellow]evidence:[/] {w}", soft_wrap=True)
    console.print(f"  bundle:  {result.path}", soft_wrap=True)
    console.print(f"  model:   {result.release.model_path.name}  sha256 {result.release.meta['onnx_sha256']}")
    console.print(
        "  report:  report.json, report.html   golden: golden.npz   metadata: "
        f"{result.release.model_path.name}.meta.json",
        soft_wrap=True,
    )
    for a in result.assets:
        console.print(
            f"  asset:   {a.name} ({a.kind}, {a.size or '-'} entries) → assets/{', assets/'.join(a.files)}"
        )
    for v in result.variants:
        if v["status"] == "kept":
            console.print(
                f"  variant: {v['variant']} → {v['file']} ({v['size_bytes']:,} bytes, passed its gate)",
                soft_wrap=True,
            )
        else:
            console.print(f"  variant: [yellow]{v['variant']} rejected[/]: {v['reason']}", soft_wrap=True)
    if result.latest:
        console.print(f"  latest:  {result.latest} → {result.version}", soft_wrap=True)
    else:
        console.print("  latest:  not moved (--no-latest)")
    if result.triton:
        console.print(
            f"  triton:  {result.triton.config_path} (max_batch_size {result.triton.max_batch_size})",
            soft_wrap=True,
        )
    for n in result.notes + result.export.notes:
        console.print(f"[cyan]note:[/] {n}", soft_wrap=True)
    if result.export.static:
        console.print("[bold red]STATIC export: the model only accepts the export shape[/]")


@package_app.command("triton")
@handle_errors
def triton_command(
    releases: list[Path] = typer.Argument(
        ..., help="release folder(s), .../latest, or releases/<name> (all versions)"
    ),
    repo: Path = typer.Option(..., "--repo", help="Triton model repository root"),
    max_batch_size: int = typer.Option(
        None, "--max-batch-size", help="default: the verified batch maximum; 0 disables batching"
    ),
    instances: int = typer.Option(1, "--instances", help="instance_group count"),
    kind: str = typer.Option("KIND_CPU", "--kind", help="KIND_CPU | KIND_GPU | KIND_AUTO"),
    dynamic_batching: bool = typer.Option(False, "--dynamic-batching", help="add a dynamic_batching block"),
    preferred: list[int] = typer.Option(
        None, "--preferred-batch-size", help="dynamic batching preferred size(s)"
    ),
    max_queue_delay_us: int = typer.Option(0, "--max-queue-delay-us", help="dynamic batching queue delay"),
    version_policy: str = typer.Option("latest:1", "--version-policy", help="all | latest:N | specific:1,3"),
    name: str = typer.Option(None, "--name", help="Triton model name (default: the release name)"),
    warmup: bool = typer.Option(
        False,
        "--warmup",
        help="model_warmup on a golden.npz sample (Triton runs it before the model is ready)",
    ),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Write <repo>/<name>/config.pbtxt and <repo>/<name>/<N>/model.onnx from verified releases."""
    from onnxship.package import TritonConfig, package_triton

    cfg = TritonConfig(
        repo=repo,
        max_batch_size=max_batch_size,
        instances=instances,
        kind=kind,
        dynamic_batching=dynamic_batching,
        preferred_batch_sizes=tuple(preferred or ()),
        max_queue_delay_us=max_queue_delay_us,
        version_policy=version_policy,
        model_name=name,
        warmup=warmup,
    )
    result = package_triton(list(releases), cfg)
    if as_json:
        console.print_json(json.dumps(result.to_dict(), default=str))
        return
    for n in result.notes:
        console.print(f"[cyan]note:[/] {n}")
    console.print(f"[green]✓[/] {result.config_path}  (validated against Triton's ModelConfig)")
    for version, release in result.versions.items():
        console.print(f"  version {version}: {release}")
    console.print(result.config_text, markup=False, highlight=False)


@package_app.command("kserve")
@handle_errors
def kserve_command(
    release: Path = typer.Argument(..., help="release folder or releases/<name>/latest"),
    storage_uri: str = typer.Option(
        ...,
        "--storage-uri",
        help="where the bundle (or, for --runtime triton, model_repository/) is uploaded",
    ),
    runtime: str = typer.Option("onnxship", "--runtime", help="onnxship (onnxship serve) | triton"),
    out: Path = typer.Option(None, "--out", help="output folder (default: kserve/<name>)"),
    name: str = typer.Option(None, "--name", help="InferenceService name (default: the release name)"),
    namespace: str = typer.Option(None, "--namespace", help="Kubernetes namespace"),
    image: str = typer.Option(None, "--image", help="onnxship runtime image (built from deploy/Dockerfile)"),
    min_replicas: int = typer.Option(1, "--min-replicas", help="0 lets KServe scale to zero"),
    max_replicas: int = typer.Option(3, "--max-replicas"),
    cpu: str = typer.Option("1", "--cpu", help="CPU request (the limit is twice it)"),
    memory: str = typer.Option("1Gi", "--memory", help="memory request (the limit is twice it)"),
    gpus: int = typer.Option(0, "--gpus", help="nvidia.com/gpu limit"),
    max_batch_size: int = typer.Option(
        None, "--max-batch-size", help="default: the release's largest batch; may only lower it"
    ),
    token_secret: str = typer.Option(
        None, "--token-secret", help="Secret whose key 'token' becomes ONNXSHIP_TOKEN (onnxship runtime)"
    ),
    service_account: str = typer.Option(
        None, "--service-account", help="service account that holds the storage credentials"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Write a KServe InferenceService (and, for --runtime triton, its model repository) for a release."""
    from onnxship.package._kserve import KServeConfig, package_kserve

    kwargs = {"image": image} if image else {}
    cfg = KServeConfig(
        storage_uri=storage_uri,
        runtime=runtime,
        out=out,
        name=name,
        namespace=namespace,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        cpu=cpu,
        memory=memory,
        gpus=gpus,
        max_batch_size=max_batch_size,
        token_secret=token_secret,
        service_account=service_account,
        **kwargs,
    )
    result = package_kserve(release, cfg)
    if as_json:
        console.print_json(json.dumps(result.to_dict(), default=str))
        return
    console.print(
        f"[green]✓[/] {result.manifest_path}  (InferenceService {result.name}, runtime {result.runtime}, "
        f"max batch {result.max_batch if result.max_batch is not None else 'unbounded'})",
        soft_wrap=True,
    )
    for n in result.notes:
        console.print(f"[cyan]note:[/] {n}", soft_wrap=True)
    console.print(f"  apply:  kubectl apply -f {result.manifest_path}", soft_wrap=True)


@app.command("list")
@handle_errors
def list_command(
    folder: Path = typer.Argument(..., help="releases/<name>"),
    no_check: bool = typer.Option(False, "--no-check", help="skip the sha256 check of each release"),
    as_json: bool = typer.Option(False, "--json", help="print as JSON"),
) -> None:
    """List the releases of a model: versions, verdicts, sizes, which one is latest."""
    from onnxship.package import list_releases

    rows = list_releases(folder, check=not no_check)
    if as_json:
        console.print_json(json.dumps([r.to_dict() for r in rows], default=str))
        return
    table = Table(title=str(folder), header_style="bold")
    table.add_column("latest", justify="center")
    table.add_column("version", no_wrap=True)
    for col in ("verdict", "size", "variants"):
        table.add_column(col, overflow="fold")
    for r in rows:
        verdict = (
            ("[red]invalid[/]: " + (r.error or ""))
            if r.error
            else ("[green]passed[/]" if r.passed else "[red]failed[/]")
        )
        table.add_row(
            "*" if r.latest else "",
            r.version,
            verdict,
            f"{r.size_bytes / 1024:,.0f} KiB" if r.size_bytes else "-",
            ", ".join(r.variants) or "-",
        )
    console.print(table)

"""``onnxship publish``: a release bundle to an MLflow run (+ registry alias, + RabbitMQ/webhook notification)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from onnxship._errors import ConfigError
from onnxship.cli._app import app
from onnxship.cli._common import USAGE_EXIT, console, err_console, fail, handle_errors, parse_kv
from onnxship.cli._render import Table

__all__ = ["publish_command"]


@app.command("publish")
@handle_errors
def publish_command(
    bundle: Path = typer.Argument(..., help="releases/<name>/latest, a release folder, or releases/<name>"),
    tracking_uri: str = typer.Option(
        None,
        "--tracking-uri",
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else the embedded "
        "sqlite store in <project>/.onnxship/mlflow)",
    ),
    store_dir: Path = typer.Option(
        None, "--store-dir", help="folder of the embedded sqlite store and artifacts"
    ),
    experiment: str = typer.Option(
        None, "--experiment", help="experiment (default {MODEL_ID}_{name} or {name})"
    ),
    run_name: str = typer.Option(None, "--run-name", help="run name (default: the version tag)"),
    register: str = typer.Option(None, "--register", help="register the model under this name"),
    alias: str = typer.Option(None, "--alias", help="alias for the new model version (e.g. champion)"),
    no_model: bool = typer.Option(False, "--no-model", help="log the bundle only, not an MLflow ONNX model"),
    no_triton: bool = typer.Option(
        False, "--no-triton", help="do not generate and log a Triton config.pbtxt"
    ),
    max_batch_size: int = typer.Option(
        None,
        "--max-batch-size",
        help="Triton max_batch_size (default: the declared or largest verified batch; 0: no batching)",
    ),
    notify_url: str = typer.Option(
        None, "--notify", help="amqp://user:pass@host:5672/vhost or https://webhook"
    ),
    exchange: str = typer.Option("onnxship", "--exchange", help="AMQP exchange (declared durable)"),
    routing_key: str = typer.Option("model.published", "--routing-key", help="AMQP routing key"),
    notify_mandatory: bool = typer.Option(
        False, "--notify-mandatory", help="fail when no queue is bound to the routing key"
    ),
    notify_headers: list[str] = typer.Option(
        None,
        "--notify-header",
        help="webhook header NAME=VALUE (repeat); ${VAR} in VALUE is read from the environment, "
        "e.g. 'Authorization=Bearer ${HOOK_TOKEN}'",
    ),
    notify_retries: int = typer.Option(
        3, "--notify-retries", help="attempts in all when the broker/webhook is down (then the run is FAILED)"
    ),
    tags: list[str] = typer.Option(None, "--tag", help="extra run tag key=value (repeat)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Publish a release to MLflow: params, verification metrics, tags, bundle files and the ONNX model."""
    from onnxship.publish import NotifyConfig, PublishConfig, publish

    try:
        notify = (
            NotifyConfig(
                notify_url,
                exchange=exchange,
                routing_key=routing_key,
                mandatory=notify_mandatory,
                retries=notify_retries,
                headers={k: str(v) for k, v in parse_kv(notify_headers, "--notify-header").items()},
            )
            if notify_url
            else None
        )
        config = PublishConfig(
            tracking_uri=tracking_uri,
            store_dir=store_dir,
            experiment=experiment,
            run_name=run_name,
            register=register,
            alias=alias,
            log_model=not no_model,
            triton_config=not no_triton,
            triton_max_batch_size=max_batch_size,
            notify=notify,
            tags={k: str(v) for k, v in parse_kv(tags, "--tag").items()},
        )
    except ConfigError as exc:
        raise fail(exc, USAGE_EXIT) from None
    if not as_json:
        err_console.print(f"publishing [bold]{bundle}[/] ...")
    # MLflow prints "View run ... at: URL" to stdout for servers; the table (or --json) already says where the run is.
    quiet = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT" not in os.environ
    if quiet:
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    try:
        result = publish(bundle, config)
    finally:
        if quiet:
            os.environ.pop("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", None)
    if as_json:
        console.print_json(json.dumps(result.to_dict(), default=str))
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("release", result.version)
    table.add_row("verdict", result.verdict)
    table.add_row("tracking", result.tracking_uri)
    table.add_row("experiment", f"{result.experiment_name} ({result.experiment_id})")
    table.add_row("run", result.run_id)
    table.add_row("artifacts", result.artifact_uri)
    table.add_row("model", result.model_uri or "not logged (--no-model)")
    table.add_row("onnx file", result.onnx_uri or "")
    if result.model_version:
        table.add_row(
            "registered",
            f"{result.registered_model} v{result.model_version}"
            + (f" @{result.alias}" if result.alias else ""),
        )
    table.add_row(
        "logged", f"{len(result.params)} params, {len(result.metrics)} metrics, {len(result.tags)} tags"
    )
    if result.notification:
        table.add_row("notified", result.notification.target)
    console.print(table)

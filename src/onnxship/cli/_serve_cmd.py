"""``onnxship serve``: a KServe v2 server for a release (MODEL_PATH -> latest -> PyTorch checkpoint)."""

from __future__ import annotations

from pathlib import Path

import typer

from onnxship._errors import ConfigError, require
from onnxship.cli._app import app
from onnxship.cli._common import USAGE_EXIT, console, err_console, fail, handle_errors

__all__ = ["serve_command"]


@app.command("serve")
@handle_errors
def serve_command(
    releases: Path = typer.Option(
        None, "--releases", "-r", help="releases folder; its <name>/latest is served when MODEL_PATH is unset"
    ),
    model_path: str = typer.Option(
        None, "--model-path", help="pin a release folder or .onnx (default: $MODEL_PATH, then .env)"
    ),
    model_root: Path = typer.Option(
        None, "--model-root", help="/reload loads only below this folder (default: --releases)"
    ),
    model: str = typer.Option(None, "--model", "-m", help="PyTorch fallback factory file.py:factory"),
    checkpoint: Path = typer.Option(None, "--checkpoint", "-c", help="PyTorch fallback state_dict"),
    inputs: list[str] = typer.Option(None, "--input", "-i", help="PyTorch fallback input specs"),
    host: str = typer.Option("127.0.0.1", "--host", help="bind address (loopback by default)"),
    port: int = typer.Option(8000, "--port", "-p", help="port (0 picks a free one and prints it)"),
    max_batch: int = typer.Option(
        None,
        "--max-batch",
        help="largest batch per request and per merged batch (default: the release's verified maximum; "
        "1 turns merging off)",
    ),
    batch_timeout_ms: float = typer.Option(
        0.0,
        "--batch-timeout-ms",
        help="max queue delay: a partial batch waits this long after its first request (Triton's semantics)",
    ),
    preferred_batch: list[int] = typer.Option(
        None, "--preferred-batch", help="batch size sent as soon as it can be formed (repeatable)"
    ),
    workers: int = typer.Option(
        None,
        "--workers",
        help="server processes sharing the port (default: one per core)",
        show_default=False,
    ),
    grpc_port: int = typer.Option(
        None,
        "--grpc-port",
        help="also serve KServe v2 gRPC on this port (0 picks a free one)",
        show_default=False,
    ),
    proxy_headers: bool = typer.Option(
        False, "--proxy-headers", help="trust X-Forwarded-For/-Proto from a proxy on this host"
    ),
    max_body_bytes: int = typer.Option(16 * 1024 * 1024, "--max-body-bytes", help="larger bodies get 413"),
    token: str = typer.Option(
        None, "--token", help="bearer token (default: $ONNXSHIP_TOKEN); enables auth", show_default=False
    ),
    no_golden_check: bool = typer.Option(
        False, "--no-golden-check", help="serve a bare .onnx without golden.npz (readiness then means loaded)"
    ),
    env_file: Path = typer.Option(
        Path(".env"), "--env-file", help="read MODEL_PATH / ONNXSHIP_TOKEN from here"
    ),
    threads: int = typer.Option(1, "--threads", help="onnxruntime intra-op threads per session"),
    inline_below_ms: float = typer.Option(
        1.0, "--inline-below-ms", help="run models averaging below this on the event loop (0: never)"
    ),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level"),
    token_file: Path = typer.Option(
        None, "--token-file", help="read the bearer token from this file (surrounding whitespace is dropped)"
    ),
    header_timeout: float = typer.Option(
        10.0, "--header-timeout", help="seconds a client has to send a complete request head (else 408)"
    ),
    body_timeout: float = typer.Option(
        60.0, "--body-timeout", help="seconds a request body may take after its head (else 408)"
    ),
    keep_alive: float = typer.Option(
        30.0, "--keep-alive", help="seconds an idle keep-alive connection stays open"
    ),
    max_connections: int = typer.Option(
        1024, "--max-connections", help="open connections; past it the oldest idle one is closed"
    ),
    max_inflight: int = typer.Option(
        256, "--max-inflight", help="requests processed at once; more get 503 (health probes always pass)"
    ),
    shutdown_timeout: float = typer.Option(
        5.0, "--shutdown-timeout", help="seconds in-flight requests get after SIGTERM; then 503 and exit"
    ),
) -> None:
    """Serve a verified release over KServe v2 REST (tritonclient-compatible) with hot /reload and batching."""
    require("uvicorn", "serve")
    require("orjson", "serve")
    from onnxship.serve import ServeConfig, serve

    if token_file is not None:
        if token:
            raise fail(ConfigError("pass either --token or --token-file, not both"), USAGE_EXIT)
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise fail(
                ConfigError(
                    f"cannot read --token-file {token_file}: {getattr(exc, 'strerror', None) or exc}"
                ),
                USAGE_EXIT,
            ) from None
    try:
        config = ServeConfig(
            model_path=model_path,
            releases=str(releases) if releases else None,
            model_root=str(model_root) if model_root else None,
            model_spec=model,
            checkpoint=str(checkpoint) if checkpoint else None,
            inputs=tuple(inputs or ()),
            host=host,
            port=port,
            max_batch=max_batch,
            batch_timeout_ms=batch_timeout_ms,
            preferred_batch=tuple(preferred_batch or ()),
            workers=workers if workers is not None else _default_workers(model, checkpoint),
            grpc_port=grpc_port,
            proxy_headers=proxy_headers,
            max_body_bytes=max_body_bytes,
            token=token,
            require_golden=not no_golden_check,
            intra_op_threads=threads,
            inline_below_ms=inline_below_ms,
            log_level=log_level,
            header_timeout_s=header_timeout,
            body_timeout_s=body_timeout,
            keep_alive_s=keep_alive,
            max_connections=max_connections,
            max_inflight=max_inflight,
            shutdown_timeout_s=shutdown_timeout,
        ).with_env(env_file=env_file)
    except ConfigError as exc:
        raise fail(exc, USAGE_EXIT) from None
    if not config.loopback and not config.token:
        err_console.print(
            f"[yellow]warning:[/] listening on {config.host} without a token: anyone who can reach "
            f"this address can run the model and /reload (pass --token or set ONNXSHIP_TOKEN)"
        )

    if config.token:
        source = (
            "--token-file"
            if token_file is not None
            else "--token"
            if token
            else next((n.split(" from ", 1)[1] for n in config.notes if n.startswith("ONNXSHIP_TOKEN")), "?")
        )
        err_console.print(
            f"auth is on: every endpoint except /v2/health/* needs 'Authorization: Bearer <token>' "
            f"(token from {source})",
            soft_wrap=True,
        )

    def ready(url: str, manager: object) -> None:
        model_ = manager.current[0]  # type: ignore[attr-defined]
        grpc = getattr(manager, "grpc_address", None)
        console.print(
            f"onnxship serve: {url} model={model_.name} version={model_.version} "
            f"release={model_.release} engine={model_.engine} golden={model_.golden.get('status')} "
            f"auth={'bearer' if config.token else 'off'}"
            + (f" grpc={grpc}" if grpc else "")
            + f" workers={getattr(manager, 'workers', 1)}",
            soft_wrap=True,
        )
        console.file.flush()

    result = serve(config, on_ready=ready)
    console.print(f"stopped: {result.requests} infer requests, reloads {result.reloads or {}}")


def _default_workers(model: str | None, checkpoint: Path | None) -> int:
    """One worker per core; one when a PyTorch checkpoint may be served (torch uses the cores itself)."""
    if model and checkpoint:
        return 1
    from onnxship.serve._workers import default_workers

    return default_workers()

"""The typer application: commands register here; each lives in its own module and holds no logic."""

from __future__ import annotations

import typer

from onnxship._version import __version__
from onnxship.cli._render import Typer

__all__ = ["app"]

app = Typer(
    name="onnxship",
    help="Take a trained PyTorch model to a verified, versioned, deployable ONNX artifact.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"onnxship {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
    debug: bool = typer.Option(
        False, "--debug", help="Show the full traceback of an error (also ONNXSHIP_DEBUG=1)."
    ),
) -> None:
    """onnxship: export, verify, ship."""
    from onnxship.cli._common import set_debug

    set_debug(debug)


def _register() -> None:
    # Command modules import only typer/rich at module level; heavy work happens inside the commands.
    from onnxship.cli import (
        _doctor_cmd,  # noqa: F401
        _export_cmd,  # noqa: F401
        _optimize_cmd,  # noqa: F401
        _package_cmd,  # noqa: F401
        _publish_cmd,  # noqa: F401
        _recipes_cmd,  # noqa: F401
        _runtime_cmd,  # noqa: F401
        _serve_cmd,  # noqa: F401
        _verify_cmd,  # noqa: F401
    )


_register()

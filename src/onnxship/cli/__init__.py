"""Command-line interface (typer). Commands parse flags, build a config, call a verb and render its result."""

from __future__ import annotations

__all__ = ["app", "main"]

from onnxship.cli._app import app


def main() -> None:
    """Console-script entry point."""
    app()

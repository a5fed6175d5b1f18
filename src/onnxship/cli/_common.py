"""Shared CLI plumbing: consoles, error mapping to exit codes, key=value parsing."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.markup import escape

from onnxship._errors import InputSpecError, OnnxshipError
from onnxship.cli._render import CliConsole

__all__ = ["console", "err_console", "handle_errors", "parse_kv"]

console = CliConsole(highlight=False, soft_wrap=False)
err_console = CliConsole(stderr=True, highlight=False, soft_wrap=True)  # one error = one line, never wrapped

F = TypeVar("F", bound=Callable[..., Any])

USAGE_EXIT = 2
ERROR_EXIT = 1


def fail(exc: OnnxshipError, code: int = ERROR_EXIT) -> typer.Exit:
    # escape(): a message is text, not markup ("pip install 'onnxship[torch]'" lost its "[torch]" to rich)
    err_console.print(f"[bold red]error:[/] {escape(exc.message)}", markup=True, highlight=False)
    if exc.hint:
        err_console.print(f"[yellow]hint:[/] {escape(exc.hint)}", markup=True, highlight=False)
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Map OnnxshipError to exit 1 (one red line + hint, no traceback) and input-spec errors to exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputSpecError as exc:
            raise fail(exc, USAGE_EXIT) from None
        except OnnxshipError as exc:
            raise fail(exc, getattr(exc, "exit_code", ERROR_EXIT)) from None

    return wrapper  # type: ignore[return-value]


def parse_kv(items: list[str] | None, what: str) -> dict[str, Any]:
    """Parse repeated ``key=value`` flags; values are JSON when they parse as JSON (numbers, bools), else strings."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item or item.startswith("="):
            raise typer.BadParameter(f"{item!r} is not key=value", param_hint=what)
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out

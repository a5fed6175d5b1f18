"""Shared CLI plumbing: consoles, the one error boundary of every command, key=value parsing.

Every command is wrapped in :func:`handle_errors`: an OnnxshipError is one red ``error:`` line (+ a ``hint:``
line), exit 1 (2 for usage errors); anything else (an internal bug, a full disk, memory, the user's code calling
``sys.exit()`` inside ``forward()``) is one line too, with a hint, exit 1 (130 on Ctrl-C). A traceback is shown only
when asked for: ``onnxship --debug ...`` or ``ONNXSHIP_DEBUG=1``. With ``--json`` stdout carries the JSON document
only: everything else written to stdout while the command runs (the user's prints, a library's) goes to stderr.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import typer
from rich.markup import escape

from onnxship._errors import InputSpecError, OnnxshipError, is_disk_full
from onnxship.cli._render import CliConsole

__all__ = ["console", "debug_enabled", "err_console", "handle_errors", "parse_kv", "set_debug"]

console = CliConsole(highlight=False, soft_wrap=False)
err_console = CliConsole(stderr=True, highlight=False, soft_wrap=True)  # one error = one line, never wrapped

F = TypeVar("F", bound=Callable[..., Any])

USAGE_EXIT = 2
ERROR_EXIT = 1
INTERRUPT_EXIT = 130
DEBUG_ENV = "ONNXSHIP_DEBUG"
_DEBUG = {"flag": False}  # set by the root --debug option for this invocation
_BUG_HINT = f"this looks like a bug in onnxship: rerun with --debug (or {DEBUG_ENV}=1) for the traceback and report it"


def set_debug(on: bool) -> None:
    _DEBUG["flag"] = bool(on)


def debug_enabled() -> bool:
    """Tracebacks instead of one-line errors: ``onnxship --debug`` or ONNXSHIP_DEBUG=1."""
    return _DEBUG["flag"] or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def fail(exc: OnnxshipError, code: int = ERROR_EXIT) -> typer.Exit:
    # escape(): a message is text, not markup ("pip install 'onnxship[torch]'" lost its "[torch]" to rich)
    err_console.print(f"[bold red]error:[/] {escape(exc.message)}", markup=True, highlight=False)
    if exc.hint:
        err_console.print(f"[yellow]hint:[/] {escape(exc.hint)}", markup=True, highlight=False)
    return typer.Exit(code)


def _line(message: str, hint: str | None = None, code: int = ERROR_EXIT) -> typer.Exit:
    first, *rest = str(message).strip().splitlines() or [""]
    return fail(OnnxshipError(first[:500] + (" …" if rest else ""), hint=hint), code)


def _is_cli_control(exc: BaseException) -> bool:
    if isinstance(exc, (typer.Exit, typer.Abort, typer.BadParameter)):
        return True
    return any(c.__module__.split(".")[0] in ("click", "typer") for c in type(exc).__mro__[:-2])


def _unexpected(exc: BaseException) -> typer.Exit:
    """One line for what no stage turned into an OnnxshipError (see the module docstring)."""
    if isinstance(exc, OSError) and is_disk_full(exc):
        where = f" writing {exc.filename!r}" if getattr(exc, "filename", None) else ""
        return _line(
            f"no space left on device{where}", "free space (or write to a bigger disk) and run again"
        )
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR):
        where = f" {exc.filename!r}" if getattr(exc, "filename", None) else ""
        return _line(
            f"cannot write or read{where}: {exc.strerror or type(exc).__name__}",
            "check the path and its permissions (a file where a folder is expected, a read-only folder)",
        )
    if isinstance(exc, MemoryError):
        return _line(
            "out of memory",
            "use smaller dims or batches (--input), fewer samples, or a machine with more memory",
        )
    return _line(f"unexpected {type(exc).__name__}: {exc}", _BUG_HINT)


@contextlib.contextmanager
def _json_stdout() -> Iterator[None]:
    """While a ``--json`` command runs, stdout (Python's and file descriptor 1) goes to stderr; only ``console``
    (the JSON document) writes to the real stdout."""
    real = sys.stdout
    try:
        fd, err_fd = real.fileno(), sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        fd = err_fd = None  # not real files (tests capture them): redirect Python's stdout only
    saved = None
    json_stream = real
    with contextlib.suppress(Exception):
        real.flush()
    if fd is not None:
        saved = os.dup(fd)
        json_stream = os.fdopen(os.dup(saved), "w", encoding=getattr(real, "encoding", None) or "utf-8")
        os.dup2(err_fd, fd)  # type: ignore[arg-type]  # C-level writes of user code and libraries
    console.file = json_stream
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        console.file = None  # type: ignore[assignment]  # back to following sys.stdout
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        if saved is not None and fd is not None:
            with contextlib.suppress(Exception):
                json_stream.flush()
                json_stream.close()
            os.dup2(saved, fd)
            os.close(saved)


def handle_errors(fn: F) -> F:
    """The error boundary of a command (see the module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        guard = _json_stdout() if kwargs.get("as_json") is True else contextlib.nullcontext()
        try:
            with guard:
                return fn(*args, **kwargs)
        except InputSpecError as exc:
            raise fail(exc, USAGE_EXIT) from None
        except OnnxshipError as exc:
            raise fail(exc, getattr(exc, "exit_code", ERROR_EXIT)) from None
        except SystemExit as exc:  # sys.exit() in the user's code (forward(), a hook), not onnxship's
            if debug_enabled():
                raise
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            raise _line(
                f"the model code called sys.exit() while onnxship ran it (exit code {code})",
                "code that runs the model (forward, hooks, factories) must not exit the process",
            ) from None
        except KeyboardInterrupt:
            if debug_enabled():
                raise
            raise _line(
                "interrupted", "nothing half-written was kept; run the command again", INTERRUPT_EXIT
            ) from None
        except Exception as exc:
            if debug_enabled() or _is_cli_control(exc):
                raise  # typer/click's own: typer.Exit, usage errors (BadParameter), Abort
            raise _unexpected(exc) from None

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

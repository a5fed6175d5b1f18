"""Rendering that survives CI logs and pipes: tables, consoles and help screens.

- ``Table``: a rich table on a terminal wide enough for it, where cells that hold one token (a number, a name, a
  path) never wrap; on a terminal too narrow for that, one ``column  value`` line per cell; when the output is not
  a terminal, plain aligned lines (one row per line, nothing wrapped, nothing truncated).
- ``CliConsole``: a console that never crops or wraps what it prints when its output is not a terminal (a log line
  is one line, however long).
- ``Typer``: the typer app class for every command group. Its help screens show no ``<bool>`` for flags (they take
  no value) and print help strings literally: ``file.py:factory:`` is not an emoji code and ``'onnxship[serve]'``
  is not markup. Every command runs with a progress reporter (``onnxship._progress``) on stderr, quiet with ``--json``.
"""

from __future__ import annotations

import re
from typing import Any

import typer
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table as _RichTable
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

__all__ = ["CliConsole", "Table", "Typer", "plain_rows"]

# A cell is one token when it has no whitespace: numbers ("1.04e-07", "163.9"), names, paths, shapes.
_TOKEN = re.compile(r"^\S+$")


def _plain(cell: Any) -> str:
    if isinstance(cell, Text):
        return cell.plain
    if isinstance(cell, str):
        try:
            return Text.from_markup(cell).plain
        except Exception:  # not valid markup: the text itself
            return cell
    return str(cell)


def plain_rows(table: _RichTable) -> list[str]:
    """The table as aligned plain lines: a header line, then one line per row; columns joined by two spaces."""
    columns = table.columns
    header = [_plain(c.header) for c in columns]
    rows = [[_plain(cell) for cell in c.cells] for c in columns]
    body = list(zip(*rows, strict=False)) if rows else []
    # a multi-line cell becomes one line: a log line is one line
    body = [[" ".join(cell.split("\n")) for cell in row] for row in body]
    widths = [max([len(header[i])] + [len(row[i]) for row in body]) for i in range(len(columns))]
    numeric = [all(_looks_numeric(row[i]) for row in body if row[i]) and body for i in range(len(columns))]

    def line(cells: list[str]) -> str:
        parts = []
        for i, cell in enumerate(cells):
            last = i == len(cells) - 1
            if numeric[i]:
                parts.append(cell.rjust(widths[i]))
            else:
                parts.append(cell if last else cell.ljust(widths[i]))
        return "  ".join(parts).rstrip()

    out = []
    if table.title:
        out.append(_plain(table.title))
    if table.show_header:
        out.append(line(header))
    out.extend(line(list(row)) for row in body)
    return out


def _looks_numeric(text: str) -> bool:
    try:
        float(text.replace(",", "").rstrip("%×x").split()[0])
    except (ValueError, IndexError):
        return False
    return True


class Table(_RichTable):
    """A rich ``Table`` that never splits a number: plain aligned lines off a terminal or when it cannot fit."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if not console.is_terminal:
            yield from _plain_lines(self)
            return
        for column in self.columns:
            cells = [_plain(c) for c in column.cells]
            if cells and all(_TOKEN.match(c) or not c for c in cells):
                column.no_wrap = True
                column.overflow = "ignore"
        need = self.__rich_measure__(console, options)
        if isinstance(need, Measurement) and need.minimum > options.max_width:
            yield from _record_lines(self)  # too narrow: one "column: value" line per cell, nothing split
            return
        yield from super().__rich_console__(console, options)


def _plain_lines(table: _RichTable) -> RenderResult:
    for text in plain_rows(table):
        yield Text(text, no_wrap=True, overflow="ignore", end="\n")


def _record_lines(table: _RichTable) -> RenderResult:
    header = [_plain(c.header) for c in table.columns]
    width = max((len(h) for h in header), default=0)
    if table.title:
        yield Text(_plain(table.title), style="bold")
    rows = list(zip(*[[_plain(cell) for cell in c.cells] for c in table.columns], strict=False))
    for n, row in enumerate(rows):
        if n:
            yield Text("")
        for name, cell in zip(header, row, strict=False):
            yield Text(f"{name.rjust(width)}  {cell}", overflow="fold")


class CliConsole(Console):
    """A console that prints long lines whole when its output is not a terminal (and tables always whole)."""

    def print(self, *objects: Any, soft_wrap: bool | None = None, **kwargs: Any) -> None:  # noqa: A003
        if soft_wrap is None and (not self.is_terminal or any(isinstance(o, Table) for o in objects)):
            soft_wrap = True
        super().print(*objects, soft_wrap=soft_wrap, **kwargs)


# ----------------------------------------------------------------------------------------------- help screens
_ANSI_PLAIN = (
    "\x1b[0m"  # typer renders help text that holds an ANSI code with Text.from_ansi: no markup, no emoji
)


def _literal(text: str | None) -> str | None:
    if not text or text.startswith(_ANSI_PLAIN):
        return text
    return _ANSI_PLAIN + text


def _tidy(command: Any, ctx: Any) -> None:
    """Flags show no value type; help strings are printed as written."""
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False):
            param.metavar = ""
        if getattr(param, "help", None):
            param.help = _literal(param.help)
    if command.help:
        command.help = _literal(command.help)
    if getattr(command, "short_help", None):
        command.short_help = _literal(command.short_help)


class _Command(TyperCommand):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        _tidy(self, ctx)
        super().format_help(ctx, formatter)

    def invoke(self, ctx: Any) -> Any:
        # Long stages report on stderr; --json output is for machines and stays the only thing printed.
        from onnxship import _progress

        if ctx.params.get("as_json"):
            with _progress.reporting(None):
                return super().invoke(ctx)
        with _progress.ensure_reporter():  # one installed by an embedding program (or a test) is kept
            return super().invoke(ctx)


class _Group(TyperGroup):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        _tidy(self, ctx)
        for name in self.list_commands(ctx):
            sub = self.get_command(ctx, name)
            if sub is not None and sub.short_help is None and sub.help:
                # the command list shows the first line of each command's help, also literally
                sub.short_help = _literal(sub.help.strip().split("\n\n")[0].replace("\n", " "))
        super().format_help(ctx, formatter)


class Typer(typer.Typer):
    """``typer.Typer`` whose groups and commands render their help screens with ``_tidy``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", _Group)
        kwargs.setdefault("rich_markup_mode", "rich")
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)

"""Every ``--help`` screen renders: flags show no value type, help strings print as written (no markup, no emoji)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from onnxship.cli import app


def _commands() -> list[tuple[list[str], Any]]:
    """(argv path, command) for the root, every group and every command."""
    root = typer.main.get_command(app)
    out: list[tuple[list[str], Any]] = []

    def walk(path: list[str], cmd: Any) -> None:
        out.append((path, cmd))
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                if not sub.hidden:
                    walk([*path, name], sub)

    walk([], root)
    return out


COMMANDS = _commands()
_BOX = re.compile(r"[│╭╮╰╯─┃┏┓┗┛━]")


def _normal(text: str) -> str:
    return " ".join(_BOX.sub(" ", text).split())


def test_the_walk_finds_every_command():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {
        "export",
        "verify",
        "optimize",
        "ship",
        "serve",
        "recipes deeplog train",
        "doctor train-log",
    } <= names
    assert len(COMMANDS) > 20


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "onnxship")
@pytest.mark.parametrize("width", [80, 200])
def test_help_screen(path, width):
    command = dict((tuple(p), c) for p, c in COMMANDS)[tuple(path)]
    r = CliRunner().invoke(app, [*path, "--help"], terminal_width=width, env={"COLUMNS": str(width)})
    assert r.exit_code == 0, r.output
    out = r.output
    assert "Usage:" in out
    assert "<bool>" not in out, "a flag takes no value: its help shows no type"
    emoji = [ch for ch in out if ord(ch) >= 0x1F000 or 0x2600 <= ord(ch) <= 0x27BF]
    assert not emoji, f"help text rendered as emoji: {emoji}"
    assert max(len(line) for line in out.splitlines()) <= width
    if width < 200:
        return
    flat = _normal(out)
    # every help string appears as written: markup ("[serve]") and emoji codes (":factory:") are text
    for param in command.params:
        text = getattr(param, "help", None)
        if text:
            assert _normal(text.replace("\x1b[0m", "")) in flat, (
                f"{param.name}: {text!r} not shown as written"
            )
    if command.help:
        first = command.help.replace("\x1b[0m", "").split("\n\n")[0]
        assert _normal(first) in flat


def test_markup_and_emoji_codes_print_literally():
    r = CliRunner().invoke(app, ["optimize", "--help"], terminal_width=200)
    assert "file.py:factory" in r.output
    r = CliRunner().invoke(app, ["export", "--help"], terminal_width=200)
    assert "NAME:DIMS:DTYPE[:" in r.output  # "[:...]" is text, not a markup tag


def test_a_flag_still_rejects_a_value():
    r = CliRunner().invoke(app, ["inspect", "x.onnx", "--json=yes"])
    assert r.exit_code == 2

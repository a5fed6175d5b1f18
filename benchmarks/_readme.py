"""The README tables the benchmarks write: the lines between a pair of HTML-comment markers are replaced."""

from __future__ import annotations

from pathlib import Path


def write_between(readme: Path, begin: str, end: str, lines: list[str]) -> None:
    """Replace everything from ``begin`` to ``end`` (both kept) with ``lines``."""
    text = readme.read_text()
    start, stop = text.index(begin), text.index(end) + len(end)
    readme.write_text(text[:start] + "\n".join([begin, *lines, end]) + text[stop:])

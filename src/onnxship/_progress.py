"""Progress on long work: named stages (with an optional step count) reported to whoever listens.

Library code marks its long steps and never prints::

    with stage("dynamo: torch.export"):
        ...
    with stage("int8: node sensitivity", total=len(nodes)) as s:
        for node in nodes:
            ...
            s.advance(detail=node)

Without a reporter (plain library use) a stage costs a function call. The CLI installs one per command: on a
terminal a live status line on stderr (stage, step n/N, elapsed) and a dim line per finished stage; otherwise
(CI logs, pipes) one plain line per stage with its time, plus a line at most every few seconds for a stage that
counts steps. ``StageStream`` turns the exporter's own progress prints (``[torch.onnx] Run decomposition...``) into
stages instead of swallowing them. DO NOT import rich at module level (it is the CLI's; imported when a terminal
reporter is made).
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol, TextIO

__all__ = [
    "LineReporter",
    "Reporter",
    "Stage",
    "StageStream",
    "TerminalReporter",
    "current_reporter",
    "ensure_reporter",
    "make_reporter",
    "reporting",
    "stage",
]


class Stage:
    """One named piece of work: started, advanced (n of total), finished with its time."""

    def __init__(self, label: str, total: int | None, reporter: Reporter | None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.detail = ""
        self.started = time.perf_counter()
        self.ok: bool | None = None
        self._reporter = reporter

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def advance(self, n: int = 1, detail: str | None = None) -> None:
        """``n`` more steps done (``detail``: what the current step is, e.g. a node name or ``loss 0.31``)."""
        self.done += n
        if detail is not None:
            self.detail = detail
        if self._reporter is not None:
            self._reporter.update(self)

    def note(self, detail: str) -> None:
        """Say what the stage is doing now without counting a step."""
        self.detail = detail
        if self._reporter is not None:
            self._reporter.update(self)

    def close(self, ok: bool = True) -> None:
        if self.ok is not None:
            return
        self.ok = ok
        if self._reporter is not None:
            self._reporter.finish(self)

    def text(self) -> str:
        count = f" {self.done}/{self.total}" if self.total else ""
        detail = f"  {self.detail}" if self.detail else ""
        return f"{self.label}{count}{detail}"


class Reporter(Protocol):
    def start(self, stage: Stage) -> None: ...
    def update(self, stage: Stage) -> None: ...
    def finish(self, stage: Stage) -> None: ...


_lock = threading.Lock()
_reporter: Reporter | None = None


def current_reporter() -> Reporter | None:
    return _reporter


@contextlib.contextmanager
def reporting(reporter: Reporter | None) -> Iterator[Reporter | None]:
    """Install ``reporter`` for the block (``None``: silent), restoring the previous one afterwards."""
    global _reporter
    with _lock:
        previous, _reporter = _reporter, reporter
    try:
        yield reporter
    finally:
        close = getattr(reporter, "close", None)
        if close is not None:
            close()
        with _lock:
            _reporter = previous


@contextlib.contextmanager
def ensure_reporter() -> Iterator[Reporter | None]:
    """Keep the reporter already installed, else report to stderr for the block (for long library calls that a
    person runs from a script, such as ``trace_pytorch``)."""
    if _reporter is not None:
        yield _reporter
        return
    with reporting(make_reporter()) as reporter:
        yield reporter


def begin(label: str, total: int | None = None) -> Stage:
    """Start a stage by hand (``close()`` it); ``stage()`` is the context-manager form."""
    s = Stage(label, total, _reporter)
    if _reporter is not None:
        _reporter.start(s)
    return s


@contextlib.contextmanager
def stage(label: str, total: int | None = None) -> Iterator[Stage]:
    """A named stage for the block; it finishes as failed when the block raises."""
    s = begin(label, total)
    try:
        yield s
    except BaseException:
        s.close(ok=False)
        raise
    s.close(ok=True)


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


class LineReporter:
    """One plain line per finished stage with its time; a stage that counts steps also reports every ``every`` s."""

    def __init__(
        self, stream: TextIO | None = None, every: float = 5.0, prefix: str = "· ", min_seconds: float = 0.0
    ) -> None:
        self._stream = stream
        self._every = every
        self._min_seconds = min_seconds  # quicker stages that succeed print nothing
        self._prefix = prefix
        self._last: dict[int, float] = {}

    def _write(self, text: str) -> None:
        stream = self._stream or sys.stderr
        stream.write(f"{self._prefix}{text}\n")
        stream.flush()

    def start(self, stage: Stage) -> None:
        self._last[id(stage)] = stage.started

    def update(self, stage: Stage) -> None:
        now = time.perf_counter()
        if now - self._last.get(id(stage), stage.started) >= self._every:
            self._last[id(stage)] = now
            self._write(f"{stage.text()}  ({_fmt_seconds(stage.seconds)})")

    def finish(self, stage: Stage) -> None:
        self._last.pop(id(stage), None)
        if stage.ok and stage.seconds < self._min_seconds:
            return
        state = "" if stage.ok else "  failed"
        count = f" {stage.done}/{stage.total}" if stage.total else ""
        detail = f"  {stage.detail}" if stage.detail and stage.total else ""
        self._write(f"{stage.label}{count}{detail}  {_fmt_seconds(stage.seconds)}{state}")


class TerminalReporter:
    """A live status line on a terminal (innermost stage, step n/N, elapsed); a dim line per finished stage."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console

        # the stream of the moment it is made: the exporter capture swaps sys.stderr later
        self._console = console or Console(file=sys.stderr, highlight=False)
        self._stack: list[Stage] = []
        self._status: Any = None

    def _refresh(self) -> None:
        from rich.markup import escape

        if not self._stack:
            if self._status is not None:
                self._status.stop()
                self._status = None
            return
        top = self._stack[-1]
        text = escape(top.text())
        if self._status is None:
            self._status = self._console.status(text, spinner="dots")
            self._status.start()
        else:
            self._status.update(text)

    def start(self, stage: Stage) -> None:
        self._stack.append(stage)
        self._refresh()

    def update(self, stage: Stage) -> None:
        if self._stack and self._stack[-1] is stage:
            self._refresh()

    def finish(self, stage: Stage) -> None:
        from rich.markup import escape

        if stage in self._stack:
            self._stack.remove(stage)
        mark = "[green]✓[/]" if stage.ok else "[red]✗[/]"
        count = f" {stage.done}/{stage.total}" if stage.total else ""
        self._console.print(f"{mark} [dim]{escape(stage.label + count)}  {_fmt_seconds(stage.seconds)}[/]")
        self._refresh()

    def close(self) -> None:
        self._stack.clear()
        self._refresh()


def make_reporter(stream: TextIO | None = None) -> Reporter:
    """A terminal reporter when ``stream`` (default stderr) is a terminal, else plain lines (stages under 0.5 s
    that succeed print nothing)."""
    target = stream or sys.stderr  # fixed now: captures inside a stage swap sys.stderr
    isatty = getattr(target, "isatty", None)
    if isatty is not None and isatty():
        from rich.console import Console

        return TerminalReporter(Console(file=target, highlight=False))
    return LineReporter(target, min_seconds=0.5)


# The exporter's own progress prints, by the first words after "[torch.onnx] ".
_TORCH_STAGES = (
    ("Obtain model graph", "torch.export"),
    ("Run decomposition", "decomposition"),
    ("Translate the graph into ONNX", "translation"),
    ("Optimize the ONNX graph", "graph optimization"),
    ("Check the ONNX model", "check"),
    ("Run the ONNX model", "run"),
)


class StageStream(io.StringIO):
    """A captured stdout that also turns ``[torch.onnx] <step>...`` / ``... ✅`` lines into stages.

    Everything written is kept (``getvalue()``), as the diagnostics capture needs it.
    """

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self._prefix = prefix
        self._pending = ""
        self._open: dict[str, Stage] = {}

    def write(self, text: str) -> int:
        n = super().write(text)
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            self._line(line.strip())
        return n

    def _line(self, line: str) -> None:
        if not line.startswith("[torch.onnx]"):
            return
        body = line[len("[torch.onnx]") :].strip()
        name = next((label for start, label in _TORCH_STAGES if body.startswith(start)), None)
        if name is None:
            return
        label = f"{self._prefix}: {name}"
        if body.endswith(("✅", "❌")):
            s = self._open.pop(label, None)
            if s is not None:
                s.close(ok=body.endswith("✅"))
            return
        if label not in self._open:
            self._open[label] = begin(label)

    def close_stages(self) -> None:
        """Stages the exporter started but never finished (it raised) end as failed."""
        for s in self._open.values():
            s.close(ok=False)
        self._open.clear()

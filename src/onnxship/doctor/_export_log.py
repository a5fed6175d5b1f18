"""`doctor export-log`: a saved export log explained with the export core's own classifier (one classifier)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxship._errors import DoctorError
from onnxship.export._diagnostics import SEVERITIES, Diagnostic, classify_log

__all__ = ["ExportLogResult", "ExplainedCode", "explain_export_log"]


@dataclass
class ExplainedCode:
    """All diagnostics of one code in the log, grouped: what it is, how often, where, and what to do."""

    code: str
    severity: str
    title: str
    advice: str
    count: int
    examples: list[str] = field(default_factory=list)  # distinct messages (first few)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ExportLogResult:
    """What an export log says (truthy when it holds no error-severity diagnostic)."""

    path: str
    lines: int
    diagnostics: list[Diagnostic]  # as classify_log returns them (merged repeats)
    codes: list[ExplainedCode]  # grouped by code, most severe first

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(c.count for c in self.codes if c.severity == s) for s in SEVERITIES}

    def __bool__(self) -> bool:
        return not any(c.severity == "error" for c in self.codes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "lines": self.lines,
            "counts": self.counts,
            "codes": [c.to_dict() for c in self.codes],
            "diagnostics": [d.to_dict() for d in self.diagnostics],
        }


def explain_export_log(path: str | Path) -> ExportLogResult:
    """Classify every warning/error line of a saved export log (stderr of torch.onnx.export or onnxship's log).

    Example:
        >>> r = explain_export_log("export.log")  # doctest: +SKIP
        >>> [c.code for c in r.codes]  # doctest: +SKIP
        ['ONX108', 'ONX115']
    """
    path = Path(path)
    if not path.is_file():
        raise DoctorError(
            f"export log {str(path)!r} does not exist or is not a file",
            hint="save the exporter's output first, e.g. `python export.py 2> export.log`",
        )
    data = path.read_bytes()
    if b"\x00" in data[:4096]:
        raise DoctorError(
            f"{str(path)!r} is a binary file, not an export log",
            hint="pass the text the exporter printed (stderr), not the .onnx model",
        )
    text = data.decode("utf-8", errors="replace")
    if not text.strip():
        raise DoctorError(
            f"export log {str(path)!r} is empty",
            hint="capture stderr too: `python export.py > export.log 2>&1`",
        )
    diagnostics = classify_log(text)
    grouped: dict[str, ExplainedCode] = {}
    for d in diagnostics:
        entry = grouped.get(d.code)
        if entry is None:
            entry = grouped[d.code] = ExplainedCode(d.code, d.severity, d.title, d.advice, 0)
        entry.count += d.count
        if d.message not in entry.examples and len(entry.examples) < 3:
            entry.examples.append(d.message)
        if SEVERITIES.index(d.severity) < SEVERITIES.index(entry.severity):
            entry.severity = d.severity  # ONX199 takes the severity of its most severe message
    order = {s: i for i, s in enumerate(SEVERITIES)}
    codes = sorted(grouped.values(), key=lambda c: (order[c.severity], c.code))
    return ExportLogResult(str(path), len(text.splitlines()), diagnostics, codes)

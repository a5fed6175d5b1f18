"""The verification report: one schema-versioned record (report.json) and its human view (report.html).

The JSON Schema is published next to this module as ``report.schema.json`` (package data); the model fields (name, checkpoint,
ONNX path, opset, ...) are top-level keys, and ``compare`` carries the comparison settings and numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from onnxship._errors import ConfigError
from onnxship._util import atomic_write_json, atomic_write_text

__all__ = ["REPORT_SCHEMA", "REPORT_SCHEMA_FILE", "VerifyReport", "load_report_schema"]

REPORT_SCHEMA = "onnxship.verify-report/1"
REPORT_SCHEMA_FILE = "report.schema.json"


def load_report_schema() -> dict[str, Any]:
    """The published JSON Schema of report.json."""
    text = resources.files("onnxship.verify").joinpath(REPORT_SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def _clean(obj: Any) -> Any:
    """JSON-safe: non-finite floats become None, tuples lists, numpy scalars Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _writable(path: Path, what: str) -> Path:
    if not path.parent.is_dir():
        raise ConfigError(
            f"cannot write the {what} to {str(path)!r}: folder {str(path.parent)!r} does not exist",
            hint="create the folder first or pick another path",
        )
    if path.is_dir():
        raise ConfigError(
            f"cannot write the {what} to {str(path)!r}: it is a folder", hint="give a file name"
        )
    return path


@dataclass
class VerifyReport:
    """What verify() found; truthy when the gate passed."""

    passed: bool
    failure_reason: str | None
    hint: str | None
    worst_output: dict[str, Any] | None  # {name, max_abs, min_passing_atol, ...} of the worst failing output
    model: dict[str, Any]  # model fields (model_name, backbone, ckpt_path, onnx_path, opset, ...)
    compare: dict[str, Any]  # comparison settings and numbers
    precision: str
    task: str | None
    reference: str  # torch | golden
    data: str  # what was compared
    policy: dict[str, Any]
    outputs: list[dict[str, Any]]
    shapes: list[dict[str, Any]]
    task_metrics: dict[str, Any] | None
    worst_samples: list[dict[str, Any]]
    shape_issues: dict[str, list[Any]]
    sampling: dict[str, Any]
    environment: dict[str, Any]
    timing: dict[str, Any]
    candidates: list[dict[str, Any]] = field(default_factory=list)
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    verified_at_utc: str = ""
    schema: str = REPORT_SCHEMA
    evidence: dict[str, Any] = field(
        default_factory=dict
    )  # inputs (synthetic?), sweep counts, class coverage

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        """The report.json record (JSON-safe: NaN/inf become null)."""
        d: dict[str, Any] = {
            "schema": self.schema,
            "passed": self.passed,
            "failure_reason": self.failure_reason,
            "hint": self.hint,
            "worst_output": self.worst_output,
        }
        d.update(self.model)
        d.update(
            {
                "verified_at_utc": self.verified_at_utc,
                "compare": self.compare,
                "precision": self.precision,
                "task": self.task,
                "reference": self.reference,
                "data": self.data,
                "policy": self.policy,
                "outputs": self.outputs,
                "shapes": self.shapes,
                "task_metrics": self.task_metrics,
                "worst_samples": self.worst_samples,
                "shape_issues": self.shape_issues,
                "sampling": self.sampling,
                "candidates": self.candidates,
                "diagnostics": self.diagnostics,
                "environment": self.environment,
                "timing": self.timing,
                "evidence": self.evidence,
            }
        )
        return _clean(d)

    def summary(self) -> str:
        """One line: verdict and the reason."""
        if self.passed:
            sweep = self.evidence.get("sweep") or (
                f"{sum(1 for s in self.shapes if s.get('kind') == 'sweep')} sweep shapes"
            )
            inputs = self.evidence.get("inputs")
            return (
                f"PASSED: {self.compare.get('sample_count', 0)} samples, {len(self.outputs)} outputs, "
                f"{sweep} ({self.precision}" + (f"; {inputs}" if inputs else "") + ")"
            )
        return f"FAILED: {self.failure_reason}"

    def write_json(self, path: str | Path) -> Path:
        """Write report.json atomically (the folder must exist)."""
        return atomic_write_json(_writable(Path(path), "report"), self.to_dict())

    def write_html(self, path: str | Path) -> Path:
        """Write the self-contained report.html atomically (the folder must exist)."""
        target = _writable(Path(path), "HTML report")
        from onnxship.verify._html import render_html

        return atomic_write_text(target, render_html(self.to_dict()))

"""What `doctor train-log` returns: the Config in, Findings with evidence and advice, the Result out."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from onnxship._errors import ConfigError

if TYPE_CHECKING:
    from onnxship.doctor._readers import TrainLog

__all__ = ["ALARM_SEVERITIES", "CODES", "Finding", "Phase", "TrainLogConfig", "TrainLogResult"]

ALARM_SEVERITIES = ("critical", "warning")  # "info" findings describe the run; they are never alarms

# Stable codes (kept in JSON output and docs); one per kind of finding.
CODES = {
    "nonfinite": "TRN001",
    "loss_zero": "TRN002",
    "unstable_start": "TRN003",
    "grad_explosion": "TRN004",
    "loss_spike": "TRN005",
    "vanishing_gradients": "TRN006",
    "loss_rising": "TRN007",
    "phases": "TRN101",
    "lr_schedule": "TRN102",
    "short_log": "TRN103",
}


@dataclass
class TrainLogConfig:
    """How `doctor train-log` reads and judges a log. Thresholds are ratios, so they hold at any loss scale."""

    format: str = "auto"  # auto | trainer-state | trainer-stdout | jsonl | mlflow-csv | lightning-csv
    explosion_factor: float = 10.0  # grad_norm this many times its rolling median = explosion
    spike_factor: float = 3.0  # loss this many times its local trend = spike (raised further on noisy logs)
    noise_sigmas: float = 6.0  # a spike must also exceed this many robust std devs of the log's own noise
    vanish_factor: float = 1e-3  # late grad_norm below this fraction of its earlier level = vanishing
    clip_percentile: float = 95.0  # percentile of the stable grad_norm used as the suggested max-norm
    window: int | None = None  # neighbours on each side for rolling medians (None: from the log length)

    def __post_init__(self) -> None:
        from onnxship.doctor._readers import FORMATS

        if self.format not in FORMATS:
            raise ConfigError(
                f"format={self.format!r} is not a training-log format",
                hint=f"use one of: {', '.join(FORMATS)}",
            )
        for name in ("explosion_factor", "spike_factor"):
            if not getattr(self, name) > 1.0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be > 1 (a ratio to the local level)")
        if not 0.0 < self.vanish_factor < 1.0:
            raise ConfigError(f"vanish_factor={self.vanish_factor!r} must be between 0 and 1")
        if not 50.0 <= self.clip_percentile <= 100.0:
            raise ConfigError(f"clip_percentile={self.clip_percentile!r} must be between 50 and 100")
        if self.noise_sigmas <= 0:
            raise ConfigError(f"noise_sigmas={self.noise_sigmas!r} must be > 0")
        if self.window is not None and self.window < 1:
            raise ConfigError(f"window={self.window!r} must be >= 1 (neighbours on each side)")


@dataclass
class Finding:
    """One observation about a run: what was seen (with the rows as evidence) and what to do about it."""

    kind: str  # key of CODES
    severity: str  # critical | warning | info
    title: str  # one line
    detail: str  # the evidence in words: steps, epochs, values
    advice: list[str] = field(default_factory=list)
    steps: list[float] = field(default_factory=list)  # x positions to mark on the plot
    evidence: dict[str, Any] = field(
        default_factory=dict
    )  # machine-readable: steps, epochs, values, references

    @property
    def code(self) -> str:
        return CODES[self.kind]

    @property
    def alarm(self) -> bool:
        return self.severity in ALARM_SEVERITIES

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "kind": self.kind,
            "severity": self.severity,
            "title": self.title,
            "detail": self.detail,
            "advice": list(self.advice),
            "steps": _clean(self.steps),
            "evidence": _clean(self.evidence),
        }


@dataclass
class Phase:
    """A stretch of the run: start, fast descent or convergence."""

    name: str
    first: int  # row index (inclusive)
    last: int  # row index (inclusive)
    note: str = ""


@dataclass
class TrainLogResult:
    """The findings for one training log (truthy when nothing alarming was found)."""

    log: TrainLog
    findings: list[Finding]
    phases: list[Phase] = field(default_factory=list)
    schedule: str | None = None  # lr schedule shape, e.g. "warm-up then cosine decay"
    suggested_max_norm: float | None = None  # from the stable-phase grad_norm distribution
    plot: str | None = None  # path of the PNG when one was written

    @property
    def alarms(self) -> list[Finding]:
        return [f for f in self.findings if f.alarm]

    def __bool__(self) -> bool:
        return not self.alarms

    def to_dict(self) -> dict[str, Any]:
        log = self.log
        return _clean(
            {
                "path": log.path,
                "format": log.format,
                "entries": len(log),
                "x": log.x_label,
                "steps": [float(log.step[0]), float(log.step[-1])],
                "metrics": {m: log.columns[m] for m in log.columns},
                "skipped_lines": log.skipped_lines,
                "alarms": len(self.alarms),
                "schedule": self.schedule,
                "suggested_max_norm": self.suggested_max_norm,
                "phases": [
                    {
                        "name": p.name,
                        "from": float(log.step[p.first]),
                        "to": float(log.step[p.last]),
                        "note": p.note,
                    }
                    for p in self.phases
                ],
                "findings": [f.to_dict() for f in self.findings],
                "plot": self.plot,
            }
        )


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/Inf become the strings "nan"/"inf"/"-inf" (strict JSON has no such numbers)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj

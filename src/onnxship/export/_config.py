"""ExportConfig and the records an export produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from onnxship._errors import ConfigError
from onnxship.export._diagnostics import Diagnostic
from onnxship.spec._inputs import TensorSpec
from onnxship.verify._compare import Tolerance
from onnxship.verify._parity import ParityResult

__all__ = ["MIN_OPSET", "CandidateRecord", "ExportConfig", "ExportResult"]

MIN_OPSET = 7
STRATEGY_CHOICES = ("auto", "dynamo", "torchscript")


@dataclass
class ExportConfig:
    """How to export."""

    strategy: str = "auto"  # auto (dynamo, then torchscript) | dynamo | torchscript
    opsets: tuple[int, ...] = (17, 18)  # tried in order when an operator is unsupported
    allow_static: bool = False  # accept a static export when no dynamic candidate verifies (recorded loudly)
    output_names: tuple[str, ...] | None = None  # default output_0..n
    fp16: bool = False  # export in float16 (float inputs become float16)
    tolerance: Tolerance | None = None  # parity tolerance; None: the precision's default
    metadata: dict[str, Any] = field(default_factory=dict)  # user metadata (vocab_size, seq_len, notes, ...)
    seed: int = 0  # seed of generated inputs
    keep_candidates: bool = False  # keep rejected candidate files under <out>/candidates/
    verify: bool = True  # run the shape-sweep parity gate on each candidate (False only for benchmarks)
    task: str | None = (
        None  # classification | detection | sequence: adds task agreement to the candidate gate
    )
    gate_samples: int = 16  # random samples the precision-aware gate compares at the export shape
    use_cache: bool = (
        True  # auto: skip a dynamo attempt that already failed for the same model code (_cache.py)
    )

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGY_CHOICES:
            raise ConfigError(
                f"unknown export strategy {self.strategy!r}",
                hint=f"valid strategies: {', '.join(STRATEGY_CHOICES)}",
            )
        self.opsets = tuple(int(o) for o in self.opsets)
        if not self.opsets:
            raise ConfigError("no opset given", hint="e.g. --opset 17 (default: 17 then 18)")
        top = onnx.defs.onnx_opset_version()
        for o in self.opsets:
            if not MIN_OPSET <= o <= top:
                raise ConfigError(
                    f"unknown opset {o}", hint=f"valid opsets: {MIN_OPSET}..{top} (default 17, then 18)"
                )
        if self.output_names is not None:
            self.output_names = tuple(self.output_names)
            if len(set(self.output_names)) != len(self.output_names):
                raise ConfigError(f"duplicate output names {list(self.output_names)}")


@dataclass
class CandidateRecord:
    """One exporter attempt: what was tried, how long it took, and why it won or lost."""

    strategy: str
    opset: int
    outcome: str  # accepted | rejected | failed | skipped
    reason: str | None = None
    dynamic: bool = True
    export_seconds: float = 0.0
    verify_seconds: float = 0.0
    specialized: list[str] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    parity: ParityResult | None = None
    gate: dict[str, Any] | None = (
        None  # the precision-aware verification report (onnxship.verify) of the candidate
    )

    @property
    def label(self) -> str:
        return f"{self.strategy}/opset{self.opset}" + ("" if self.dynamic else "/static")

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "opset": self.opset,
            "dynamic": self.dynamic,
            "outcome": self.outcome,
            "reason": self.reason,
            "export_seconds": round(self.export_seconds, 3),
            "verify_seconds": round(self.verify_seconds, 3),
            "specialized": self.specialized,
            "diagnostics": [d.to_dict() for d in self.diagnostics],
            "parity": self.parity.to_dict() if self.parity else None,
            "gate": None
            if self.gate is None
            else {k: self.gate.get(k) for k in ("passed", "failure_reason", "precision", "task", "outputs")},
        }


@dataclass
class ExportResult:
    """A verified ONNX file and everything that happened on the way."""

    name: str
    path: Path
    meta_path: Path
    strategy: str
    opset: int
    static: bool
    inputs: list[TensorSpec]
    outputs: list[dict[str, Any]]
    candidates: list[CandidateRecord]
    diagnostics: list[Diagnostic]
    metadata: dict[str, Any]
    dim_fixes: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sha256: str = ""
    seconds: float = 0.0

    @property
    def accepted(self) -> CandidateRecord:
        return next(c for c in self.candidates if c.outcome == "accepted")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "meta_path": str(self.meta_path),
            "strategy": self.strategy,
            "opset": self.opset,
            "static": self.static,
            "sha256": self.sha256,
            "seconds": round(self.seconds, 3),
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": self.outputs,
            "candidates": [c.to_dict() for c in self.candidates],
            "diagnostics": [d.to_dict() for d in self.diagnostics],
            "dim_fixes": self.dim_fixes,
            "notes": self.notes,
            "metadata": self.metadata,
        }

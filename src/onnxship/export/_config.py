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

__all__ = ["DEFAULT_OPSETS", "MIN_OPSET", "PREFERENCE", "CandidateRecord", "ExportConfig", "ExportResult"]

MIN_OPSET = 7
STRATEGY_CHOICES = ("auto", "fastest", "dynamo", "torchscript")
# auto runs these candidates concurrently in this order of preference (the first in the exporting process, the others
# in a worker process each); fastest runs them one after another, cheapest first (export/_concurrent.py)
PREFERENCE = ("dynamo", "torchscript")
# Each exporter's own opsets first: dynamo implements opset 18 and converts down (a conversion that can fail or
# write files onnxruntime refuses); TorchScript's mature opset is 17. The later ones are retries.
DEFAULT_OPSETS: dict[str, tuple[int, ...]] = {"dynamo": (18, 20), "torchscript": (17, 18)}


@dataclass
class ExportConfig:
    """How to export."""

    # auto: dynamo and TorchScript run concurrently, dynamo preferred | fastest: cheapest exporter first, the first
    # verified one wins |
    # dynamo | torchscript
    strategy: str = "auto"
    opsets: tuple[int, ...] | None = None  # tried in order on failure; None: each exporter's DEFAULT_OPSETS
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
    allow_nonfinite: bool = (
        False  # accept NaN/Inf outputs where both engines agree (off: NaN/Inf fails the gate)
    )
    value_sweep: bool = True  # also compare shifted/scaled/edge-valued inputs (data-dependent branches)

    def opsets_for(self, strategy: str) -> tuple[int, ...]:
        """The opsets to try for one exporter: the user's, else that exporter's defaults."""
        return self.opsets if self.opsets else DEFAULT_OPSETS[strategy]

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGY_CHOICES:
            raise ConfigError(
                f"unknown export strategy {self.strategy!r}",
                hint=f"valid strategies: {', '.join(STRATEGY_CHOICES)}",
            )
        self.opsets = tuple(int(o) for o in self.opsets) if self.opsets else None
        top = onnx.defs.onnx_opset_version()
        for o in self.opsets or ():
            if not MIN_OPSET <= o <= top:
                raise ConfigError(
                    f"unknown opset {o}",
                    hint=f"valid opsets: {MIN_OPSET}..{top} (default: dynamo 18, TorchScript 17)",
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
    file_opset: int | None = None  # the opset IN the file (the exporter may not honour the one asked for)
    frozen: list[str] = field(
        default_factory=list
    )  # TorchScript: where tracing froze a tensor into a Python value
    started_at: float = 0.0  # wall clock (time.time()) when the attempt began; comparable across workers
    finished_at: float = 0.0  # wall clock when its verdict was reached

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
            "file_opset": self.file_opset,
            "specialized": self.specialized,
            "frozen": self.frozen,
            "started_at": round(self.started_at, 3),
            "finished_at": round(self.finished_at, 3),
            "diagnostics": [d.to_dict() for d in self.diagnostics],
            "parity": self.parity.to_dict() if self.parity is not None else None,  # a failed one is falsy
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
    sweep_summary: str = (
        ""  # "3 of 4 sweep shapes verified, 1 not runnable in PyTorch; 5 of 5 value variants ..."
    )

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
            "sweep_summary": self.sweep_summary,
            "metadata": self.metadata,
        }

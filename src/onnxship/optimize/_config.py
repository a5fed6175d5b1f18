"""What ``onnxship.optimize`` is asked for (OptimizeConfig) and what it answers (VariantResult, OptimizeResult)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxship._errors import ConfigError
from onnxship.optimize._gate import GateConfig, GateResult
from onnxship.optimize._sensitivity import NodeSensitivity
from onnxship.runtime._variants import VARIANTS, normalize_variant

if TYPE_CHECKING:
    from onnxship.runtime._session import SessionConfig

__all__ = ["OptimizeConfig", "OptimizeResult", "VariantResult"]


@dataclass
class OptimizeConfig:
    """Which variants to build and how to judge them."""

    variants: tuple[str, ...] = (
        "int8-dynamic",
    )  # fp32 (simplified only) | fp16 | int8-dynamic | int8-static
    # Run onnxslim before every variant. On by default: the TorchScript exporter shares identical weights behind
    # Identity nodes, which onnxruntime's quantizer skips (measured on a 4-layer transformer: 5 of 20 MatMuls
    # quantized without it, 17 with it).
    simplify: bool = True
    keep_io_types: bool = True  # fp16: keep float32 graph inputs/outputs
    calibration: str | Path | None = (
        None  # int8-static: data (like `verify --data`); None: generated from specs
    )
    calibration_samples: int = 64  # samples used for calibration
    per_channel: bool = False  # int8: per-channel weight scales
    exclude_nodes: tuple[str, ...] = ()  # int8: node names always kept in float32
    exclude_sensitive: bool = (
        True  # int8: when the gate fails, keep the most sensitive nodes in float32 and retry
    )
    max_excluded: int = 8  # ... at most this many
    gate: GateConfig = field(default_factory=GateConfig)
    out_dir: Path | None = None  # default: <onnx folder>/variants
    keep_rejected: bool = False  # keep a failed variant as <name>.<variant>.rejected.onnx
    session: SessionConfig | None = None  # how the variants are run during the gate

    def __post_init__(self) -> None:
        if isinstance(self.variants, str):
            self.variants = tuple(v for v in self.variants.split(",") if v.strip())
        self.variants = tuple(dict.fromkeys(normalize_variant(v) for v in self.variants))
        if not self.variants:
            raise ConfigError("no variant asked for", hint=f"ask for one of {', '.join(VARIANTS)}")
        if self.calibration_samples < 1 or self.max_excluded < 0:
            raise ConfigError("calibration_samples must be >= 1 and max_excluded >= 0")
        if self.out_dir is not None:
            self.out_dir = Path(self.out_dir)


@dataclass
class VariantResult:
    """One variant: where it is, what it is, and whether it passed its gate."""

    variant: str
    precision: str
    status: str  # kept | rejected
    path: Path | None  # the kept file (or the .rejected.onnx with keep_rejected); None when deleted
    size_bytes: int = 0
    reason: str | None = None  # why it was rejected
    passes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    excluded_nodes: list[str] = field(default_factory=list)  # kept in float32
    sensitivity: list[NodeSensitivity] = field(default_factory=list)  # when the exclusion search ran
    gate: GateResult | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "kept"

    @property
    def metrics(self) -> dict[str, Any]:
        return self.gate.metrics if self.gate is not None else {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "precision": self.precision,
            "status": self.status,
            "path": str(self.path) if self.path else None,
            "size_bytes": self.size_bytes,
            "reason": self.reason,
            "passes": self.passes,
            "notes": self.notes,
            "excluded_nodes": self.excluded_nodes,
            "sensitivity": [s.to_dict() for s in self.sensitivity[:20]],
            "gate": self.gate.to_dict() if self.gate is not None else None,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class OptimizeResult:
    """All variants of one source model; truthy when every variant passed its gate."""

    source: Path
    source_size_bytes: int
    reference: str  # torch | onnxruntime-fp32
    variants: list[VariantResult]
    report_path: Path | None = None

    def __bool__(self) -> bool:
        return all(v.passed for v in self.variants)

    @property
    def kept(self) -> list[VariantResult]:
        return [v for v in self.variants if v.passed]

    @property
    def rejected(self) -> list[VariantResult]:
        return [v for v in self.variants if not v.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "source_size_bytes": self.source_size_bytes,
            "reference": self.reference,
            "passed": bool(self),
            "variants": [v.to_dict() for v in self.variants],
        }

"""``onnxship bench``: latency percentiles and throughput per engine, variant and batch size, on the same inputs.

Each measurement warms up, then runs until both ``min_runs`` and ``min_seconds`` are reached (capped by
``max_runs``). PyTorch and ONNX Runtime get the same arrays; both go through the verification runners, so the
numbers include the same small feed/fetch overhead a user of onnxship pays.
DO NOT import torch or onnxruntime at module level.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxship._errors import ConfigError
from onnxship.runtime._engines import ENGINES
from onnxship.runtime._variants import normalize_variant
from onnxship.spec._inputs import TensorSpec, sample_feeds

if TYPE_CHECKING:
    from onnxship.runtime._runners import Runner
    from onnxship.runtime._session import SessionConfig

__all__ = ["BenchConfig", "BenchResult", "BenchRow", "VariantBuilder", "bench", "find_variant", "time_runner"]

# (model path, missing variant names, torch model or None, input specs) -> {variant: info} as BenchResult.variants
VariantBuilder = Callable[[Path, tuple[str, ...], Any, Sequence[TensorSpec]], dict[str, dict[str, Any]]]


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and how long."""

    batch_sizes: tuple[int, ...] = (1, 8, 32)
    engines: tuple[str, ...] = ("onnx", "torch")  # torch is measured only when a model is given
    variants: tuple[str, ...] = ()  # besides fp32: fp16, int8-dynamic, int8-static, fp32 (simplified)
    warmup: int = 10  # untimed runs first
    min_runs: int = 30
    min_seconds: float = 1.0
    max_runs: int = 5000
    rounds: int = (
        5  # engines take turns in this many rounds (each gets 1/rounds of the runs and time per round)
    )
    threads: int = 0  # intra-op threads for both engines (0: each engine's default)
    seed: int = 0
    session: SessionConfig | None = None  # providers etc. for ONNX Runtime (threads above win)
    build_missing: bool = True  # variants without a file are built by bench()'s ``build_variants`` (if given)

    def __post_init__(self) -> None:
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError(
                f"batch sizes must be >= 1, got {list(self.batch_sizes)}", hint="e.g. --batch 1,8,32"
            )
        bad = [e for e in self.engines if e not in ENGINES]
        if bad or not self.engines:
            raise ConfigError(
                f"unknown engine(s) {bad or list(self.engines)}", hint=f"use {', '.join(ENGINES)}"
            )
        if (
            self.warmup < 0
            or self.min_runs < 1
            or self.max_runs < self.min_runs
            or self.min_seconds < 0
            or self.rounds < 1
        ):
            raise ConfigError(
                "need warmup >= 0, min_runs >= 1, max_runs >= min_runs, min_seconds >= 0, rounds >= 1"
            )


@dataclass
class BenchRow:
    """One (engine, variant, batch) measurement; ``skipped`` says why a row has no numbers."""

    engine: str
    variant: str
    batch: int
    runs: int = 0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    throughput: float | None = None  # samples per second
    providers: list[str] = field(default_factory=list)
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class BenchResult:
    """All rows plus the environment they were measured in."""

    model: Path
    rows: list[BenchRow]
    environment: dict[str, Any]
    config: dict[str, Any]
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # variant -> path, size, gate verdict

    def row(self, engine: str, variant: str, batch: int) -> BenchRow | None:
        return next(
            (r for r in self.rows if (r.engine, r.variant, r.batch) == (engine, variant, batch)), None
        )

    def speedup(
        self, variant: str, batch: int, *, engine: str = "onnx", baseline: tuple[str, str] = ("onnx", "fp32")
    ) -> float | None:
        """p50 of the baseline over p50 of ``variant`` (>1: the variant is faster)."""
        a, b = self.row(*baseline, batch), self.row(engine, variant, batch)
        if not a or not b or not a.p50_ms or not b.p50_ms:
            return None
        return a.p50_ms / b.p50_ms

    def to_dict(self) -> dict[str, Any]:
        speedups = {
            f"{r.engine}/{r.variant}/b{r.batch}": self.speedup(r.variant, r.batch, engine=r.engine)
            for r in self.rows
            if r.p50_ms and (r.engine, r.variant) != ("onnx", "fp32")
        }
        return {
            "model": str(self.model),
            "environment": self.environment,
            "config": self.config,
            "variants": self.variants,
            "rows": [r.to_dict() for r in self.rows],
            "speedup_vs_onnx_fp32_p50": speedups,
        }


def time_runner(
    runner: Runner,
    feeds: dict[str, np.ndarray],
    *,
    warmup: int,
    min_runs: int,
    min_seconds: float,
    max_runs: int,
) -> np.ndarray:
    """Per-call latencies in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        runner.infer(feeds)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < min_seconds):
        t0 = time.perf_counter()
        runner.infer(feeds)
        times.append(time.perf_counter() - t0)
    return np.asarray(times)


def _fill(row: BenchRow, times: np.ndarray) -> BenchRow:
    ms = times * 1e3
    row.runs = int(ms.size)
    row.p50_ms, row.p90_ms, row.p99_ms = (float(np.percentile(ms, q)) for q in (50, 90, 99))
    row.mean_ms, row.std_ms = float(ms.mean()), float(ms.std())
    row.throughput = float(row.batch * ms.size / (times.sum())) if times.sum() > 0 else None
    return row


def find_variant(onnx_path: Path, variant: str) -> Path | None:
    """An existing variant file: ``variants/<stem>.<variant>.onnx`` or ``<stem>.<variant>.onnx`` beside the model."""
    for cand in (
        onnx_path.parent / "variants" / f"{onnx_path.stem}.{variant}.onnx",
        onnx_path.parent / f"{onnx_path.stem}.{variant}.onnx",
    ):
        if cand.is_file():
            return cand
    return None


def _environment(threads: int) -> dict[str, Any]:
    import onnxruntime

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
        "threads": threads or "default",
        "measured_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return env


def _resolve_variants(
    onnx_path: Path,
    config: BenchConfig,
    model: Any,
    specs: Sequence[TensorSpec],
    build_variants: VariantBuilder | None,
) -> dict[str, dict[str, Any]]:
    from onnxship.inspect import load_onnx_checked
    from onnxship.runtime._io import model_metadata

    found: dict[str, dict[str, Any]] = {}
    missing = []
    for v in dict.fromkeys(normalize_variant(x) for x in config.variants):
        path = find_variant(onnx_path, v)
        if path:
            gate = model_metadata(load_onnx_checked(path)).get("gate")
            found[v] = {
                "path": str(path),
                "size_bytes": path.stat().st_size,
                "source": "existing file",
                "gate_passed": gate.get("passed") if isinstance(gate, dict) else None,
            }
        elif config.build_missing and build_variants is not None:
            missing.append(v)
        else:
            found[v] = {"path": None, "skipped": "no variant file (build it with `onnxship optimize`)"}
    if missing:
        found.update(build_variants(onnx_path, tuple(missing), model, specs))
    return found


def bench(
    onnx_path: str | Path,
    config: BenchConfig | None = None,
    *,
    model: Any = None,
    specs: Sequence[TensorSpec] | None = None,
    build_variants: VariantBuilder | None = None,
) -> BenchResult:
    """Measure the FP32 ONNX model, its variants and (with ``model``) PyTorch at each batch size.

    A variant without a file next to the model is built (and gated) by ``build_variants`` when one is given
    (the CLI passes :func:`onnxship.optimize.build_variants`); otherwise its rows say how to build it.

    Example:
        >>> from onnxship.optimize import build_variants
        >>> cfg = BenchConfig(batch_sizes=(1, 32), variants=("int8",))
        >>> res = bench("out/deeplog.onnx", cfg, build_variants=build_variants)  # doctest: +SKIP
        >>> res.speedup("int8-dynamic", 32)  # doctest: +SKIP
        1.3
    """
    from dataclasses import replace

    from onnxship.runtime._engines import onnx_runner, torch_runner
    from onnxship.runtime._io import model_specs
    from onnxship.runtime._session import SessionConfig, plan_providers

    config = config or BenchConfig()
    path = Path(onnx_path)
    specs = list(specs) if specs else model_specs(path)
    session = config.session or SessionConfig()
    if config.threads:
        session = replace(session, intra_op_threads=config.threads)
    variants = {"fp32": {"path": str(path), "size_bytes": path.stat().st_size, "source": "the model"}}
    variants.update(_resolve_variants(path, config, model, specs, build_variants))
    runners: list[tuple[str, str, Runner | None, str | None]] = []
    for v, info in variants.items():
        if "onnx" in config.engines:
            runners.append(
                (
                    "onnx",
                    v,
                    onnx_runner(info["path"], session) if info.get("path") else None,
                    info.get("skipped"),
                )
            )
    if "torch" in config.engines and model is not None:
        import torch

        if config.threads:
            torch.set_num_threads(config.threads)
        output_names = [o.name for o in onnx_runner(path, session).session.get_outputs()]
        runners.append(("torch", "fp32", torch_runner(model, specs, output_names), None))
    first = [s.dims[0] for s in specs if s.dims]
    batch_dim = first[0].name if first and all(d.name == first[0].name for d in first) else None
    rows = []
    for b in config.batch_sizes:
        if batch_dim is None and first and b != first[0].value:
            rows.extend(
                BenchRow(e, v, b, skipped=f"the model's batch is static ({first[0].value})")
                for e, v, _, _ in runners
            )
            continue
        feeds = sample_feeds(specs, {batch_dim: b} if batch_dim else {}, seed=config.seed)
        # Interleave the engines in rounds, so a change in machine load hits all of them alike.
        live = [(e, v, r) for e, v, r, _ in runners if r is not None]
        times: dict[tuple[str, str], list[np.ndarray]] = {(e, v): [] for e, v, _ in live}
        for _, _, runner in live:
            time_runner(runner, feeds, warmup=config.warmup, min_runs=0, min_seconds=0.0, max_runs=0)
        for _ in range(config.rounds):
            for engine, v, runner in live:
                times[(engine, v)].append(
                    time_runner(
                        runner,
                        feeds,
                        warmup=0,
                        min_runs=-(-config.min_runs // config.rounds),
                        min_seconds=config.min_seconds / config.rounds,
                        max_runs=-(-config.max_runs // config.rounds),
                    )
                )
        for engine, v, runner, skipped in runners:
            row = BenchRow(engine, v, b, skipped=skipped)
            if runner is None:
                rows.append(row)
                continue
            row.providers = list(getattr(runner, "providers", [])) or (
                ["torch-cpu"] if engine == "torch" else []
            )
            rows.append(_fill(row, np.concatenate(times[(engine, v)])))
    cfg = {
        "batch_sizes": list(config.batch_sizes),
        "engines": list(config.engines),
        "warmup": config.warmup,
        "rounds": config.rounds,
        "min_runs": config.min_runs,
        "min_seconds": config.min_seconds,
        "max_runs": config.max_runs,
        "threads": config.threads,
        "seed": config.seed,
        "inputs": [str(s) for s in specs],
    }
    env = _environment(config.threads)
    env["providers_requested"] = list(session.providers) if session.providers else "preference order"
    env["provider_fallbacks"] = [f.to_dict() for f in plan_providers(session.providers)[1]]
    return BenchResult(model=path, rows=rows, environment=env, config=cfg, variants=variants)

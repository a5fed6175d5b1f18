"""``onnxship.verify``: does an ONNX file behave like its PyTorch model (or its golden file) on real data?

Both engines get exactly the same batches; statistics stream (memory stays flat as the dataset grows); a shape sweep
over the declared dynamic dims catches axes that were silently frozen. DO NOT import torch at module level: with only
``golden=`` verify runs without torch.
"""

from __future__ import annotations

import math
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from onnxship._errors import CheckError, ConfigError, OnnxshipError, VerificationError
from onnxship._util import git_sha, utc_now
from onnxship._version import __version__
from onnxship.runtime._data import Batch, DataSource, GoldenSource, SyntheticSource, open_source
from onnxship.runtime._golden import Golden, read_golden
from onnxship.runtime._preprocess import PreprocessConfig
from onnxship.spec._inputs import DimSpec, TensorSpec, dim_table, parse_input_spec, sample_feeds, sweep_points
from onnxship.verify._metrics import OutputAccumulator, OutputSummary, batch_stats
from onnxship.verify._parity import sweep_summary
from onnxship.verify._policy import GatePolicy, resolve_policy
from onnxship.verify._report import VerifyReport
from onnxship.verify._sampling import SampleConfig, SamplePlan, add_hard_samples, plan_samples
from onnxship.verify._tasks import (
    ClassificationMetric,
    DetectionMetric,
    NmsConfig,
    SequenceMetric,
    softmax_margin,
)
from onnxship.verify._values import value_variants

__all__ = ["VerifyConfig", "verify"]

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
    "tensor(int16)": "int16",
}


@dataclass
class VerifyConfig:
    """How to verify."""

    mode: str = "smoke"  # smoke (sample_count random) | coverage (stratified by class) | full (everything)
    precision: str | None = (
        None  # fp32 | fp16 | int8: picks the default gate; None: the file's metadata, else fp32
    )
    task: str | None = None  # classification | detection | sequence: adds task-level agreement to the gate
    data: str | Path | None = None  # image folder, .npz, .parquet/.csv; None: synthetic from the input specs
    checkpoint: str | Path | None = None  # weights for a "file.py:factory" model
    batch_size: int = 32
    sample_count: int = 32  # smoke: samples compared
    per_class_k: int = 1  # coverage: samples per class
    min_classes: int = 1000  # coverage: classes wanted
    max_total: int = 5000  # coverage: cap
    hardness_bins: tuple[float, ...] | None = None  # e.g. (0.0, 0.3, 0.6, 0.85, 1.0)
    hard_per_bin: int = 8
    synthetic_count: int = 256  # size of the synthetic dataset when no data is given
    tolerance: Any = None  # overall elementwise tolerance (Tolerance, {"atol", "rtol"} or atol)
    tolerances: dict[str, Any] = field(default_factory=dict)  # per-output elementwise overrides
    thresholds: dict[str, float | None] = field(
        default_factory=dict
    )  # gate overrides, e.g. {"mse_mean": 1e-3}
    task_output: str | None = None  # output holding logits/scores for the task (default: the first)
    top_g: int = 9  # sequence: DeepLog's g
    nms: NmsConfig = field(default_factory=NmsConfig)  # detection: the shared NMS
    box_format: str = "xyxy"  # detection: xyxy | cxcywh raw boxes
    preprocess: PreprocessConfig | None = None  # image folders: default from the input shape
    sweep: bool = True  # run the shape sweep (needs a PyTorch reference)
    providers: tuple[str, ...] | None = None  # onnxruntime providers (default TensorRT -> CUDA -> CPU)
    seed: int = 0
    max_worst: int = 10  # worst samples kept per output
    raise_on_fail: bool = False  # raise VerificationError (carrying the report) when the gate fails
    allow_nonfinite: bool = False  # accept NaN/Inf outputs where both engines agree (off: any NaN/Inf fails)
    value_sweep: bool = True  # also compare shifted/scaled/edge-valued inputs (needs the PyTorch model)
    progress: Callable[[int, int | None], None] | None = None  # called with (samples done, total)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size} must be >= 1")
        if self.top_g < 1:
            raise ConfigError(f"top_g={self.top_g} must be >= 1")
        self.sample_config()  # validates mode and counts
        resolve_policy(
            self.precision or "fp32",
            self.task,
            tolerance=self.tolerance,
            per_output=self.tolerances,
            thresholds=self.thresholds,
        )

    def sample_config(self) -> SampleConfig:
        return SampleConfig(
            mode=self.mode,
            sample_count=self.sample_count,
            per_class_k=self.per_class_k,
            min_classes=self.min_classes,
            max_total=self.max_total,
            hardness_bins=tuple(self.hardness_bins) if self.hardness_bins else None,
            hard_per_bin=self.hard_per_bin,
            seed=self.seed,
        )


# ------------------------------------------------------------------------------------------------ setup helpers


def _specs_from_onnx(info: Any) -> list[TensorSpec]:
    recorded = info.metadata.get("inputs")
    if isinstance(recorded, list) and recorded:
        return [TensorSpec.from_dict(d) for d in recorded]
    specs = []
    for i in info.inputs:
        dims = tuple(
            DimSpec(value=d, name=None)
            if isinstance(d, int) and d > 0
            else DimSpec(value=2 if k == 0 else 8, name=str(d) if d else f"{i['name']}_dim{k}")
            for k, d in enumerate(i["shape"])
        )
        specs.append(TensorSpec(i["name"], dims, i["dtype"] if i["dtype"] != "unknown" else "float32"))
    return specs


def _resolve_specs(inputs: list[Any] | None, info: Any) -> list[TensorSpec]:
    if inputs is None:
        return _specs_from_onnx(info)
    specs = [s if isinstance(s, TensorSpec) else parse_input_spec(str(s)) for s in inputs]
    graph = [i["name"] for i in info.inputs]
    if sorted(s.name for s in specs) != sorted(graph):
        raise ConfigError(
            f"input specs {[s.name for s in specs]} do not match the ONNX inputs {graph}",
            hint="give one --input per ONNX input, named as in the graph",
        )
    return specs


def _load_reference(
    model: Any, checkpoint: str | Path | None, specs: list[TensorSpec], output_names: list[str]
) -> tuple[Any, Any, str | None]:
    """A TorchRunner for the model argument; returns (runner, module, checkpoint path)."""
    from onnxship.runtime._runners import TorchRunner
    from onnxship.spec._binding import bind_inputs
    from onnxship.spec._model import ModelSpec, ensure_module, parse_model_spec, to_cpu_eval

    ckpt = None
    if isinstance(model, str):
        model = parse_model_spec(model, checkpoint=checkpoint)
    if isinstance(model, ModelSpec):
        if checkpoint is not None and model.checkpoint is None:
            model = replace(model, checkpoint=Path(checkpoint))
        ckpt = str(model.checkpoint) if model.checkpoint else None
        module = model.load().model
    else:
        module = to_cpu_eval(ensure_module(model, "the model argument"))
    binding = bind_inputs(module, [s.name for s in specs])
    return TorchRunner(module, binding, output_names), module, ckpt


def _check_golden(golden: Golden, info: Any) -> None:
    ins = sorted(i["name"] for i in info.inputs)
    outs = sorted(o["name"] for o in info.outputs)
    problems = []
    if sorted(golden.inputs) != ins:
        problems.append(f"golden inputs {sorted(golden.inputs)} != model inputs {ins}")
    if sorted(golden.outputs) != outs:
        problems.append(f"golden outputs {sorted(golden.outputs)} != model outputs {outs}")
    for key in ("model_name", "weights_sha256"):
        g, m = golden.meta.get(key), info.metadata.get(key)
        if g and m and g != m:
            problems.append(f"golden {key} {g!r} != model {key} {m!r}")
    if problems:
        raise CheckError(
            "the golden file belongs to another model: " + "; ".join(problems),
            hint="use the golden.npz from the same release bundle as the ONNX file",
        )


def _environment() -> dict[str, Any]:
    import onnx
    import onnxruntime

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxship": __version__,
        "torch": None,
    }
    torch = sys.modules.get("torch")  # report torch only when this run used it (golden-only runs need none)
    if torch is not None:
        env["torch"] = str(getattr(torch, "__version__", None))
    return env


class _Casts:
    """Each engine gets the batch in the dtypes it declares (fp16 variants vs an fp32 PyTorch model)."""

    def __init__(self, ort_inputs: dict[str, str], torch_float: str | None) -> None:
        self.ort, self.torch_float = ort_inputs, torch_float

    def for_ort(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for k, v in feeds.items():
            want = self.ort.get(k)
            out[k] = (
                v.astype(want)
                if want and v.dtype.kind == "f" and np.dtype(want).kind == "f" and v.dtype != np.dtype(want)
                else v
            )
        return out

    def for_torch(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.torch_float is None:
            return feeds
        return {
            k: v.astype(self.torch_float)
            if v.dtype.kind == "f" and v.dtype != np.dtype(self.torch_float)
            else v
            for k, v in feeds.items()
        }


# ------------------------------------------------------------------------------------------------ the engine


class _Engine:
    """Runs both engines over batches and feeds the accumulators."""

    def __init__(
        self,
        reference: Any,
        candidate: Any,
        casts: _Casts,
        policy: GatePolicy,
        config: VerifyConfig,
        output_names: list[str],
    ) -> None:
        self.reference, self.candidate, self.casts = reference, candidate, casts
        self.policy, self.config, self.output_names = policy, config, output_names
        self.acc = {
            o: OutputAccumulator(o, policy.tolerance_for(o), max_worst=config.max_worst) for o in output_names
        }
        self.groups: dict[str, dict[str, Any]] = {}
        self.task_output = config.task_output or output_names[0]
        if self.task_output not in output_names:
            raise ConfigError(
                f"task output {self.task_output!r} is not an output of the model ({output_names})"
            )
        gate = policy.task_gate(config.task)
        self.task_metric: Any = None
        if config.task == "classification":
            self.task_metric = ClassificationMetric(gate)
        elif config.task == "sequence":
            self.task_metric = SequenceMetric(config.top_g, gate)
        elif config.task == "detection":
            self.task_metric = DetectionMetric(config.nms, gate, box_format=config.box_format)
        self.ref_seconds = self.cand_seconds = 0.0
        self.ref_classes: set[int] = set()  # classification: the reference's top-1 classes seen (coverage)
        self.num_classes = 0
        self.samples = 0
        self.errors: list[str] = []

    def run_reference(self, batch: Batch) -> dict[str, np.ndarray]:
        if batch.reference is not None:
            return batch.reference
        t0 = time.perf_counter()
        try:
            out = self.reference.infer(self.casts.for_torch(batch.feeds))
        except OnnxshipError:
            raise
        except Exception as exc:
            if batch.ids and str(batch.ids[0]).startswith(
                "synthetic"
            ):  # onnxship's inputs, not the user's data
                shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in batch.feeds.items())
                raise ConfigError(
                    f"could not make valid inputs for shape {shapes}: PyTorch rejects the generated samples "
                    f"({type(exc).__name__}: {str(exc)[:300]})",
                    hint="give a value kind or range per input (--input NAME:DIMS:DTYPE:LOW..HIGH) or real "
                    "samples with --data; the ONNX file was not found wrong",
                ) from None
            raise ConfigError(
                f"the PyTorch model fails on the data ({batch.ids[0] if batch.ids else 'batch'}): "
                f"{type(exc).__name__}: {str(exc)[:300]}",
                hint="check that the data belongs to this model (input names, dtypes, value ranges)",
            ) from None
        self.ref_seconds += time.perf_counter() - t0
        return out

    def run_candidate(self, batch: Batch) -> dict[str, np.ndarray] | None:
        t0 = time.perf_counter()
        try:
            got = self.candidate.infer(self.casts.for_ort(batch.feeds))
        except OnnxshipError:
            raise
        except Exception as exc:
            msg = (
                f"onnxruntime failed where the reference runs ({batch.ids[0] if batch.ids else 'batch'}): "
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
            )
            if msg not in self.errors:
                self.errors.append(msg)
            return None
        finally:
            self.cand_seconds += time.perf_counter() - t0
        return got

    def _group(self, key: str, kind: str, dims: dict[str, int] | None, shapes: dict[str, list[int]]) -> dict:
        if key not in self.groups:
            self.groups[key] = {
                "group": key,
                "kind": kind,
                "dims": dims or {},
                "input_shapes": shapes,
                "status": "passed",
                "error": None,
                "samples": 0,
                "output_shapes": {},
                "acc": {
                    o: OutputAccumulator(o, self.policy.tolerance_for(o), max_worst=1)
                    for o in self.output_names
                },
            }
        return self.groups[key]

    def compare(
        self,
        batch: Batch,
        ref: dict[str, np.ndarray],
        got: dict[str, np.ndarray] | None,
        group: dict[str, Any],
        *,
        main: bool = True,
    ) -> None:
        n = len(batch)
        group["samples"] += n
        group["output_shapes"] = {k: list(np.shape(v)) for k, v in ref.items()}
        if got is None:
            group["status"], group["error"] = (
                "failed",
                self.errors[-1] if self.errors else "onnxruntime failed",
            )
            return
        missing = [o for o in self.output_names if o not in got or o not in ref]
        if missing:
            raise CheckError(
                f"outputs {missing} missing (reference has {sorted(ref)}, onnxruntime has {sorted(got)})",
                hint="the reference and the ONNX file describe different models",
            )
        for o in self.output_names:
            st = batch_stats(ref[o], got[o], self.acc[o].tolerance)  # computed once, merged into both views
            if main:
                self.acc[o].add(st, indices=batch.indices, ids=batch.ids, group=group["group"])
            group["acc"][o].add(st, indices=batch.indices, group=group["group"])
        if main:
            self.samples += n
            if self.task_metric is not None:
                if isinstance(self.task_metric, DetectionMetric):
                    self.task_metric.update(
                        {k: ref[k] for k in self.output_names}, {k: got[k] for k in self.output_names}
                    )
                else:
                    r, g = ref[self.task_output], got[self.task_output]
                    if np.shape(r) == np.shape(g):
                        self.task_metric.update(r, g, batch.labels)
                    if isinstance(self.task_metric, ClassificationMetric) and np.ndim(r) >= 2:
                        self.ref_classes.update(np.argmax(np.asarray(r), axis=-1).ravel().tolist())
                        self.num_classes = int(np.shape(r)[-1])


_MAX_GROUPS = 32


def _shape_key(feeds: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k}[{'x'.join(str(d) for d in v.shape[1:]) or 'scalar'}]" for k, v in feeds.items())


def _run_data(engine: _Engine, source: DataSource, plan: SamplePlan, config: VerifyConfig) -> None:
    done, total = 0, plan.count
    for batch in source.batches(plan.indices, config.batch_size):
        ref = engine.run_reference(batch)
        got = engine.run_candidate(batch)
        shapes = {k: list(v.shape) for k, v in batch.feeds.items()}
        key = f"data: {_shape_key(batch.feeds)}"
        if (
            key not in engine.groups
            and sum(g["kind"] == "data" for g in engine.groups.values()) >= _MAX_GROUPS
        ):
            key, shapes = "data: other shapes", {}  # per-shape stats stay bounded on ragged data
        group = engine._group(key, "data", None, shapes)
        engine.compare(batch, ref, got, group)
        done += len(batch)
        if config.progress:
            config.progress(done, total)


def _reference_fails(engine: _Engine, feeds: dict[str, np.ndarray]) -> BaseException | None:
    try:
        engine.reference.infer(engine.casts.for_torch(feeds))
    except Exception as exc:
        return exc
    return None


def _run_sweep(engine: _Engine, specs: list[TensorSpec], static: bool, config: VerifyConfig) -> list[str]:
    """Run both engines at each sweep point; returns notes.

    A point where PyTorch itself fails is "not runnable in PyTorch" (skipped, never verified, never blamed on the
    ONNX file); when PyTorch also rejects the generated inputs at the export shape, the inputs are the problem.
    """
    notes: list[str] = []
    points = sweep_points(specs)
    export_point = {n: d.value for n, d in dim_table(specs).items()}
    if static:
        points = [p for p in points if p == export_point]
        notes.append("the model was exported STATIC: only the export shape is swept")
    generated_ok: bool | None = None
    for i, point in enumerate(points):  # grows while it runs: probes of points PyTorch cannot run
        feeds = sample_feeds(specs, point, seed=config.seed + 7919 * (i + 1))
        first = next(iter(feeds.values()))
        batch = Batch(
            feeds,
            np.arange(first.shape[0] if first.ndim else 1),
            ids=[f"sweep{point}#{k}" for k in range(first.shape[0] if first.ndim else 1)],
        )
        shapes = {k: list(v.shape) for k, v in feeds.items()}
        key = "sweep: " + (", ".join(f"{k}={v}" for k, v in point.items()) or "static")
        group = engine._group(key, "sweep", point, shapes)
        group["is_export_shape"] = point == export_point
        group["inputs_invalid"] = False
        try:
            ref = engine.reference.infer(engine.casts.for_torch(feeds))
        except Exception as exc:
            if generated_ok is None:
                generated_ok = all(  # a few draws: random structural values are sometimes valid by chance
                    _reference_fails(engine, sample_feeds(specs, export_point, seed=config.seed + k)) is None
                    for k in range(3)
                )
            short = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
            where = ", ".join(f"{k}={v}" for k, v in point.items()) or "the export shape"
            group["status"] = "skipped"
            if not generated_ok:
                group["inputs_invalid"] = True
                group["error"] = (
                    f"could not make valid inputs for shape {where}: give a value kind or --data ({short})"
                )
            elif point == export_point:
                group["status"] = "failed"
                group["error"] = f"the PyTorch model cannot run the export shape ({short})"
            else:
                group["error"] = f"not runnable in PyTorch at {where} ({short})"
                # move each of its dims alone too (as check_parity does): one axis's size rule must not
                # leave the other axes unverified
                for name, value in point.items():
                    probe = {**export_point, name: value}
                    if value != export_point.get(name) and probe not in points:
                        points.append(probe)
            continue
        got = engine.run_candidate(batch)
        engine.compare(batch, ref, got, group, main=False)
    shape_groups = [g for g in engine.groups.values() if g["kind"] == "sweep"]
    if any(g["status"] == "skipped" for g in shape_groups):
        notes.append(sweep_summary(shape_groups, []))
    return notes


def _run_value_sweep(engine: _Engine, specs: list[TensorSpec], config: VerifyConfig) -> None:
    """Both engines on the export-shape inputs shifted, scaled and set to edge values (verify/_values.py)."""
    export_point = {n: d.value for n, d in dim_table(specs).items()}
    base = sample_feeds(specs, export_point, seed=config.seed + 15485863)
    for label, feeds in value_variants(specs, base):
        first = next(iter(feeds.values()))
        n = first.shape[0] if first.ndim else 1
        batch = Batch(feeds, np.arange(n), ids=[f"values {label}#{k}" for k in range(n)])
        group = engine._group(
            f"values: {label}", "values", export_point, {k: list(v.shape) for k, v in feeds.items()}
        )
        group["values"], group["inputs_invalid"] = label, False
        try:
            ref = engine.reference.infer(engine.casts.for_torch(feeds))
        except Exception as exc:
            group["status"] = "skipped"
            group["error"] = (
                f"not runnable in PyTorch with values {label} ({type(exc).__name__}: {str(exc)[:200]})"
            )
            continue
        bad = [k for k, v in ref.items() if np.asarray(v).dtype.kind == "f" and not np.isfinite(v).all()]
        if (
            bad
        ):  # the shifted values left the model's domain (log of a negative, ...): not evidence either way
            group["status"] = "skipped"
            group["error"] = (
                f"not runnable in PyTorch with finite outputs at values {label} (NaN/Inf in {bad})"
            )
            continue
        got = engine.run_candidate(batch)
        engine.compare(batch, ref, got, group, main=False)


def _output_dim_issues(info: Any, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Declared output dims that disagree with what onnxruntime actually returned."""
    issues = []
    declared = {o["name"]: o["shape"] for o in info.outputs}
    for g in groups:
        if g["status"] == "skipped":
            continue
        for name, shape in g.get("output_shapes", {}).items():
            dims = declared.get(name)
            if not dims or len(dims) != len(shape):
                if dims and len(dims) != len(shape):
                    issues.append(
                        {
                            "output": name,
                            "axis": None,
                            "declared": dims,
                            "observed": shape,
                            "where": g["group"],
                        }
                    )
                continue
            for axis, (d, v) in enumerate(zip(dims, shape, strict=True)):
                if isinstance(d, int) and d > 0 and d != v:
                    issues.append(
                        {"output": name, "axis": axis, "declared": d, "observed": v, "where": g["group"]}
                    )
    seen, unique = set(), []
    for i in issues:
        k = (i["output"], i["axis"], str(i["declared"]))
        if k not in seen:
            seen.add(k)
            unique.append(i)
    return unique


# ------------------------------------------------------------------------------------------------ diagnostics


def _diag(code: str, severity: str, title: str, message: str, advice: str) -> dict[str, Any]:
    return {
        "code": code,
        "severity": severity,
        "title": title,
        "message": message,
        "advice": advice,
        "source": "verify",
        "count": 1,
        "stage": "verify",
    }


def _likely_causes(
    outputs: list[OutputSummary],
    groups: list[dict[str, Any]],
    task_res: Any,
    config: VerifyConfig,
    reference: str,
    shape_issues: dict[str, list[Any]],
    policy: GatePolicy,
) -> list[dict[str, Any]]:
    diags: list[dict[str, Any]] = []
    sweep = [g for g in groups if g["kind"] == "sweep" and g["status"] != "skipped"]
    sweep_failed = [g for g in sweep if g["status"] == "failed" or not g.get("passed", True)]
    export_ok = any(g.get("is_export_shape") and g.get("passed", False) for g in sweep)
    if shape_issues.get("static_axes"):
        diags.append(
            _diag(
                "VER101",
                "error",
                "dynamic axes exported static",
                "; ".join(shape_issues["static_axes"]),
                "Re-export with the dims declared dynamic (onnxship export --input name=N..MAX); with the "
                "dynamo exporter, code that branches on a size specializes it: use torch.where or keep "
                "sizes as tensors.",
            )
        )
    if sweep_failed and export_ok:
        diags.append(
            _diag(
                "VER102",
                "error",
                "fails only away from the export shape",
                f"passes at the export shape, fails at {[g['group'] for g in sweep_failed]}",
                "A size was frozen during tracing (reshape/view with Python ints, int(x.size(1)), loops "
                "over a dimension). Keep shapes symbolic or export with the dynamo exporter.",
            )
        )
    if shape_issues.get("output_dims"):
        diags.append(
            _diag(
                "VER103",
                "warning",
                "declared output dims disagree with real outputs",
                "; ".join(
                    f"{i['output']}[{i['axis']}] declared {i['declared']}, got {i['observed']}"
                    for i in shape_issues["output_dims"][:5]
                ),
                "Tools that trust declared shapes (Triton config, MLflow signatures) will be wrong; "
                "re-export with onnxship export, which fixes declared output dims.",
            )
        )
    if any(o.nan_mismatches for o in outputs):
        diags.append(
            _diag(
                "VER104",
                "error",
                "NaN/inf in only one engine",
                ", ".join(o.name for o in outputs if o.nan_mismatches),
                "Look for log/div/sqrt of zero or overflow; in fp16 keep Softmax/LayerNorm/exp in fp32.",
            )
        )
    nonfinite = [
        o for o in outputs if (o.nonfinite_reference or o.nonfinite_candidate) and not policy.allow_nonfinite
    ]
    if nonfinite:
        diags.append(
            _diag(
                "VER112",
                "error",
                "NaN/Inf outputs",
                "; ".join(
                    f"{o.name}: {o.nonfinite_reference} in the reference, {o.nonfinite_candidate} in onnxruntime "
                    f"(first at {o.nonfinite_where})"
                    for o in nonfinite
                ),
                "NaN == NaN is not agreement: a served model would answer null. Find the log/div/sqrt of zero or "
                "the overflow that makes them; pass --allow-nonfinite only if they are expected.",
            )
        )
    failing = [
        o
        for o in outputs
        if not o.passed and not o.nan_mismatches and not o.shape_errors and o not in nonfinite
    ]
    for o in failing:
        tol = policy.tolerance_for(o.name)
        atol = tol.atol if tol is not None else 0.0
        if o.cosine_min > 0.99999 and o.min_passing_atol <= max(10 * atol, 1e-5):
            diags.append(
                _diag(
                    "VER105",
                    "warning",
                    "numerical noise just above the tolerance",
                    f"{o.name}: max abs {o.max_abs:.3g}, would pass with atol={o.min_passing_atol:.3g}",
                    "Different kernels and op fusion change the last bits; if the task metrics agree, "
                    f"loosen it for this output (--tolerance '{o.name}:atol={o.min_passing_atol:.1g}').",
                )
            )
        elif o.cosine_min < 0.9:
            cause = (
                "the golden file was written by another model or checkpoint"
                if reference == "golden"
                else "the ONNX file was exported from other weights, the model was not in eval() (dropout, "
                "BatchNorm batch statistics) or the preprocessing differs between engines"
            )
            diags.append(
                _diag(
                    "VER106",
                    "error",
                    "outputs are unrelated",
                    f"{o.name}: cosine {o.cosine_min:.3f}",
                    f"Likely causes: {cause}. Re-export from the checkpoint you verify against.",
                )
            )
        elif config.precision == "fp32":
            diags.append(
                _diag(
                    "VER107",
                    "warning",
                    "drift beyond fp32 noise",
                    f"{o.name}: max abs {o.max_abs:.3g}, cosine {o.cosine_min:.6f}",
                    "Likely causes: an op converted with different semantics (e.g. interpolate "
                    "align_corners, GELU approximation, LayerNorm epsilon), or a normalisation mismatch. "
                    "Bisect by exporting sub-modules; try the other exporter or opset 18.",
                )
            )
        else:
            diags.append(
                _diag(
                    "VER108",
                    "warning",
                    f"{config.precision} drift beyond the gate",
                    f"{o.name}: MSE {o.mse_mean:.3g}, cosine {o.cosine_min:.5f}",
                    "Keep sensitive ops in fp32 (Softmax, LayerNorm, final logits) or calibrate "
                    "quantization on more representative data.",
                )
            )
    if task_res is not None and not task_res.passed:
        diags.append(
            _diag(
                "VER110",
                "error",
                f"{config.task} decisions differ",
                task_res.reason or "",
                "Decisions flip on samples near the decision boundary; inspect the worst classes and "
                "samples, and check the precision (fp16/int8) of the final layers.",
            )
        )
    return diags


_UNSUPPORTED_OP = re.compile(
    r"(?:Could not find an implementation for (?P<a>[\w.]+)\((?P<av>\d+)\)|"
    r"No Op registered for (?P<b>[\w.]+) with domain_version of (?P<bv>\d+)|"
    r"Unrecognized attribute: (?P<attr>\w+) for operator (?P<c>[\w.]+)|"
    r"(?P<d>[\w.]+:[\w.]+)\(-?\d+\) is not a registered function/op)"
)


def unsupported_op_hint(message: str) -> str | None:
    """When onnxruntime refuses an operator: name it and the routes (another opset, a custom op); else None."""
    m = _UNSUPPORTED_OP.search(message)
    if m is None:
        return None
    op = m["a"] or m["b"] or m["c"] or m["d"]
    at = m["av"] or m["bv"]
    what = (
        f"operator {op}"
        + (f" at opset {at}" if at else "")
        + (f" (attribute {m['attr']})" if m["attr"] else "")
    )
    return (
        f"this onnxruntime does not implement {what}: re-export at another opset (onnxship export --opset 18), "
        "upgrade onnxruntime, or register a custom-op library for it (SessionOptions.register_custom_ops_library)"
    )


def _evidence(
    engine: _Engine,
    source_kind: str,
    groups: list[dict[str, Any]],
    meta: dict[str, Any],
    config: VerifyConfig,
) -> dict[str, Any]:
    """How strong the evidence is, in words the terminal, report.json and report.html show."""
    weak: list[str] = []
    inputs = {"synthetic": "synthetic inputs", "golden": "golden inputs"}.get(
        source_kind, f"real data ({source_kind})"
    )
    if source_kind == "synthetic":
        weak.append("inputs are synthetic (generated from the input specs): pass --data for real samples")
    calibration = meta.get("calibration")
    if isinstance(calibration, dict):
        calibration = calibration.get("source") or calibration.get("kind")
    if config.precision == "int8" and isinstance(calibration, str) and "synthetic" in calibration:
        weak.append("INT8 calibration used synthetic data: calibrate on real samples (--calibration-data)")
    sweep = [g for g in groups if g["kind"] == "sweep"]
    values = [g for g in groups if g["kind"] == "values"]
    coverage = None
    if engine.num_classes:
        covered = len(engine.ref_classes)
        is_weak = covered < min(engine.num_classes, 10) or covered * 2 < engine.num_classes
        text = f"reference top-1 covered {covered} of {engine.num_classes} classes" + (
            ": weak evidence" if is_weak else ""
        )
        coverage = {"covered": covered, "classes": engine.num_classes, "weak": is_weak, "text": text}
        if is_weak:
            weak.append(text)
    return {
        "inputs": inputs,
        "synthetic": source_kind == "synthetic",
        "calibration": calibration if isinstance(calibration, str) else None,
        "sweep": sweep_summary(sweep, values) or None,
        "class_coverage": coverage,
        "weak": weak,
    }


# ------------------------------------------------------------------------------------------------ the verb


def verify(
    onnx_path: str | Path,
    model: Any = None,
    golden: str | Path | Golden | None = None,
    inputs: list[TensorSpec | str] | None = None,
    config: VerifyConfig | None = None,
    *,
    candidates: list[dict[str, Any]] | None = None,
    diagnostics: list[dict[str, Any]] | None = None,
    **overrides: Any,
) -> VerifyReport:
    """Check that an ONNX file behaves like its PyTorch model (or its golden file) under a precision-aware gate.

    Args:
        onnx_path: the ONNX file to check.
        model: the reference: an ``nn.Module``, a ``ModelSpec`` or ``"file.py:factory"`` (needs torch).
        golden: a golden.npz (inputs + PyTorch outputs): a reference that needs no torch.
        inputs: input specs; default: the ``inputs`` metadata the export embedded, else the graph's inputs.
        config: a VerifyConfig; keyword overrides replace its fields (``mode="coverage"``).
        candidates: export candidates to record in the report (from ``onnxship.export``).
        diagnostics: export diagnostics to record (dicts with code/severity/title/message/advice).

    Returns:
        VerifyReport, truthy when the gate passed.

    Raises:
        ConfigError: bad settings, data that does not fit the model.
        CheckError: an unreadable ONNX or golden file, or a golden file from another model.
        VerificationError: only with ``raise_on_fail=True``, when the gate fails (carries the report).

    Example:
        >>> report = verify("out/deeplog.onnx", golden="golden.npz")  # doctest: +SKIP
        >>> report.passed, report.write_json("out/report.json")  # doctest: +SKIP
    """
    # verify() puts an nn.Module in eval() (dropout/BatchNorm); the caller gets it back in the mode it gave.
    restore_training = bool(getattr(model, "training", False)) and callable(getattr(model, "train", None))
    try:
        return _verify(onnx_path, model, golden, inputs, config, candidates, diagnostics, overrides)
    finally:
        if restore_training:
            model.train(True)


def _verify(
    onnx_path: str | Path,
    model: Any,
    golden: str | Path | Golden | None,
    inputs: list[TensorSpec | str] | None,
    config: VerifyConfig | None,
    candidates: list[dict[str, Any]] | None,
    diagnostics: list[dict[str, Any]] | None,
    overrides: dict[str, Any],
) -> VerifyReport:
    from onnxship.inspect import inspect_model
    from onnxship.runtime._runners import OnnxRuntimeRunner
    from onnxship.runtime._session import SessionConfig

    start = time.perf_counter()
    config = replace(config or VerifyConfig(), **overrides) if overrides else (config or VerifyConfig())
    if model is None and golden is None:
        raise ConfigError(
            "nothing to verify against: give model= (PyTorch) or golden= (golden.npz)",
            hint="onnxship verify X.onnx --model file.py:factory  or  --golden golden.npz",
        )
    info = inspect_model(onnx_path)
    specs = _resolve_specs(inputs, info)
    notes: list[str] = []
    if config.precision is None:  # a variant file says what it is (int8, fp16): its gate follows
        recorded = str(info.metadata.get("precision") or "fp32")
        config = replace(config, precision=recorded if recorded in ("fp32", "fp16", "int8") else "fp32")
        if config.precision != "fp32":
            notes.append(f"precision {config.precision} read from the file's metadata")
    policy = resolve_policy(
        config.precision or "fp32",
        config.task,
        tolerance=config.tolerance,
        per_output=config.tolerances,
        thresholds=config.thresholds,
        allow_nonfinite=config.allow_nonfinite,
    )
    # No spinning: the engines alternate batch by batch, and onnxruntime's spinning threads would starve PyTorch.
    try:
        candidate = OnnxRuntimeRunner(
            Path(onnx_path), SessionConfig(providers=config.providers, allow_spinning=False)
        )
    except CheckError as exc:
        op_hint = unsupported_op_hint(exc.message)
        if op_hint is None:
            raise
        raise CheckError(exc.message, hint=op_hint) from None
    output_names = list(candidate.output_names)
    unknown = sorted(set(config.tolerances) - set(output_names))
    if unknown:
        raise ConfigError(f"tolerances given for unknown outputs {unknown}", hint=f"outputs: {output_names}")
    ort_types = {i.name: _ORT_DTYPES.get(i.type, "") for i in candidate.session.get_inputs()}
    gold = None
    if golden is not None:
        gold = golden if isinstance(golden, Golden) else read_golden(golden)
        _check_golden(gold, info)
    ref_runner, module, ckpt = None, None, None
    torch_float = None
    if model is not None:
        ref_runner, module, ckpt = _load_reference(model, config.checkpoint, specs, output_names)
        p = next(iter(module.parameters()), None)
        if p is not None and p.is_floating_point():
            torch_float = str(p.dtype).replace("torch.", "")
    casts = _Casts(ort_types, torch_float)
    engine = _Engine(ref_runner, candidate, casts, policy, config, output_names)

    # Data: the user's data (or synthetic) with PyTorch as the reference; the golden file on its own otherwise.
    source: DataSource
    if ref_runner is not None:
        source = (
            open_source(config.data, specs, preprocess=config.preprocess)
            if config.data is not None
            else SyntheticSource(specs, config.synthetic_count, seed=config.seed)
        )
    else:
        if config.data is not None:
            notes.append(
                "--data ignored: without a PyTorch model only the golden inputs have reference outputs"
            )
        source = GoldenSource(gold)  # type: ignore[arg-type]
    sample_cfg = config.sample_config()
    if source.kind == "golden":
        plan = SamplePlan(None, "golden", len(source))
    else:
        plan = plan_samples(len(source), source.labels(), sample_cfg)
        if sample_cfg.hardness_bins is not None:

            def margins_of(idx: np.ndarray) -> np.ndarray:
                parts = [
                    softmax_margin(engine.run_reference(b)[engine.task_output])
                    for b in source.batches(idx, config.batch_size)
                ]
                return np.concatenate(parts) if parts else np.zeros(0)

            plan = add_hard_samples(plan, margins_of, sample_cfg)
    t_data = time.perf_counter()
    _run_data(engine, source, plan, config)
    data_seconds = time.perf_counter() - t_data
    if gold is not None and ref_runner is not None:
        gsrc = GoldenSource(gold)
        for batch in gsrc.batches(None, config.batch_size):
            engine.compare(
                batch,
                batch.reference or {},
                engine.run_candidate(batch),
                engine._group("golden", "golden", None, {k: list(v.shape) for k, v in batch.feeds.items()}),
                main=False,
            )

    # Shape sweep over the declared dynamic dims.
    static = bool(info.metadata.get("static"))
    import onnx

    from onnxship.onnxfile import specialized_dims

    proto = onnx.load(str(onnx_path), load_external_data=False)
    static_axes = [] if static else specialized_dims(proto, specs)
    if ref_runner is not None and config.sweep and dim_table(specs):
        notes += _run_sweep(engine, specs, static, config)
    elif ref_runner is None and dim_table(specs):
        notes.append("no shape sweep: it needs the PyTorch model (golden files hold one shape)")
    if ref_runner is not None and config.value_sweep:
        _run_value_sweep(engine, specs, config)

    # Verdicts.
    task_res = engine.task_metric.result() if engine.task_metric is not None else None
    no_mse = replace(policy, mse_mean=None, mse_p99=None)
    summaries = [
        engine.acc[o].summary(
            no_mse if (config.task == "classification" and o == engine.task_output) else policy
        )
        for o in output_names
    ]
    groups = []
    for g in engine.groups.values():
        # Swept values scale the outputs: their groups are judged elementwise (or by cosine), not by raw MSE.
        g_policy = no_mse if g["kind"] == "values" else policy
        outs = {o: a.summary(g_policy) for o, a in g["acc"].items()}
        g_pass = g["status"] != "failed" and all(s.passed for s in outs.values() if s.samples)
        if g["status"] == "skipped":
            g_pass = True
        elif not g_pass and g["status"] == "passed":
            g["status"] = "failed"
            bad = [s for s in outs.values() if not s.passed]
            g["error"] = "; ".join(f"{s.name}: {s.failures[0]}" for s in bad if s.failures)
        groups.append(
            {
                **{k: v for k, v in g.items() if k != "acc"},
                "passed": g_pass,
                "outputs": {
                    o: {
                        "max_abs": s.max_abs,
                        "mse_mean": s.mse_mean,
                        "cosine_min": s.cosine_min,
                        "min_passing_atol": s.min_passing_atol,
                        "passed": s.passed,
                    }
                    for o, s in outs.items()
                    if s.samples
                },
            }
        )
    failures: list[str] = []
    if engine.errors:
        failures.append(engine.errors[0])
    bad_out = [s for s in summaries if not s.passed]
    worst = max(bad_out, key=lambda s: (s.min_passing_atol, s.max_abs), default=None)
    if worst is not None:
        failures.append(f"output {worst.name!r}: {worst.failures[0]}")
    if task_res is not None and not task_res.passed:
        failures.append(f"{config.task}: {task_res.reason}")
    bad_groups = [g for g in groups if g["status"] == "failed" and g["kind"] not in ("data", "values")]
    if bad_groups:
        failures.append(
            f"{len(bad_groups)} shape(s) failed; first {bad_groups[0]['group']}: {bad_groups[0]['error']}"
        )
    bad_values = [g for g in groups if g["status"] == "failed" and g["kind"] == "values"]
    if bad_values:
        failures.append(
            f"{len(bad_values)} value variant(s) failed (a branch on tensor values?); first "
            f"{bad_values[0]['group']}: {bad_values[0]['error']}"
        )
    if static_axes:
        failures.append("dynamic axes exported static: " + "; ".join(static_axes))
    passed = not failures
    shape_issues = {"static_axes": static_axes, "output_dims": _output_dim_issues(info, groups)}
    diags = list(diagnostics or []) + _likely_causes(
        summaries,
        groups,
        task_res,
        config,
        "torch" if ref_runner is not None else "golden",
        shape_issues,
        policy,
    )
    worst_any = worst or max(summaries, key=lambda s: s.max_abs, default=None)
    worst_output = (
        None
        if worst_any is None
        else {
            "name": worst_any.name,
            "passed": worst_any.passed,
            "max_abs": worst_any.max_abs,
            "min_passing_atol": worst_any.min_passing_atol,
            "smallest_passing": worst_any.smallest_passing(),
            "failures": worst_any.failures,
        }
    )
    hint = None
    if not passed:
        causes = [d["title"] for d in diags if d["source"] == "verify"]
        nonfinite = [
            o.name for o in summaries if (o.nonfinite_reference or o.nonfinite_candidate) and not o.passed
        ]
        if nonfinite:
            lead = (
                f"outputs {nonfinite} hold NaN/Inf: find the log/div/sqrt/overflow that makes them, or pass "
                "--allow-nonfinite if they are expected "
            )
        elif worst_any is not None and math.isfinite(worst_any.min_passing_atol):
            tol = policy.tolerance_for(worst_any.name)
            lead = (
                f"worst output {worst_any.name!r} would pass with atol={worst_any.min_passing_atol:.3g}"
                + (f" (gate: atol={tol.atol:g} rtol={tol.rtol:g}) " if tol is not None else " ")
            )
        else:
            lead = ""
        hint = lead + (f"; likely causes: {', '.join(causes)}" if causes else "")
    seconds = time.perf_counter() - start
    labels = source.labels()
    sampled_classes = plan.sampled_classes
    top1 = task_res.to_dict() if task_res is not None else None
    mse_src = (top1 or {}) if config.task == "classification" else {}
    main = next((s for s in summaries if s.name == engine.task_output), None)
    compare = {
        "mode": config.mode,
        "sample_policy": plan.policy,
        "sample_count": engine.samples,
        "per_class_k": config.per_class_k,
        "min_classes": config.min_classes,
        "max_total": config.max_total,
        "sampled_classes": sampled_classes,
        "sampled_images": engine.samples if source.kind == "image_folder" else 0,
        "mse_mean": mse_src.get("prob_mse_mean", main.mse_mean if main else None),
        "mse_p99": mse_src.get("prob_mse_p99", main.mse_p99 if main else None),
        "top1_match_rate": (top1 or {}).get("top1_match_rate"),
        "top1_mismatch_count": (top1 or {}).get("top1_mismatch_count"),
        "failed": not passed,
        "failure_reason": "; ".join(failures) if failures else None,
        "deltas": {
            "map_0_5": (top1 or {}).get("map_0_5_delta"),
            "map_0_5_0_95": (top1 or {}).get("map_0_5_0_95_delta"),
        },
        "notes": "; ".join(plan.notes + notes) or None,
    }
    first = specs[0] if specs else None
    params = info.parameter_count
    meta = info.metadata
    scores = main.sample_shape[-1] if main and main.sample_shape else None
    model_fields = {
        "model_name": meta.get("model_name") or Path(onnx_path).stem,
        "backbone": meta.get("backbone")
        or meta.get("model_type")
        or (type(module).__name__ if module is not None else None),
        "num_classes": meta.get("num_classes")
        or (scores if config.task in ("classification", "sequence") else None),
        "ckpt_path": ckpt or meta.get("checkpoint"),
        "onnx_path": str(onnx_path),
        "onnx_sha256": info.sha256,
        "exported_at_utc": meta.get("exported_at_utc"),
        "git_sha": meta.get("git_sha") or git_sha(),
        "input_shape": list(first.shape) if first else [],
        "inputs": [s.to_dict() for s in specs],
        "output_names": output_names,
        "opset": info.opsets.get("ai.onnx"),
        "exporter": meta.get("exporter"),
        "dynamic_axes": bool(dim_table(specs)) and not static,
        "dynamic_axes_detail": meta.get("dynamic_axes") if isinstance(meta.get("dynamic_axes"), dict) else {},
        "params_million": round(params / 1e6, 4),
        "providers": list(candidate.providers),
        "provider_fallbacks": [f.to_dict() for f in candidate.info.fallbacks],
        "postprocess": {
            "nms": config.nms.to_dict() if config.task == "detection" else None,
            "applied_in": "python_common" if config.task == "detection" else None,
        },
    }
    evidence = _evidence(engine, source.kind, groups, info.metadata, config)
    evidence["nonfinite"] = {
        o.name: {
            "reference": o.nonfinite_reference,
            "candidate": o.nonfinite_candidate,
            "first": o.nonfinite_where,
        }
        for o in summaries
        if o.nonfinite_reference or o.nonfinite_candidate
    }
    if (evidence.get("class_coverage") or {}).get("weak"):
        diags.append(
            _diag(
                "VER111",
                "warning",
                "weak evidence: few classes covered",
                evidence["class_coverage"]["text"],
                "Agreement on a few classes says little about the others: verify with real samples (--data, "
                "--mode coverage) so every class is predicted by the reference at least once.",
            )
        )
    report = VerifyReport(
        passed=passed,
        failure_reason=compare["failure_reason"],
        hint=hint,
        worst_output=worst_output,
        model=model_fields,
        compare=compare,
        precision=config.precision,
        task=config.task,
        reference="torch" if ref_runner is not None else "golden",
        data=source.description,
        policy=policy.to_dict(),
        outputs=[s.to_dict() for s in summaries],
        shapes=groups,
        task_metrics=top1,
        worst_samples=[w.to_dict() for o in output_names for w in engine.acc[o].worst()],
        shape_issues=shape_issues,
        sampling={**plan.to_dict(), "labels": labels is not None, "batch_size": config.batch_size},
        environment=_environment(),
        timing={
            "seconds": round(seconds, 3),
            "reference_seconds": round(engine.ref_seconds, 3),
            "candidate_seconds": round(engine.cand_seconds, 3),
            "data_seconds": round(data_seconds, 3),
            "samples_per_second": round(engine.samples / data_seconds, 2) if data_seconds > 0 else None,
        },
        candidates=list(candidates or []),
        diagnostics=diags,
        verified_at_utc=utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        evidence=evidence,
    )
    if not passed and config.raise_on_fail:
        raise VerificationError(f"verification failed: {report.failure_reason}", hint=hint, report=report)
    return report

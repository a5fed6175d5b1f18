"""The sweeps: every declared dynamic dim at its sweep points (a point PyTorch cannot run is probed one dim at a
time), and the export-shape inputs shifted, scaled and set to edge values.
"""

from __future__ import annotations

import numpy as np

from onnxship.runtime._data import Batch
from onnxship.spec._inputs import TensorSpec, dim_table, sample_feeds, sweep_points
from onnxship.verify._config import VerifyConfig
from onnxship.verify._engine import _Engine
from onnxship.verify._parity import sweep_summary
from onnxship.verify._values import value_variants


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
                    _reference_fails(
                        engine, sample_feeds(specs, export_point, seed=config.seed + k, use_samples=False)
                    )
                    is None
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

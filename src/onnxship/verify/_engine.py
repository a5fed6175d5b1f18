"""The verify engine: both engines over the same batches, streaming statistics per output and per shape group,
and the run over the (sampled) data.

DO NOT import torch at module level.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from onnxship._errors import CheckError, ConfigError, OnnxshipError
from onnxship.runtime._data import Batch, DataSource
from onnxship.verify._config import VerifyConfig
from onnxship.verify._metrics import OutputAccumulator, batch_stats
from onnxship.verify._policy import GatePolicy
from onnxship.verify._sampling import SamplePlan
from onnxship.verify._setup import _Casts
from onnxship.verify._tasks import (
    ClassificationMetric,
    DetectionMetric,
    SequenceMetric,
)


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

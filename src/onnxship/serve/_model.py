"""Loading and golden-checking one served model (an onnxruntime session or the PyTorch fallback).

A model is loaded fully before it can serve: the bytes ``locate`` read are opened by the project's one session
factory, its signature is built from the session plus the release's verified dim ranges, and the release's
``golden.npz`` is run through it and compared with the stored PyTorch outputs. Only a model that passed is ever
handed out.

DO NOT import onnxruntime or torch at module level.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxship._errors import CheckError, MissingDependencyError, OnnxshipError, ServeError
from onnxship.serve._config import ServeConfig
from onnxship.serve._files import redact_paths
from onnxship.serve._locate import Located, _error
from onnxship.serve._signature import DimInfo, Signature, TensorInfo, datatype_of

__all__ = ["ServedModel", "load_model", "load_torch_model"]


@dataclass
class ServedModel:
    """A loaded, checked model: what requests run on until the next successful reload."""

    name: str
    engine: str  # onnxruntime | torch
    source: str  # the path it was loaded from, relative to the model root
    signature: Signature
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    golden: dict[
        str, Any
    ]  # {"status": passed | not-applicable, "outputs": [...]} (a failure never gets here)
    release: str | None = None  # release version (bundle folder name)
    meta: dict[str, Any] = field(default_factory=dict)
    version: int = 0  # set by the ModelManager when it starts serving
    loaded_at: float = field(default_factory=time.time)
    load_seconds: float = 0.0
    providers: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "model_name": self.name,
            "model_version": str(self.version),
            "engine": self.engine,
            "source": self.source,
            "release": self.release,
            "onnx_sha256": self.meta.get("onnx_sha256"),
            "golden": self.golden,
            "providers": self.providers,
            "batchable": self.signature.batchable,
            "batch_max": self.signature.batch_max,
            "loaded_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
            "load_seconds": round(self.load_seconds, 3),
            "notes": self.signature.notes,
        }


def _read_golden(data: bytes, where: str) -> Any:
    import io
    import json
    import zipfile

    from onnxship.runtime._golden import Golden

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            keys = list(npz.keys())
            inputs = {k.split("/", 1)[1]: npz[k] for k in keys if k.startswith("inputs/")}
            outputs = {k.split("/", 1)[1]: npz[k] for k in keys if k.startswith("outputs/")}
            meta = json.loads(str(npz["__meta__"])) if "__meta__" in keys else {}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise _error(
            f"{where}: golden.npz is not a readable golden file ({type(exc).__name__})",
            422,
            hint="golden.npz is written by `onnxship ship`; re-ship the release",
        ) from None
    if not inputs or not outputs:
        raise _error(
            f"{where}: golden.npz has no inputs/ or outputs/ arrays", 422, hint="re-ship the release"
        )
    return Golden(inputs=inputs, outputs=outputs, meta=meta if isinstance(meta, dict) else {})


def _golden_check(
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    signature: Signature,
    golden_bytes: bytes,
    where: str,
) -> dict[str, Any]:
    from onnxship.verify._compare import PRECISION_TOLERANCES, Tolerance, compare_outputs

    golden = _read_golden(golden_bytes, where)
    names = signature.input_names
    if sorted(golden.inputs) != sorted(names):
        raise _error(
            f"{where}: golden inputs {sorted(golden.inputs)} do not match the model inputs {names}",
            422,
            hint="the golden file belongs to another model; re-ship the release",
        )
    tol_rec = golden.meta.get("tolerance") or {}
    tol = PRECISION_TOLERANCES["fp32"]
    if isinstance(tol_rec, dict) and "atol" in tol_rec and "rtol" in tol_rec:
        try:
            tol = Tolerance(float(tol_rec["atol"]), float(tol_rec["rtol"]))
        except (TypeError, ValueError):
            raise _error(
                f"{where}: golden.npz records a malformed tolerance {str(tol_rec)[:80]}",
                422,
                hint="re-ship the release",
            ) from None
    try:
        got = run({k: np.asarray(v) for k, v in golden.inputs.items()})
    except Exception as exc:  # the backend's own error on the golden inputs: the model is not servable
        raise _error(
            f"{where}: the model fails on its golden inputs: {redact_paths(_first_line(exc))}",
            422,
            hint="re-export and re-ship the model",
        ) from None
    stats = compare_outputs(golden.outputs, got, tol)
    failed = [s for s in stats if not s.passed]
    if failed:
        reasons = "; ".join(f"{s.name}: {s.reason}" for s in failed)
        raise _error(
            f"{where} fails its golden check ({reasons})",
            422,
            hint="the model file does not reproduce the PyTorch outputs recorded at release time; "
            "keep serving the previous model and re-ship this one",
        )
    return {
        "status": "passed",
        "samples": int(next(iter(golden.inputs.values())).shape[0]) if names else 0,
        "tolerance": tol.to_dict(),
        "outputs": [{"name": s.name, "max_abs": s.max_abs} for s in stats],
    }


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def load_model(located: Located, config: ServeConfig) -> ServedModel:
    """Open the ONNX model from the bytes ``locate`` read (and hashed) with the project's session factory, then run
    its golden check.

    Raises:
        ServeError: 422 when onnxruntime cannot load it, its signature is unsupported or the golden check fails.
    """
    from onnxship.runtime._session import SessionConfig, open_session

    start = time.perf_counter()
    name = located.onnx_path.name
    if located.golden_bytes is None and config.require_golden:
        raise _error(
            f"{located.shown or name} has no golden.npz beside it, so it cannot be checked before serving",
            422,
            hint="serve a release bundle written by `onnxship ship`, or pass --no-golden-check",
        )
    if not located.onnx_bytes:
        raise _error(f"cannot load {name}: the file is empty", 422, hint="re-export the model")
    external = located.external
    try:
        info = open_session(
            located.onnx_bytes,
            SessionConfig(intra_op_threads=config.intra_op_threads, allow_spinning=False),
            external_data=external or None,
        )
    except CheckError as exc:
        raise _error(
            f"cannot load {name}: {redact_paths(exc.message)}", 422, hint=exc.hint and redact_paths(exc.hint)
        ) from None
    session = info.session
    try:
        signature = Signature.from_session(session, located.meta)
        signature = signature.with_batch_limit(_max_batch(config, located.meta))
    except ServeError as exc:
        raise _error(f"{name}: {exc.message}", 422, hint=exc.hint) from None
    except (TypeError, ValueError, AttributeError) as exc:  # a hand-edited sidecar of a bare .onnx
        raise _error(
            f"{name}: the metadata sidecar's input records are malformed ({type(exc).__name__}: "
            f"{redact_paths(str(exc))[:200]})",
            422,
            hint="re-export the model (its .meta.json records whole-number dims)",
        ) from None
    output_names = signature.output_names

    def run(feeds: dict[str, np.ndarray], _keep: Any = external) -> dict[str, np.ndarray]:
        # _keep: onnxruntime may use the external data buffers for as long as the session lives
        return dict(zip(output_names, session.run(output_names, feeds), strict=True))

    where = f"model {located.release or name}"
    golden = (
        _golden_check(run, signature, located.golden_bytes, where)
        if located.golden_bytes is not None
        else {"status": "skipped", "reason": "no golden.npz and --no-golden-check"}
    )
    meta = dict(located.meta)
    meta["onnx_sha256"] = located.sha256  # what was loaded (the release's record was checked against it)
    return ServedModel(
        name=located.name,
        engine="onnxruntime",
        source=located.shown or name,
        signature=signature,
        run=run,
        golden=golden,
        release=located.release,
        meta=meta,
        load_seconds=time.perf_counter() - start,
        providers=info.providers,
    )


def _max_batch(config: ServeConfig, meta: dict[str, Any]) -> int | None:
    """``--max-batch`` checked against the release's largest batch (the one Triton and MLflow get too)."""
    from onnxship.package._limits import serving_limits

    if config.max_batch is None:
        return None
    return serving_limits(meta).resolve(config.max_batch, "--max-batch", error=ServeError)


def load_torch_model(config: ServeConfig) -> ServedModel:
    """The PyTorch fallback (the third model source): the factory plus checkpoint, run eagerly.

    There is no golden file for a checkpoint: the PyTorch model *is* the reference, so readiness only needs a
    successful forward pass on generated inputs.

    Raises:
        MissingDependencyError: torch is not installed (``pip install 'onnxship[torch]'``).
        ServeError: the factory, checkpoint or input specs are unusable.
    """
    try:
        import torch  # noqa: F401  (only to tell a missing torch apart from a broken model)
    except ImportError:
        raise MissingDependencyError(
            f"the PyTorch fallback ({config.model_spec} + {config.checkpoint}) needs torch, which is not installed",
            hint="pip install 'onnxship[torch]', or serve an ONNX release (--releases / MODEL_PATH)",
        ) from None
    from onnxship.runtime._runners import TorchRunner
    from onnxship.spec._binding import bind_inputs
    from onnxship.spec._inputs import parse_input_specs, sample_feeds
    from onnxship.spec._model import parse_model_spec

    start = time.perf_counter()
    try:
        spec = parse_model_spec(str(config.model_spec), checkpoint=config.checkpoint)
        inputs = list(config.inputs) or list(spec.module_attr("ONNXSHIP_INPUTS", None) or [])
        if not inputs:
            raise ServeError(
                f"no input specs for {config.model_spec}",
                hint="pass --input NAME:DIMS:DTYPE or define ONNXSHIP_INPUTS in the model module",
            )
        specs = parse_input_specs(inputs)
        loaded = spec.load()
        out_names = spec.module_attr("ONNXSHIP_OUTPUT_NAMES", None)
        runner = TorchRunner(
            loaded.model,
            bind_inputs(loaded.model, [s.name for s in specs]),
            output_names=list(out_names) if out_names else None,
        )
        probe = runner.infer(sample_feeds(specs, {}, seed=0))
    except ServeError:
        raise
    except OnnxshipError as exc:
        raise _error(f"PyTorch fallback {config.model_spec}: {exc.message}", 422, hint=exc.hint) from None
    batch_names = {s.dims[0].name for s in specs if s.dims and s.dims[0].dynamic}
    outputs = [
        TensorInfo(
            n,
            datatype_of(a.dtype),
            tuple(
                DimInfo(None, next(iter(batch_names)), 1, None)
                if i == 0 and len(batch_names) == 1
                else DimInfo(int(d))
                for i, d in enumerate(a.shape)
            ),
        )
        for n, a in probe.items()
    ]
    signature = Signature.from_specs(specs, outputs)
    signature = signature.with_batch_limit(_max_batch(config, {"inputs": [s.to_dict() for s in specs]}))
    name = spec.default_name()
    return ServedModel(
        name=name,
        engine="torch",
        source=f"{config.model_spec} + {config.checkpoint}",
        signature=signature,
        run=runner.infer,
        golden={"status": "not-applicable", "reason": "the PyTorch model is the reference"},
        release=None,
        meta={
            "model_name": name,
            "checkpoint": str(config.checkpoint),
            "weights_sha256": loaded.weights_sha256,
        },
        load_seconds=time.perf_counter() - start,
        providers=["torch-cpu"],
    )

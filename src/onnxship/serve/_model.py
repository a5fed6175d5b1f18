"""Locating, loading and golden-checking one served model (an onnxruntime session or the PyTorch fallback).

A model is loaded fully before it can serve: the file is read and opened by the project's one session factory,
its signature is built from the session plus the release's verified dim ranges, and the release's ``golden.npz``
is run through it and compared with the stored PyTorch outputs. Only a model that passed is ever handed out.

DO NOT import onnxruntime or torch at module level.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxship._errors import CheckError, MissingDependencyError, OnnxshipError, PackagingError, ServeError
from onnxship.serve._config import ServeConfig
from onnxship.serve._signature import DimInfo, Signature, TensorInfo, datatype_of

__all__ = ["Located", "ServedModel", "confine", "load_model", "load_torch_model", "locate"]

_RELEASE_HINT = (
    "serve a release folder written by `onnxship ship` (releases/<name>/<version>), its `latest` "
    "link, or an .onnx file with golden.npz beside it"
)


def _error(message: str, status: int, hint: str | None = None) -> ServeError:
    exc = ServeError(message, hint=hint)
    exc.status = status  # type: ignore[attr-defined]  # the HTTP status /reload answers with
    return exc


@dataclass
class ServedModel:
    """A loaded, checked model: what requests run on until the next successful reload."""

    name: str
    engine: str  # onnxruntime | torch
    source: str  # the path it was loaded from
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


@dataclass
class Located:
    """The files of one servable model."""

    onnx_path: Path
    meta: dict[str, Any]
    golden_path: Path | None
    name: str
    release: str | None


def confine(path: str | Path, root: Path | None) -> Path:
    """``path`` (relative paths are relative to ``root``) resolved through every symlink, refused outside ``root``.

    Raises:
        ServeError: status 403 when the resolved path leaves the model root (``..``, a symlink, an absolute path).
    """
    if "\x00" in str(path):  # os.path.realpath would raise ValueError: embedded null byte
        raise _error(f"model path {str(path)!r} contains a NUL byte", 400, hint=_RELEASE_HINT)
    raw = Path(path)
    if root is None:
        return Path(os.path.realpath(raw))
    real = Path(os.path.realpath(raw if raw.is_absolute() else root / raw))
    if real != root and root not in real.parents:
        raise _error(
            f"model path {str(path)!r} is outside the model root {str(root)!r}",
            403,
            hint="reload only models below the model root (--releases or --model-root)",
        )
    return real


def _readable(path: Path, what: str) -> None:
    if not path.exists():
        raise _error(f"{what} {str(path)!r} does not exist", 404, hint=_RELEASE_HINT)
    if not os.access(path, os.R_OK):
        raise _error(
            f"{what} {str(path)!r} is not readable by this process",
            403,
            hint="fix its permissions (chmod a+r) or run the server as its owner",
        )


def locate(path: str | Path, root: Path | None = None) -> Located:
    """The model file, sidecar and golden file of a release folder, a ``latest`` link, ``releases/<name>`` or an
    .onnx file. Every file is re-checked against ``root``.

    Raises:
        ServeError: 403 outside the root or unreadable, 404 missing, 422 not a servable model.
    """
    from onnxship.package._release import MANIFEST, read_release

    target = confine(path, root)
    _readable(target, "model path")
    release = None
    if target.is_file() and target.suffix == ".onnx":
        manifest = target.parent / MANIFEST
        if manifest.is_file():
            release = target.parent
    elif target.is_dir():
        release = target
    else:
        raise _error(
            f"model path {str(path)!r} is neither a release folder nor an .onnx file", 422, hint=_RELEASE_HINT
        )
    if release is not None:
        try:
            rel = read_release(release, check=True)
        except PackagingError as exc:
            raise _error(f"cannot serve {str(path)!r}: {exc.message}", 422, hint=exc.hint) from None
        onnx_path = confine(rel.model_path, root)
        if target.is_file() and onnx_path != target:
            raise _error(
                f"{target.name} is not the model of release {rel.version} ({rel.model_path.name})",
                422,
                hint="serve the release folder itself",
            )
        golden = rel.golden_path
        return Located(
            onnx_path,
            rel.meta,
            confine(golden, root) if golden else None,
            str(rel.meta.get("model_name") or rel.name),
            rel.version,
        )
    meta_path = target.with_name(target.name + ".meta.json")
    meta: dict[str, Any] = {}
    if meta_path.is_file():
        import json

        try:
            meta = json.loads(confine(meta_path, root).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise _error(
                f"metadata sidecar {str(meta_path)!r} is unreadable ({type(exc).__name__})",
                422,
                hint="re-export the model",
            ) from None
    golden = target.parent / "golden.npz"
    return Located(
        target,
        meta if isinstance(meta, dict) else {},
        confine(golden, root) if golden.is_file() else None,
        str((meta if isinstance(meta, dict) else {}).get("model_name") or target.stem),
        None,
    )


def _golden_check(
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    signature: Signature,
    golden_path: Path,
    where: str,
) -> dict[str, Any]:
    from onnxship.verify._compare import PRECISION_TOLERANCES, Tolerance, compare_outputs
    from onnxship.verify._golden import read_golden

    try:
        golden = read_golden(golden_path)
    except CheckError as exc:
        raise _error(f"{where}: {exc.message}", 422, hint=exc.hint) from None
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
        tol = Tolerance(float(tol_rec["atol"]), float(tol_rec["rtol"]))
    try:
        got = run({k: np.asarray(v) for k, v in golden.inputs.items()})
    except Exception as exc:  # the backend's own error on the golden inputs: the model is not servable
        raise _error(
            f"{where}: the model fails on its golden inputs: {str(exc).strip().splitlines()[0][:300]}",
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


def load_model(located: Located, config: ServeConfig) -> ServedModel:
    """Open the ONNX model with the project's session factory and run its golden check.

    Raises:
        ServeError: 422 when onnxruntime cannot load it, its signature is unsupported or the golden check fails.
    """
    from onnxship.export._onnxfile import external_data_files
    from onnxship.inspect import load_onnx_checked
    from onnxship.runtime._session import SessionConfig, open_session

    start = time.perf_counter()
    _readable(located.onnx_path, "model file")
    if located.golden_path is None and config.require_golden:
        raise _error(
            f"{located.onnx_path} has no golden.npz beside it, so it cannot be checked before serving",
            422,
            hint="serve a release bundle written by `onnxship ship`, or pass --no-golden-check",
        )
    try:
        # External data outside the model's folder is refused before onnxruntime opens the file (CVE-2024-27318).
        external_data_files(located.onnx_path, load_onnx_checked(located.onnx_path))
        info = open_session(
            located.onnx_path, SessionConfig(intra_op_threads=config.intra_op_threads, allow_spinning=False)
        )
    except CheckError as exc:
        raise _error(f"cannot load {located.onnx_path.name}: {exc.message}", 422, hint=exc.hint) from None
    session = info.session
    try:
        signature = Signature.from_session(session, located.meta)
    except ServeError as exc:
        raise _error(f"{located.onnx_path.name}: {exc.message}", 422, hint=exc.hint) from None
    output_names = signature.output_names

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(output_names, session.run(output_names, feeds), strict=True))

    where = f"model {located.release or located.onnx_path.name}"
    golden = (
        _golden_check(run, signature, located.golden_path, where)
        if located.golden_path is not None
        else {"status": "skipped", "reason": "no golden.npz and --no-golden-check"}
    )
    return ServedModel(
        name=located.name,
        engine="onnxruntime",
        source=str(located.onnx_path),
        signature=signature,
        run=run,
        golden=golden,
        release=located.release,
        meta=located.meta,
        load_seconds=time.perf_counter() - start,
        providers=info.providers,
    )


def load_torch_model(config: ServeConfig) -> ServedModel:
    """The PyTorch fallback (the last step of model selection): the factory plus checkpoint, run eagerly.

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
    from onnxship.spec._binding import bind_inputs
    from onnxship.spec._inputs import parse_input_spec, sample_feeds
    from onnxship.spec._model import parse_model_spec
    from onnxship.verify._runners import TorchRunner

    start = time.perf_counter()
    try:
        spec = parse_model_spec(str(config.model_spec), checkpoint=config.checkpoint)
        inputs = list(config.inputs) or list(spec.module_attr("ONNXSHIP_INPUTS", None) or [])
        if not inputs:
            raise ServeError(
                f"no input specs for {config.model_spec}",
                hint="pass --input NAME:DIMS:DTYPE or define ONNXSHIP_INPUTS in the model module",
            )
        specs = [parse_input_spec(s) for s in inputs]
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

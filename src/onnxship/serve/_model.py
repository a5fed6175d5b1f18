"""Locating, loading and golden-checking one served model (an onnxruntime session or the PyTorch fallback).

A model is loaded fully before it can serve: the file is read and opened by the project's one session factory,
its signature is built from the session plus the release's verified dim ranges, and the release's ``golden.npz``
is run through it and compared with the stored PyTorch outputs. Only a model that passed is ever handed out.

DO NOT import onnxruntime or torch at module level.

Size: over 400 lines on purpose: the lifecycle of one served model (locate, read, confine, golden-check,
load): each step hands the next a checked value.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxship._errors import CheckError, MissingDependencyError, OnnxshipError, ServeError
from onnxship.serve._config import ServeConfig
from onnxship.serve._files import ModelRoot, redact_paths, serve_error
from onnxship.serve._signature import DimInfo, Signature, TensorInfo, datatype_of

__all__ = [
    "Located",
    "ServedModel",
    "confine",
    "latest_release",
    "load_model",
    "load_torch_model",
    "locate",
]

_RELEASE_HINT = (
    "serve a release folder written by `onnxship ship` (releases/<name>/<version>), its `latest` "
    "link, or an .onnx file with golden.npz beside it"
)


def _error(message: str, status: int, hint: str | None = None) -> ServeError:
    return serve_error(message, status, hint)


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


@dataclass
class Located:
    """The files of one servable model, read (and hashed) through the model root's descriptors."""

    onnx_path: Path  # resolved, inside the model root
    meta: dict[str, Any]
    golden_path: Path | None
    name: str
    release: str | None
    shown: str = ""  # onnx_path as responses show it (relative to the model root)
    onnx_bytes: bytes = b""
    golden_bytes: bytes | None = None
    external: dict[str, bytes] = field(default_factory=dict)  # external data: location -> bytes
    sha256: str = ""  # of onnx_bytes


def confine(path: str | Path, root: Path | ModelRoot | None) -> Path:
    """``path`` (relative paths are relative to ``root``) resolved through every symlink, refused outside ``root``.

    Raises:
        ServeError: status 403 when the resolved path leaves the model root (``..``, a symlink, an absolute path).
    """
    return _as_root(root).resolve(path)


def _as_root(root: Path | ModelRoot | None) -> ModelRoot:
    return root if isinstance(root, ModelRoot) else ModelRoot(root)


def _json_doc(data: bytes, what: str) -> dict[str, Any]:
    import json

    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise _error(f"{what} is not valid JSON ({type(exc).__name__})", 422, hint=_RELEASE_HINT) from None
    if not isinstance(doc, dict):
        raise _error(f"{what} is not a JSON object", 422, hint=_RELEASE_HINT)
    return doc


def _component(value: Any, what: str) -> str:
    """A file or folder name that stays where it is: one path component, no ``..``, no separators."""
    if (
        not isinstance(value, str)
        or not value
        or value in (".", "..")
        or "/" in value
        or "\\" in value
        or "\x00" in value
    ):
        raise _error(
            f"{what} {str(value)[:80]!r} is not a plain file or folder name",
            403,
            hint="releases name their files and versions without paths; re-ship the release",
        )
    return value


def latest_release(name_dir: Path, root: ModelRoot) -> Path | None:
    """The release ``<name_dir>/latest`` (symlink) or ``<name_dir>/LATEST`` (text) names, inside the root; None
    when there is neither.

    Raises:
        ServeError: 403 when the pointer leads outside the root or is not a plain version name.
    """
    from onnxship.package._release import MANIFEST

    link = name_dir / "latest"
    if link.is_symlink():
        real = root.resolve(link, "the latest link")
        return real if (real / MANIFEST).is_file() else None
    text = name_dir / "LATEST"
    if text.is_file() or text.is_symlink():
        version = root.read_text(text, "the LATEST file").strip()
        if not version:
            return None
        real = root.resolve(name_dir / _component(version, "the LATEST file names"), "the LATEST release")
        return real if (real / MANIFEST).is_file() else None
    return None


def _read_release(folder: Path, root: ModelRoot, onnx_hint: Path | None) -> Located:
    from onnxship.package._release import MANIFEST, RELEASE_SCHEMA, _check_meta

    version = folder.name
    manifest = _json_doc(root.read(folder / MANIFEST, "release manifest"), f"release {version}: {MANIFEST}")
    if manifest.get("schema") != RELEASE_SCHEMA:
        raise _error(
            f"release {version}: manifest schema {manifest.get('schema')!r}, expected {RELEASE_SCHEMA!r}",
            422,
            hint=_RELEASE_HINT,
        )
    model_file = _component(manifest.get("model_file"), f"release {version}: model_file")
    onnx_path = root.resolve(folder / model_file, "model file")
    if onnx_hint is not None and onnx_hint != onnx_path:
        raise _error(
            f"{onnx_hint.name} is not the model of release {version} ({model_file})",
            422,
            hint="serve the release folder itself",
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise _error(f"release {version}: {MANIFEST} has no 'files' table", 422, hint=_RELEASE_HINT)
    meta = _json_doc(
        root.read(folder / f"{model_file}.meta.json", "metadata sidecar"),
        f"release {version}: metadata sidecar",
    )
    try:  # the same sidecar checks as every other reader of a release (whole-number dims, input records)
        _check_meta(folder, folder / f"{model_file}.meta.json", meta)
    except OnnxshipError as exc:
        raise _error(exc.message, 422, hint=exc.hint) from None
    onnx_bytes = root.read(onnx_path, "model file")
    actual = hashlib.sha256(onnx_bytes).hexdigest()
    for source, expected in (
        ("the metadata sidecar", meta.get("onnx_sha256")),
        (MANIFEST, files.get(model_file)),
    ):
        if expected != actual:
            raise _error(
                f"release {version}: sha256 of {model_file} is {actual[:16]}… but {source} records "
                f"{str(expected)[:16]}…: the model file was changed after the release was written",
                422,
                hint="releases are immutable: ship a new release instead of editing one",
            )
    model = _parse_onnx(onnx_bytes, model_file)
    wanted = {"golden.npz"} | {
        os.path.normpath(loc).replace(os.sep, "/") for _, loc in _locations(model, model_file)
    }  # kept in memory; every other listed file is only hashed
    contents: dict[str, bytes] = {}
    for rel, expected in files.items():
        if rel == model_file:
            continue
        if not isinstance(rel, str) or not rel or "\x00" in rel:
            raise _error(f"release {version}: {MANIFEST} lists a bad file name {str(rel)[:80]!r}", 422)
        if rel in wanted:
            data = root.read(folder / rel, f"release {version}: file", base=folder)
            actual_rel = hashlib.sha256(data).hexdigest()
            contents[rel] = data
        else:
            actual_rel = root.sha256(folder / rel, f"release {version}: file", base=folder)
        if actual_rel != expected:
            raise _error(
                f"release {version}: sha256 of {rel} does not match {MANIFEST}",
                422,
                hint="releases are immutable: ship a new release instead of editing one",
            )
    golden = contents.get("golden.npz")
    if golden is None and (folder / "golden.npz").exists():
        golden = root.read(folder / "golden.npz", "golden file")
    located = Located(
        onnx_path,
        meta,
        folder / "golden.npz" if golden is not None else None,
        str(meta.get("model_name") or manifest.get("name") or model_file.removesuffix(".onnx")),
        str(manifest.get("version") or version),
        shown=root.show(onnx_path),
        onnx_bytes=onnx_bytes,
        golden_bytes=golden,
        sha256=actual,
    )
    located.external = _external_data(located, root, contents, model)
    return located


def _locations(model: Any, name: str) -> list[tuple[str, str]]:
    from onnxship.onnxfile import external_data_locations

    try:
        return external_data_locations(model, name)
    except CheckError as exc:
        raise _error(f"cannot load {name}: {exc.message}", 422, hint=exc.hint) from None


def _external_data(
    located: Located, root: ModelRoot, known: dict[str, bytes], model: Any = None
) -> dict[str, bytes]:
    """Every external data file the model refers to (main graph, subgraphs, function bodies), read through the
    root and kept inside the model's folder; onnxruntime then gets them from memory and opens no file itself."""
    name = located.onnx_path.name
    if model is None:
        model = _parse_onnx(located.onnx_bytes, name)
    folder = located.onnx_path.parent
    out: dict[str, bytes] = {}
    for _, loc in _locations(model, name):
        if loc in out:
            continue
        real = root.resolve(folder / loc, "external data file")
        if folder not in real.parents:
            raise _error(
                f"cannot load {name}: external data location {loc!r} resolves outside the model folder",
                403,
                hint="symlinks out of the model folder are refused",
            )
        rel = real.relative_to(folder).as_posix()
        out[loc] = known[rel] if rel in known else root.read(real, "external data file")
    return out


def _parse_onnx(data: bytes, name: str) -> Any:
    import onnx
    from google.protobuf.message import DecodeError

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise _error(
            f"cannot load {name}: not a readable ONNX model ({type(exc).__name__})",
            422,
            hint="the file is truncated or not ONNX; re-export it",
        ) from None
    if not model.graph.node and not model.graph.output:
        raise _error(
            f"cannot load {name}: the file holds no graph",
            422,
            hint="the file is empty, truncated or not ONNX",
        )
    return model


def locate(path: str | Path, root: Path | ModelRoot | None = None) -> Located:
    """The model file, sidecar and golden file of a release folder, a ``latest`` link, ``releases/<name>`` or an
    .onnx file, each resolved inside ``root`` and read through its descriptors.

    Raises:
        ServeError: 403 outside the root or unreadable, 404 missing, 422 not a servable model.
    """
    from onnxship.package._release import MANIFEST

    root = _as_root(root)
    target = root.resolve(path, "model path")
    if not target.exists():
        raise _error(f"model path {root.show(path)!r} does not exist", 404, hint=_RELEASE_HINT)
    if not os.access(target, os.R_OK):
        raise _error(
            f"model path {root.show(path)!r} is not readable by this process",
            403,
            hint="fix its permissions (chmod a+r) or run the server as its owner",
        )
    if target.is_dir():
        release = target if (target / MANIFEST).is_file() else latest_release(target, root)
        if release is None:
            raise _error(
                f"model path {root.show(path)!r} is not a release folder (no {MANIFEST}, latest or LATEST)",
                422,
                hint=_RELEASE_HINT,
            )
        return _read_release(release, root, None)
    if not (target.is_file() and target.suffix == ".onnx"):
        raise _error(
            f"model path {root.show(path)!r} is neither a release folder nor an .onnx file",
            422,
            hint=_RELEASE_HINT,
        )
    if (target.parent / MANIFEST).is_file():
        return _read_release(target.parent, root, target)
    onnx_bytes = root.read(target, "model file")
    meta: dict[str, Any] = {}
    meta_path = target.with_name(target.name + ".meta.json")
    if meta_path.exists() or meta_path.is_symlink():
        meta = _json_doc(root.read(meta_path, "metadata sidecar"), f"metadata sidecar {meta_path.name}")
    golden_path = target.parent / "golden.npz"
    golden = None
    if golden_path.exists() or golden_path.is_symlink():
        golden = root.read(golden_path, "golden file")
    located = Located(
        target,
        meta,
        golden_path if golden is not None else None,
        str(meta.get("model_name") or target.stem),
        None,
        shown=root.show(target),
        onnx_bytes=onnx_bytes,
        golden_bytes=golden,
        sha256=hashlib.sha256(onnx_bytes).hexdigest(),
    )
    located.external = _external_data(located, root, {})
    return located


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
    from onnxship.spec._inputs import parse_input_spec, sample_feeds
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

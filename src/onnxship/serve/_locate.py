"""Locating one servable model: a release folder, its ``latest`` link or an .onnx file, confined to the model root
and read (and hashed) through the root's descriptors, external data included.

DO NOT import onnxruntime or torch at module level.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxship._errors import CheckError, OnnxshipError, ServeError
from onnxship.serve._files import ModelRoot, serve_error

__all__ = ["Located", "confine", "latest_release", "locate"]

_RELEASE_HINT = (
    "serve a release folder written by `onnxship ship` (releases/<name>/<version>), its `latest` "
    "link, or an .onnx file with golden.npz beside it"
)


def _error(message: str, status: int, hint: str | None = None) -> ServeError:
    return serve_error(message, status, hint)


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

"""Release bundles on disk: version tags, the ``latest`` pointer, reading and validating, listing.

A release lives in ``<releases>/<name>/<name>-<YYYYMMDD-HHMMSS>-<gitsha7|nogit>/`` and holds a manifest,
``release.json``, with the sha256 of every file. ``<releases>/<name>/latest`` (a relative symlink) and
``<releases>/<name>/LATEST`` (a text file with the version, for filesystems without symlinks) name the newest
complete release; both are replaced atomically, only after the bundle is complete.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from onnxship._errors import PackagingError
from onnxship._util import atomic_write_text

__all__ = [
    "MANIFEST",
    "RELEASE_SCHEMA",
    "Release",
    "ReleaseInfo",
    "current_latest",
    "list_releases",
    "read_release",
    "resolve_release",
    "set_latest",
    "tag_parts",
    "version_tag",
]

RELEASE_SCHEMA = "onnxship.release/1"
MANIFEST = "release.json"
TAG_FORMAT = "%Y%m%d-%H%M%S"
_TAG = re.compile(r"^(?P<name>.+)-(?P<ts>\d{8}-\d{6})-(?P<sha>[0-9a-f]{7}|nogit)$")
_NOT_RELEASE_HINT = (
    "a release folder holds release.json, <name>.onnx and <name>.onnx.meta.json (written by "
    "`onnxship ship`); pass releases/<name>/<version>, releases/<name>/latest or releases/<name>"
)


def version_tag(name: str, when: datetime, sha: str) -> str:
    """``<name>-<YYYYMMDD-HHMMSS>-<gitsha7|nogit>`` in UTC (a sortable tag with the model name in front)."""
    if when.tzinfo is None:
        raise PackagingError("release time must be timezone-aware", hint="pass datetime.now(timezone.utc)")
    sha = sha[:7] if sha != "nogit" else "nogit"
    return f"{name}-{when.astimezone(timezone.utc).strftime(TAG_FORMAT)}-{sha}"


@dataclass
class Release:
    """A validated release bundle."""

    path: Path
    manifest: dict[str, Any]
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest["model_file"]

    @property
    def golden_path(self) -> Path | None:
        p = self.path / "golden.npz"
        return p if p.is_file() else None

    @property
    def passed(self) -> bool:
        return bool(self.manifest.get("passed"))

    @property
    def created_at(self) -> str:
        return str(self.manifest.get("created_at_utc", ""))

    def asset(self, name: str) -> Path | None:
        p = self.path / "assets" / f"{name}.json"
        return p if p.is_file() else None


@dataclass
class ReleaseInfo:
    """One row of ``onnxship list``."""

    version: str
    path: Path
    created_at: str = ""
    passed: bool | None = None
    size_bytes: int = 0
    latest: bool = False
    variants: list[str] = field(default_factory=list)
    error: str | None = None  # why this folder is not a valid release

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "path": str(self.path),
            "created_at": self.created_at,
            "passed": self.passed,
            "size_bytes": self.size_bytes,
            "latest": self.latest,
            "variants": self.variants,
            "error": self.error,
        }


def _sha256(path: Path) -> str:
    from onnxship.onnxfile import file_sha256

    return file_sha256(path)


def current_latest(name_dir: Path) -> str | None:
    """The version ``latest`` points to (the symlink first, then the LATEST file), or None."""
    link = name_dir / "latest"
    if link.is_symlink():
        return os.readlink(link).rstrip("/").split("/")[-1]
    text = name_dir / "LATEST"
    if text.is_file():
        return text.read_text(encoding="utf-8").strip() or None
    return None


def set_latest(name_dir: Path, version: str) -> None:
    """Point ``latest`` (symlink) and ``LATEST`` (text) at ``version``, each by an atomic replace."""
    if not (name_dir / version / MANIFEST).is_file():
        raise PackagingError(
            f"cannot point latest at {version!r}: {name_dir / version} is not a complete release",
            hint=_NOT_RELEASE_HINT,
        )
    tmp = name_dir / f".latest-{os.getpid()}-{secrets.token_hex(4)}"
    os.symlink(version, tmp)
    try:
        os.replace(tmp, name_dir / "latest")
    except BaseException:
        if tmp.is_symlink():
            tmp.unlink()
        raise
    atomic_write_text(name_dir / "LATEST", version + "\n")


def resolve_release(path: str | Path) -> Path:
    """A bundle folder from a bundle path, a ``latest`` link, or ``releases/<name>`` (its latest)."""
    path = Path(path)
    if not path.exists():
        raise PackagingError(f"{str(path)!r} does not exist", hint=_NOT_RELEASE_HINT)
    if (path / MANIFEST).is_file():
        return path.resolve()
    if path.is_dir():
        version = current_latest(path)
        if version and (path / version / MANIFEST).is_file():
            return (path / version).resolve()
    raise PackagingError(f"{str(path)!r} is not a release (no {MANIFEST})", hint=_NOT_RELEASE_HINT)


def _load_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PackagingError(
            f"{what} {str(path)!r} is unreadable ({type(exc).__name__})", hint=_NOT_RELEASE_HINT
        ) from None
    if not isinstance(data, dict):
        raise PackagingError(f"{what} {str(path)!r} is not a JSON object", hint=_NOT_RELEASE_HINT)
    return data


def _check_meta(folder: Path, meta_path: Path, meta: dict[str, Any]) -> None:
    """The sidecar fields every consumer reads (Triton, serve, publish): input records with whole-number dims,
    verified dims as ``[{dim name: size}]``. A bad record is this release's error, not a traceback later."""
    from onnxship._errors import InputSpecError
    from onnxship.spec._inputs import TensorSpec

    where = f"release {folder.name}: {meta_path.name}"
    inputs = meta.get("inputs", [])
    if not isinstance(inputs, list):
        raise PackagingError(f"{where}: 'inputs' is not a list", hint=_NOT_RELEASE_HINT)
    for record in inputs:
        try:
            TensorSpec.from_dict(record if isinstance(record, dict) else {})
        except InputSpecError as exc:
            raise PackagingError(f"{where}: {exc.message}", hint="ship the model again") from None
    points = meta.get("verified_dims", [])
    ok = isinstance(points, list) and all(
        isinstance(pt, dict)
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pt.values())
        for pt in points
    )
    if not ok:
        raise PackagingError(
            f"{where}: 'verified_dims' is not a list of {{dim name: whole number}}",
            hint="ship the model again",
        )


def read_release(path: str | Path, *, check: bool = True) -> Release:
    """Open a release and check it: manifest, model file, meta sidecar and (``check``) every file's sha256.

    Raises:
        PackagingError: not a release, a missing file, or a sha256 that no longer matches.
    """
    folder = resolve_release(path)
    manifest = _load_json(folder / MANIFEST, "release manifest")
    if manifest.get("schema") != RELEASE_SCHEMA:
        raise PackagingError(
            f"{str(folder)!r}: manifest schema {manifest.get('schema')!r}, expected {RELEASE_SCHEMA!r}",
            hint=_NOT_RELEASE_HINT,
        )
    model = folder / str(manifest.get("model_file", ""))
    meta_path = folder / f"{manifest.get('model_file', '')}.meta.json"
    for p in (model, meta_path):
        if not p.is_file():
            raise PackagingError(f"release {folder.name}: {p.name} is missing", hint=_NOT_RELEASE_HINT)
    meta = _load_json(meta_path, "metadata sidecar")
    _check_meta(folder, meta_path, meta)
    if check:
        actual = _sha256(model)
        for source, expected in (
            ("the metadata sidecar", meta.get("onnx_sha256")),
            ("release.json", manifest.get("files", {}).get(model.name)),
        ):
            if expected != actual:
                raise PackagingError(
                    f"release {folder.name}: sha256 of {model.name} is {actual[:16]}… but {source} records "
                    f"{str(expected)[:16]}…: the model file was changed after the release was written",
                    hint="releases are immutable: ship a new release instead of editing one",
                )
        for rel, expected in manifest.get("files", {}).items():
            p = folder / rel
            if not p.is_file():
                raise PackagingError(f"release {folder.name}: {rel} is missing", hint="ship a new release")
            if rel != model.name and _sha256(p) != expected:
                raise PackagingError(
                    f"release {folder.name}: sha256 of {rel} does not match release.json",
                    hint="releases are immutable: ship a new release instead of editing one",
                )
    return Release(path=folder, manifest=manifest, meta=meta)


def list_releases(name_dir: str | Path, *, check: bool = True) -> list[ReleaseInfo]:
    """Every release under ``releases/<name>`` (oldest first); broken ones carry ``error``."""
    name_dir = Path(name_dir)
    if name_dir.is_symlink() or (name_dir / MANIFEST).is_file():
        raise PackagingError(
            f"{str(name_dir)!r} is a single release, not a folder of releases",
            hint=f"pass its parent: onnxship list {name_dir.resolve().parent}",
        )
    if not name_dir.is_dir():
        raise PackagingError(f"{str(name_dir)!r} is not a folder", hint="pass releases/<name>")
    names = sorted(
        c.name
        for c in name_dir.iterdir()
        if c.is_dir() and not c.is_symlink() and current_latest(c) is not None
    )
    if names and not any((c / MANIFEST).is_file() for c in name_dir.iterdir()):
        raise PackagingError(
            f"{str(name_dir)!r} holds the releases of several models ({', '.join(names)})",
            hint=f"pass one of them, e.g. onnxship list {name_dir / names[0]}",
        )
    latest = current_latest(name_dir)
    rows: list[ReleaseInfo] = []
    for child in sorted(name_dir.iterdir()):
        if child.name.startswith(".") or child.is_symlink() or not child.is_dir():
            continue
        info = ReleaseInfo(version=child.name, path=child, latest=child.name == latest)
        try:
            rel = read_release(child, check=check)
        except PackagingError as exc:
            info.error = exc.message
            rows.append(info)
            continue
        info.created_at = rel.created_at
        info.passed = rel.passed
        info.size_bytes = int(rel.manifest.get("size_bytes", 0))
        info.variants = [v.get("name", "?") for v in rel.manifest.get("variants", [])]
        rows.append(info)
    if not rows:
        raise PackagingError(f"{str(name_dir)!r} holds no releases", hint=_NOT_RELEASE_HINT)
    rows.sort(key=lambda r: (r.created_at or "", r.version))
    return rows


def tag_parts(version: str) -> dict[str, str] | None:
    """Split a version tag into name, timestamp and sha (None when it does not follow the format)."""
    m = _TAG.match(version)
    return m.groupdict() if m else None

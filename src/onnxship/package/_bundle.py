"""Writing a release bundle: a hidden staging folder beside the target, renamed into place when complete.

A killed writer (even ``kill -9``) leaves at most a hidden ``.staging-<pid>-s<start>-*`` folder, which the next writer
for the same model removes once its process is gone; the previous release and ``latest`` are never touched before the
rename.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from onnxship._errors import PackagingError, is_disk_full
from onnxship._util import (
    atomic_write,
    atomic_write_json,
    check_name,
    clean_stale_temps,
    force_rmtree,
    git_sha,
    owner_tag,
    utc_now,
)
from onnxship._version import __version__
from onnxship.package._release import (
    MANIFEST,
    RELEASE_SCHEMA,
    Release,
    current_latest,
    read_release,
    set_latest,
    tag_parts,
    version_tag,
)

__all__ = ["ReleaseWriter", "embed_metadata"]

_STAGING = ".staging-"


def _clean_stale(name_dir: Path) -> list[str]:
    """Staging folders (and scratch files) of writers that were killed; never those of a live process."""
    return clean_stale_temps(name_dir, _STAGING) + clean_stale_temps(name_dir)


def embed_metadata(model_path: Path, extra: dict[str, Any]) -> str:
    """Add ``extra`` to the ONNX metadata_props and to the ``.meta.json`` sidecar; returns the new sha256.

    The export wrote both; this re-embeds through onnx (weights in external data stay where they are) and updates
    the sidecar's ``onnx_sha256`` and ``size_bytes`` so they describe the file that ships.
    """
    import onnx

    from onnxship.onnxfile import file_sha256, set_metadata

    model = onnx.load(str(model_path), load_external_data=False)
    set_metadata(model, extra)
    atomic_write(model_path, lambda tmp: onnx.save_model(model, tmp))
    sha = file_sha256(model_path)
    meta_path = model_path.with_name(model_path.name + ".meta.json")
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    data = model_path.with_name(model_path.name + ".data")
    meta.update(extra)
    meta["onnx_sha256"] = sha
    meta["size_bytes"] = model_path.stat().st_size + (data.stat().st_size if data.is_file() else 0)
    atomic_write_json(meta_path, meta)
    return sha


class ReleaseWriter:
    """Build one release of ``name`` under ``releases``; ``commit()`` makes it visible, anything else discards it.

    Example:
        >>> with ReleaseWriter("releases", "deeplog") as w:  # doctest: +SKIP
        ...     onnxship.export(model, inputs=[...], out=w.path, name="deeplog")
        ...     release = w.commit(model_file="deeplog.onnx", passed=True)
    """

    def __init__(
        self,
        releases: str | Path,
        name: str,
        *,
        when: datetime | None = None,
        sha: str | None = None,
        project: str | Path | None = None,
    ) -> None:
        self.name = check_name(name)  # `..`, `.`, `a/b` would write outside releases/<name>/
        self.name_dir = Path(releases) / name
        self.when = when or utc_now()
        self.sha = sha or git_sha(project)
        self.version = version_tag(name, self.when, self.sha)
        self.final = self.name_dir / self.version
        self.committed: Release | None = None
        self.moved_latest = False
        # Folders this writer creates are removed again when it commits nothing: a failed ship leaves no trace.
        self._created = [p for p in (self.name_dir, *self.name_dir.parents) if not p.exists()]
        try:
            self.name_dir.mkdir(parents=True, exist_ok=True)
            self.cleaned = _clean_stale(self.name_dir)
            self.path = Path(tempfile.mkdtemp(prefix=f"{_STAGING}{owner_tag()}-", dir=self.name_dir))
        except OSError as exc:
            raise PackagingError(
                f"cannot write releases to {str(self.name_dir)!r}: {exc.strerror or type(exc).__name__}",
                hint="pick a writable folder (--releases or paths.releases in onnxship.yaml)",
            ) from None
        os.chmod(self.path, 0o755)
        if self.final.exists():
            self.discard()
            raise PackagingError(
                f"release {self.version} already exists and releases are immutable",
                hint="ship again in a second, or commit your changes (the version holds the git sha)",
            )

    def __enter__(self) -> ReleaseWriter:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self.committed is None:
            self.discard()
        if isinstance(exc, OSError) and is_disk_full(exc):  # any write of the bundle: one clear error
            raise PackagingError(
                f"cannot write release {self.version} to {str(self.name_dir)!r}: no space left "
                "on device (nothing was released)",
                hint="free space there or pass --releases on a bigger disk, then ship again",
            ) from None

    def discard(self) -> None:
        """Remove the staging folder (nothing else was touched) and the folders this writer created, if empty."""
        force_rmtree(self.path)
        if self.committed is None:
            for folder in self._created:  # deepest first; rmdir refuses a folder another writer is using
                try:
                    folder.rmdir()
                except OSError:
                    break

    def write_bytes(self, rel: str, data: bytes) -> Path:
        dest = self._dest(rel)
        dest.write_bytes(data)
        return dest

    def write_json(self, rel: str, obj: Any) -> Path:
        return self.write_bytes(rel, (json.dumps(obj, indent=2, default=str) + "\n").encode("utf-8"))

    def copy_file(self, rel: str, src: str | Path) -> Path:
        dest = self._dest(rel)
        shutil.copyfile(src, dest)
        return dest

    def _dest(self, rel: str) -> Path:
        dest = (self.path / rel).resolve()
        if self.path.resolve() not in dest.parents:
            raise PackagingError(f"bundle path {rel!r} leaves the bundle folder")
        dest.parent.mkdir(parents=True, exist_ok=True)
        return dest

    def commit(
        self,
        *,
        model_file: str,
        passed: bool,
        update_latest: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> Release:
        """Write release.json, make the files read-only, rename into place, then move ``latest``."""
        if not (self.path / model_file).is_file():
            raise PackagingError(
                f"the bundle has no {model_file}", hint="export into ReleaseWriter.path first"
            )
        from onnxship.onnxfile import file_sha256

        files = {}
        size = 0
        for p in sorted(self.path.rglob("*")):
            if p.is_file() and p.name != MANIFEST:
                rel = p.relative_to(self.path).as_posix()
                files[rel] = file_sha256(p)
                size += p.stat().st_size
        manifest = {
            "schema": RELEASE_SCHEMA,
            "name": self.name,
            "version": self.version,
            "created_at_utc": self.when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "git_sha": self.sha,
            "onnxship_version": __version__,
            "model_file": model_file,
            "passed": bool(passed),
            "size_bytes": size,
            **(extra or {}),
            "files": files,
        }
        (self.path / MANIFEST).write_text(
            json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8"
        )
        for p in self.path.rglob("*"):
            os.chmod(p, 0o555 if p.is_dir() else 0o444)
        if self.final.exists():
            raise PackagingError(
                f"release {self.version} appeared while writing; releases are immutable", hint="ship again"
            )
        try:
            os.rename(self.path, self.final)
        except OSError as exc:
            raise PackagingError(
                f"cannot move the bundle into place at {self.final}: {exc.strerror}"
            ) from None
        os.chmod(
            self.final,
            stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH,
        )
        self.path = self.final
        self.moved_latest = self._move_latest() if update_latest else False
        self.committed = read_release(self.final)
        return self.committed

    def _move_latest(self) -> bool:
        """Point latest here unless a newer release already holds it (two ships running at once)."""
        try:
            import fcntl
        except ImportError:  # no flock (Windows): last writer wins
            fcntl = None  # type: ignore[assignment]
        with open(self.name_dir / ".latest.lock", "a") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            current = current_latest(self.name_dir)
            theirs, mine = tag_parts(current or ""), tag_parts(self.version)
            if (
                current
                and theirs
                and mine
                and theirs["ts"] > mine["ts"]
                and (self.name_dir / current).is_dir()
            ):
                return False
            set_latest(self.name_dir, self.version)
            return True

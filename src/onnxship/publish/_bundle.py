"""What publish reads from a release bundle (the bundle itself is opened and checked by onnxship.package)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxship._errors import PackagingError

__all__ = ["BundleView", "open_bundle"]


@dataclass
class BundleView:
    """The files and facts of one release that publish logs."""

    path: Path  # the bundle folder
    name: str
    version: str  # version tag (the folder name)
    model_path: Path  # <name>.onnx
    meta: dict[str, Any]  # <name>.onnx.meta.json
    golden_path: Path | None
    report: dict[str, Any] | None  # report.json, when the bundle has one
    passed: bool | None  # the release's recorded gate verdict (None: unknown)
    only: list[Path] | None = None  # the files to log (relative to path); None: every file of the folder

    def files(self) -> list[Path]:
        """Every regular file of the bundle (relative paths, sorted; symlinks and hidden files left out)."""
        if self.only is not None:
            return list(self.only)
        out = []
        for p in sorted(self.path.rglob("*")):
            rel = p.relative_to(self.path)
            if p.is_file() and not p.is_symlink() and not any(part.startswith(".") for part in rel.parts):
                out.append(rel)
        return out


def _read_report(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PackagingError(
            f"{str(path)!r} is not readable JSON ({type(exc).__name__})",
            hint="the bundle is damaged: ship a new release",
        ) from None
    return data if isinstance(data, dict) else None


def open_bundle(path: str | Path) -> BundleView:
    """Open ``releases/<name>/<version>``, ``releases/<name>/latest`` or ``releases/<name>``, checking every sha256.

    Raises:
        PackagingError: not a release, a missing file or a file changed after the release was written.
    """
    from onnxship.package._release import read_release

    rel = read_release(path, check=True)
    report = _read_report(rel.path / "report.json")
    passed: bool | None = rel.manifest.get("passed") if isinstance(rel.manifest.get("passed"), bool) else None
    return BundleView(
        path=rel.path,
        name=rel.name,
        version=rel.version,
        model_path=rel.model_path,
        meta=rel.meta,
        golden_path=rel.golden_path,
        report=report,
        passed=passed,
    )

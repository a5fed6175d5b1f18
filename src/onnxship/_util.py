"""Small shared helpers: git sha, UTC time, atomic file writes, usable cores."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import types
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "git_sha",
    "usable_cores",
    "public_mode",
    "utc_now",
    "verb_module",
]


class _VerbModule(types.ModuleType):
    """A stage package that can be called like its verb.

    ``onnxship.export`` is both the package ``onnxship/export/`` and the verb ``export()``: once any submodule of the
    package is imported, Python binds the package object to ``onnxship.export``, hiding the function. Making the
    package callable keeps ``onnxship.export(...)`` working either way.
    """

    __verb__: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, self.__verb__)(*args, **kwargs)


def verb_module(module_name: str, verb: str) -> None:
    """Make the package ``module_name`` callable as its function ``verb`` (see _VerbModule)."""
    module = sys.modules[module_name]
    module.__class__ = _VerbModule
    module.__verb__ = verb  # type: ignore[attr-defined]


def public_mode(path: str | Path, mode: int = 0o644) -> None:
    """Give a temp file (mkstemp makes 0600) the permissions a normal file would get under the umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def git_sha(cwd: str | Path | None = None, length: int = 7) -> str:
    """Short sha of HEAD of the git project at ``cwd`` (the user's project), or "nogit"."""
    if shutil.which("git") is None:
        return "nogit"
    try:
        out = subprocess.run(
            ["git", "rev-parse", f"--short={length}", "HEAD"],
            cwd=cwd or os.getcwd(),
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "nogit"
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else "nogit"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def atomic_write(path: str | Path, write: Callable[[str], Any], *, suffix: str = ".tmp") -> Path:
    """Write ``path`` through ``write(temp_path)`` on a temp file in the same folder and a rename.

    Readers never see half a file, and a failed or killed write leaves the previous file as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        public_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically (see atomic_write)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def usable_cores(cgroup_cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """The CPUs this process may run on, capped by a cgroup v2 CPU quota (a container limited to 2 CPUs on a 64-core
    node gets 2, not 64)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = Path(cgroup_cpu_max).read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            cores = min(cores, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota here
    return max(1, cores)

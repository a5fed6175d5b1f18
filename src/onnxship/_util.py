"""Small shared helpers: git sha, UTC time, safe names, work folders, usable cores and the one atomic file writer.

Every file onnxship writes goes through :func:`atomic_write` (a temp file beside the target, then a rename), and
every scratch folder through :func:`work_dir` (under the output folder, named ``.onnxship-tmp-<owner>-...``). The
owner is the writing process (pid and start time): a later run removes what a killed run left, never what a live
one is still using.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import types
from collections.abc import Callable
from contextvars import ContextVar
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "TEMP_PREFIX",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "check_name",
    "clean_stale_temps",
    "force_rmtree",
    "git_sha",
    "owner_tag",
    "public_mode",
    "scratch_dir",
    "usable_cores",
    "utc_now",
    "verb_module",
    "work_dir",
]

TEMP_PREFIX = ".onnxship-tmp-"
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
NAME_MAX = 100  # a release folder adds ~25 characters; file systems stop at 255


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


def check_name(name: object, what: str = "model name") -> str:
    """A name that becomes a file or folder name must be one safe path component.

    Letters, digits, ``-``, ``_`` and ``.`` (not first), at most 100 characters: no ``..``, ``.``, ``/``, hidden
    names, spaces or control characters. Raises UsageError (CLI exit 2) naming ``what`` (the flag or key).
    """
    from onnxship._errors import UsageError

    text = name if isinstance(name, str) else None
    if text is None or not _NAME.fullmatch(text) or len(text) > NAME_MAX:
        shown = repr(name) if not isinstance(name, str) else repr(name[:60] + ("…" if len(name) > 60 else ""))
        why = "is too long" if text is not None and _NAME.fullmatch(text) else "is not a safe file name"
        raise UsageError(
            f"{what} {shown} {why}: it becomes a folder/file name",
            hint=f"use letters, digits, '-', '_' and '.' (not first), at most {NAME_MAX} characters, "
            "e.g. 'mnist-classifier'",
        )
    return text


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask() sets it, racing threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def public_mode(path: str | Path, mode: int = 0o666) -> None:
    """Give a file the permissions a plain ``open(path, "w")`` would: ``mode`` minus the umask (0644 under 022)."""
    os.chmod(path, mode & ~_umask())


def _start_time(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, from /proc), "0" where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def _host() -> str:
    import hashlib
    import socket

    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def owner_tag() -> str:
    """``<pid>-s<start time>-h<host>`` of this process: names its temp entries so that a later run can tell it is
    gone (``.staging-<pid>-*`` globs keep matching). Entries of another host (a shared or network folder, another
    container) are judged by age only: their pids mean nothing here."""
    pid = os.getpid()
    return f"{pid}-s{_start_time(pid)}-h{_host()}"


OTHER_HOST_STALE_S = 24 * 3600  # another machine's scratch entry is removed only when untouched this long


def _owner_alive(rest: str, mtime: float | None = None) -> bool:
    """Whether the process that made a temp entry (named ``<pid>-s<start>-h<host>-...``, ``<pid>-s<start>-...``
    or ``<pid>-...``) may still be using it."""
    import time

    parts = rest.split("-")
    pid_text = parts[0]
    start = parts[1][1:] if len(parts) > 2 and parts[1][:1] == "s" and parts[1][1:].isdigit() else ""
    host = parts[2][1:] if start and len(parts) > 3 and parts[2][:1] == "h" else ""
    if not pid_text.isdigit():
        return True  # not ours to judge
    if host and host != _host():
        return mtime is None or time.time() - mtime < OTHER_HOST_STALE_S
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    if start and start != "0":
        now = _start_time(pid)
        return now == "0" or now == start  # the pid was reused by another process: the owner is gone
    return True


def clean_stale_temps(folder: str | Path, prefix: str = TEMP_PREFIX) -> list[str]:
    """Remove ``<prefix><owner>-*`` files and folders in ``folder`` whose owning process is gone.

    Runs at the start of every write into ``folder``, so a killed run's leftovers go at the next run. Best effort:
    what cannot be removed stays.
    """
    removed: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        try:
            mtime = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if _owner_alive(entry.name[len(prefix) :], mtime):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                force_rmtree(Path(entry.path))
            else:
                os.unlink(entry.path)
            removed.append(entry.name)
        except OSError:
            pass
    return removed


def force_rmtree(path: Path) -> None:
    """Remove a tree even where a killed run left read-only folders in it."""

    def onerror(func: Any, p: str, _exc: Any) -> None:
        os.chmod(os.path.dirname(p), 0o755)
        if os.path.isdir(p) and not os.path.islink(p):
            os.chmod(p, 0o755)
        func(p)

    if path.is_dir() and not path.is_symlink():
        os.chmod(path, 0o755)
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=onerror)
        else:
            shutil.rmtree(path, onerror=onerror)


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:40]


def _write_error(exc: OSError, target: Path, what: str) -> Exception:
    """An OSError while creating ``target`` as one clear error (a file in the way, no permission, no space)."""
    from onnxship._errors import ConfigError, DiskFullError, is_disk_full

    if is_disk_full(exc):
        return DiskFullError(
            f"cannot write {what} {str(target)!r}: no space left on device (nothing was written)",
            hint="free space there or write to a bigger disk, then run again",
            errno_=exc.errno,
        )
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        why = "a file is in the way (it must be a folder)"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "no permission to write there" if exc.errno != errno.EROFS else "the file system is read-only"
    else:
        why = exc.strerror or type(exc).__name__
    return ConfigError(f"cannot write {what} {str(target)!r}: {why}", hint="pick a writable folder")


# The current run's scratch folder (set by optimize while it runs), for helpers deep inside that need a temp
# folder (the quantizer's file round trip): under the output folder, so a kill leaves nothing elsewhere.
scratch_dir: ContextVar[Path | None] = ContextVar("onnxship_scratch_dir", default=None)


def work_dir(parent: str | Path, label: str, *, what: str = "to the output folder") -> Path:
    """A fresh scratch folder ``<parent>/.onnxship-tmp-<owner>-<label>-XXXX`` (parent created if needed).

    Stale scratch entries of killed runs in ``parent`` are removed first. The caller removes the folder when done
    (``shutil.rmtree``); if the process is killed, the next run in ``parent`` does.

    Raises:
        ConfigError: ``parent`` cannot be created or written (a file in the way, read-only, no permission).
        DiskFullError: no space left.
    """
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(parent)
        return Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{owner_tag()}-{_label(label)}-", dir=parent))
    except OSError as exc:
        raise _write_error(exc, parent, what) from None


def replace_dir(staged: Path, final: Path) -> None:
    """Put the finished folder ``staged`` at ``final`` (same filesystem): an existing ``final`` is moved aside to a
    hidden name first and removed only after the rename, so ``final`` is never half-written."""
    old = final.parent / f".{final.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
    if final.exists():
        os.rename(final, old)
    os.rename(staged, final)
    shutil.rmtree(old, ignore_errors=True)


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

    The one writer for files onnxship writes: readers never see half a file, and a failed or killed write leaves
    the previous file as it was (a killed run's temp file is removed by the next write into that folder). The file
    gets the permissions a plain ``open(path, "w")`` would (0644 under a 022 umask); a file it replaces keeps its
    mode. A full disk raises DiskFullError (an OSError) naming the file.
    """
    path = Path(path)
    folder = path.parent
    clean_stale_temps(folder)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode) if path.is_file() else None
    except OSError:
        mode = None
    tmp = str(folder / f"{TEMP_PREFIX}{owner_tag()}-{_label(path.name)}-{secrets.token_hex(4)}{suffix}")
    try:
        os.close(
            os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        )  # the umask applies, as for open()
        write(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        else:
            public_mode(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        from onnxship._errors import DiskFullError, is_disk_full

        if is_disk_full(exc) and not isinstance(exc, DiskFullError):  # also writers that report it as text
            raise _write_error(OSError(errno.ENOSPC, "No space left on device"), path, "file") from exc
        raise  # other OSErrors stay OSErrors: callers (the best-effort cache) catch them
    finally:
        if os.path.lexists(tmp):
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

"""The one gate for every file the server opens: resolved once, confined to the model root, opened by descriptor.

:class:`ModelRoot` is used for start-up (``MODEL_PATH``, ``--releases``, ``latest``, ``LATEST``), ``/reload`` and
every file a model is built from (``release.json``, the ``.meta.json`` sidecar, the ``.onnx`` file, ``golden.npz``,
external data, assets). A path is resolved through every symlink and refused when it leaves the root; the resolved
path is then opened one component at a time from a descriptor of the root with ``O_NOFOLLOW``, so a folder swapped
for a symlink between the check and the open makes the open fail instead of reading outside the root. The bytes are
read from that descriptor: what is checked (sha256, golden outputs) is what is loaded.

Responses never show absolute paths: :meth:`ModelRoot.show` renders a path relative to the root, and
:func:`redact_paths` replaces whatever absolute filesystem path an error message still carries.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import stat
from pathlib import Path

from onnxship._errors import ServeError

__all__ = ["ModelRoot", "redact_paths", "serve_error"]

_HINT_OUTSIDE = "load only models below the model root (--releases or --model-root)"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO planted in a release must not block the open
_BY_FD = os.open in os.supports_dir_fd and bool(_NOFOLLOW and _DIRECTORY)


def serve_error(message: str, status: int, hint: str | None = None) -> ServeError:
    """A ServeError carrying the HTTP status /reload answers with."""
    exc = ServeError(message, hint=hint)
    exc.status = status  # type: ignore[attr-defined]
    return exc


@functools.lru_cache(maxsize=256)
def _is_top_folder(name: str) -> bool:
    return os.path.isdir(os.path.join(os.sep, name))


_ABS = re.compile(r"(?<![\w.:/~-])/([\w.@+-]+)(?:/[^\s'\"`,;)\]}]*)?")


def redact_paths(text: str) -> str:
    """``text`` with absolute filesystem paths replaced by ``<path>`` (URL paths such as ``/v2/...`` are kept:
    only paths whose first component is a folder at the filesystem root are treated as filesystem paths)."""
    if "/" not in text:
        return text
    return _ABS.sub(lambda m: "<path>" if _is_top_folder(m.group(1)) else m.group(0), text)


class ModelRoot:
    """The folder the server may read from (``None``: no root; only the PyTorch fallback serves without one)."""

    def __init__(self, root: str | Path | None, label: str = "the model root") -> None:
        self.path = Path(os.path.realpath(root)) if root is not None else None
        self.label = label  # how messages name the root

    def __repr__(self) -> str:
        return f"ModelRoot({str(self.path)!r})"

    # -- paths -----------------------------------------------------------------------------------------------
    def contains(self, real: Path) -> bool:
        return self.path is None or real == self.path or self.path in real.parents

    def resolve(self, path: str | Path, what: str = "model path", base: Path | None = None) -> Path:
        """``path`` (relative: to ``base``, else to the root) resolved through every symlink, inside the root.

        Raises:
            ServeError: 400 for a NUL byte, 403 when the resolved path leaves the root.
        """
        text = os.fspath(path)
        if "\x00" in text:  # os.path.realpath would raise ValueError: embedded null byte
            raise serve_error(f"{what} {self.show(text.replace(chr(0), '?'))!r} contains a NUL byte", 400)
        if len(text) > 4096 or any(len(part) > 255 for part in text.split("/")):
            raise serve_error(
                f"{what} {self.show(text)!r} is too long (more than 4096 characters, or a name over 255)", 400
            )
        raw = Path(text)
        if not raw.is_absolute():
            anchor = base if base is not None else self.path
            raw = anchor / raw if anchor is not None else raw
        real = Path(os.path.realpath(raw))
        if not self.contains(real):
            raise serve_error(f"{what} {self.show(text)!r} is outside {self.label}", 403, hint=_HINT_OUTSIDE)
        return real

    def show(self, path: str | Path) -> str:
        """How a path appears in responses: relative to the root, never absolute, at most ~200 characters."""
        text = os.fspath(path)
        if len(text) > 200:
            return text[:120].lstrip("/") + "…" + text[-60:]
        if self.path is not None and os.path.isabs(text):
            for candidate in (Path(text), Path(os.path.realpath(text)) if "\x00" not in text else None):
                if candidate is not None and self.contains(candidate):
                    rel = candidate.relative_to(self.path).as_posix()
                    return rel or "."
        if os.path.isabs(text):
            return "…/" + Path(text).name if Path(text).name else "/"
        return text

    # -- reading ---------------------------------------------------------------------------------------------
    def read(
        self, path: str | Path, what: str, *, base: Path | None = None, max_bytes: int | None = None
    ) -> bytes:
        """The bytes of a regular file below the root, read through a descriptor opened without following links.

        Raises:
            ServeError: 403 outside the root / not readable / swapped while opening, 404 missing, 422 not a regular
                file or larger than ``max_bytes``.
        """
        real = self.resolve(path, what, base)
        fd = self.open_resolved(real, what)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise serve_error(f"{what} {self.show(real)!r} is not a regular file", 422)
            if max_bytes is not None and info.st_size > max_bytes:
                raise serve_error(
                    f"{what} {self.show(real)!r} is {info.st_size} bytes, more than the {max_bytes} allowed",
                    422,
                )
            chunks = []
            while True:
                chunk = os.read(fd, 1 << 24)
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def sha256(self, path: str | Path, what: str, *, base: Path | None = None) -> str:
        """The sha256 of a regular file below the root, streamed from a descriptor opened like :meth:`read`."""
        import hashlib

        real = self.resolve(path, what, base)
        fd = self.open_resolved(real, what)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise serve_error(f"{what} {self.show(real)!r} is not a regular file", 422)
            digest = hashlib.sha256()
            while True:
                chunk = os.read(fd, 1 << 22)
                if not chunk:
                    return digest.hexdigest()
                digest.update(chunk)
        finally:
            os.close(fd)

    def read_text(self, path: str | Path, what: str, *, base: Path | None = None) -> str:
        data = self.read(path, what, base=base, max_bytes=16 * 1024 * 1024)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise serve_error(f"{what} {self.show(path)!r} is not UTF-8 text", 422) from None

    def open_resolved(self, real: Path, what: str) -> int:
        """A read-only descriptor of the already resolved ``real``: each component below the root is opened relative
        to its parent's descriptor with ``O_NOFOLLOW``, so nothing swapped in since :meth:`resolve` is followed."""
        try:
            if self.path is None or not _BY_FD:
                fd = os.open(real, os.O_RDONLY | _CLOEXEC | _NONBLOCK | _NOFOLLOW)
                if self.path is not None and not self.contains(Path(os.path.realpath(real))):
                    os.close(fd)
                    raise serve_error(f"{what} {self.show(real)!r} left {self.label} while opening", 403)
                return fd
            parts = real.relative_to(self.path).parts
            fd = os.open(self.path, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
            try:
                for part in parts[:-1]:
                    nxt = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=fd)
                    os.close(fd)
                    fd = nxt
                if not parts:
                    return os.dup(fd)
                return os.open(parts[-1], os.O_RDONLY | _NOFOLLOW | _CLOEXEC | _NONBLOCK, dir_fd=fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise self._open_error(exc, real, what) from None

    def _open_error(self, exc: OSError, real: Path, what: str) -> ServeError:
        shown = self.show(real)
        if exc.errno == errno.ENOENT:
            return serve_error(f"{what} {shown!r} does not exist", 404)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, getattr(errno, "EMLINK", -1)):
            return serve_error(
                f"{what} {shown!r} changed while it was opened (a folder or file was replaced by a symlink); "
                f"refusing it",
                403,
                hint="releases are immutable: ship a new release instead of moving folders under a running server",
            )
        if exc.errno in (errno.EACCES, errno.EPERM):
            return serve_error(
                f"{what} {shown!r} is not readable by this process",
                403,
                hint="fix its permissions (chmod a+r) or run the server as its owner",
            )
        return serve_error(f"{what} {shown!r} cannot be opened ({exc.strerror or type(exc).__name__})", 422)

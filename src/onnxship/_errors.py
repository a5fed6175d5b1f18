"""One exception tree for everything onnxship raises on purpose.

::

    OnnxshipError
     ├── ConfigError (ValueError)         bad flags, specs, config files
     │    ├── InputSpecError               an --input spec that does not parse (CLI: usage error, exit 2)
     │    └── UsageError                   any other value the CLI refuses as a usage error (exit 2): unsafe names
     ├── DiskFullError (OSError)           a write ran out of space (ENOSPC/EDQUOT); nothing half-written is left
     ├── ModelLoadError                    factory/checkpoint problems
     │    └── UserCodeError                the model module or factory exited (sys.exit), was interrupted
     ├── ExportError                       no candidate could be exported and verified
     ├── CheckError                        the ONNX file is malformed or unsafe
     ├── VerificationError                 the parity gate failed (carries the report)
     ├── OptimizeError
     ├── PackagingError
     ├── PublishError
     ├── ServeError
     ├── DoctorError                       a training or export log could not be read
     └── MissingDependencyError (ImportError)   an optional extra is not installed

Internal bugs stay outside the tree; the CLI's boundary (cli/_common.handle_errors) still shows them as one line
with a hint, and their traceback with ``onnxship --debug`` or ``ONNXSHIP_DEBUG=1``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CheckError",
    "ConfigError",
    "DiskFullError",
    "DoctorError",
    "ExportError",
    "InputSpecError",
    "MissingDependencyError",
    "ModelLoadError",
    "OnnxshipError",
    "OnnxshipWarning",
    "OptimizeError",
    "PackagingError",
    "PublishError",
    "ServeError",
    "UsageError",
    "UserCodeError",
    "VerificationError",
    "is_disk_full",
    "require",
]


class OnnxshipError(Exception):
    """Base class for errors a user can act on: a message plus an optional hint.

    ``exit_code`` is what the CLI exits with (1; 2 for usage errors).
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class ConfigError(OnnxshipError, ValueError):
    """A flag, spec or config value is wrong."""


class InputSpecError(ConfigError):
    """An input spec string does not follow the grammar."""

    exit_code = 2


class UsageError(ConfigError):
    """A flag or config value the CLI refuses as a usage error (exit 2), e.g. a model name that is not a safe
    single path component."""

    exit_code = 2


class ModelLoadError(OnnxshipError):
    """The model factory or checkpoint could not produce an nn.Module."""


class UserCodeError(ModelLoadError):
    """The user's model module or factory called sys.exit(), was interrupted, or raised."""


class ExportError(OnnxshipError):
    """No export candidate produced a verified ONNX model."""

    def __init__(self, message: str, *, hint: str | None = None, candidates: list[Any] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.candidates = candidates or []


class CheckError(OnnxshipError):
    """An ONNX file is malformed, truncated or unsafe to open."""


class VerificationError(OnnxshipError):
    """The Torch/ONNX parity gate failed."""

    def __init__(self, message: str, *, hint: str | None = None, report: Any = None) -> None:
        super().__init__(message, hint=hint)
        self.report = report


class OptimizeError(OnnxshipError):
    """An optimization pass failed or its variant failed its gate."""


class PackagingError(OnnxshipError):
    """A release bundle or deployment repository could not be written or read."""


class PublishError(OnnxshipError):
    """Publishing to a tracking server, registry or notifier failed."""


class ServeError(OnnxshipError):
    """The model server could not load or serve a model."""


class DoctorError(OnnxshipError):
    """A training log or export log is missing, empty, truncated or in no known format."""


class DiskFullError(OnnxshipError, OSError):
    """A write ran out of space; it is still an OSError with errno ENOSPC, so callers that clean up on disk-full
    OSErrors keep working."""

    def __init__(self, message: str, *, hint: str | None = None, errno_: int | None = None) -> None:
        import errno

        super().__init__(message, hint=hint)
        self.errno = errno_ or errno.ENOSPC


class MissingDependencyError(OnnxshipError, ImportError):
    """An optional dependency is not installed."""


class OnnxshipWarning(UserWarning):
    """Warnings onnxship itself emits (turned into errors in the test suite)."""


def require(module: str, extra: str) -> Any:
    """Import an optional dependency or raise MissingDependencyError naming the extra to install.

    Example:
        >>> torch = require("torch", "torch")  # doctest: +SKIP
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is not installed (needed for this command)",
            hint=f"pip install 'onnxship[{extra}]'",
        ) from exc


def is_disk_full(exc: BaseException) -> bool:
    """Whether ENOSPC/EDQUOT is anywhere in the exception chain (exporters re-raise OSErrors, sometimes as text)."""
    import errno

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(seen) or "Disk quota exceeded" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False

"""Remembered dynamo failures, so ``auto`` does not pay for the same failing dynamo attempt twice.

The dynamo exporter costs seconds even for tiny models (benchmarks/results/export_time.json: 30-130x TorchScript),
and when it fails or is rejected for a model (a data-dependent branch, a dim it silently specialises) it fails the
same way for the same code, whatever the weights. ``auto`` records such outcomes under a fingerprint of the model's
code and structure, the input specs, the opsets and the torch version, and on the next export of that model skips
straight to TorchScript, saying so in the candidate table (``fastest`` uses it too). Retrained weights keep the
fingerprint; edited code or specs change it. ``--no-cache`` (``ExportConfig.use_cache=False``) always tries dynamo.

The cache lives in ``$ONNXSHIP_CACHE_DIR`` (default ``$XDG_CACHE_HOME/onnxship`` or ``~/.cache/onnxship``). It is
best effort: an unreadable or unwritable cache never fails an export.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxship._util import atomic_write_json, utc_now
from onnxship._version import __version__
from onnxship.spec._inputs import TensorSpec

if TYPE_CHECKING:
    import torch

__all__ = ["cache_dir", "fingerprint", "recall", "remember"]


def cache_dir() -> Path:
    """Where onnxship keeps its caches (ONNXSHIP_CACHE_DIR, else the XDG cache folder)."""
    explicit = os.environ.get("ONNXSHIP_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "onnxship"


def _class_source(cls: type) -> str:
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):
        return f"{cls.__module__}.{cls.__qualname__}"


def fingerprint(
    module: torch.nn.Module,
    specs: list[TensorSpec],
    opsets: tuple[int, ...],
    dynamic: bool,
    torch_version: str,
) -> str:
    """A key for "this model code, exported with these specs": user classes' source, structure, specs, versions."""
    h = hashlib.sha256()
    user_classes = sorted(
        {type(m) for m in module.modules() if not type(m).__module__.startswith("torch.")},
        key=lambda c: f"{c.__module__}.{c.__qualname__}",
    )
    for cls in user_classes:
        h.update(_class_source(cls).encode())
    h.update(repr(module).encode())
    h.update(json.dumps([str(s) for s in specs]).encode())
    h.update(json.dumps([list(opsets), dynamic, torch_version, __version__]).encode())
    return h.hexdigest()[:32]


def _path(key: str) -> Path:
    return cache_dir() / "export" / f"dynamo-{key}.json"


def recall(key: str) -> dict[str, Any] | None:
    """The remembered dynamo outcome for this fingerprint, if any."""
    try:
        data = json.loads(_path(key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("outcome") in ("failed", "rejected") else None


def remember(key: str, outcome: str, reason: str | None, seconds: float) -> None:
    """Record a dynamo failure/rejection; errors are ignored (the cache is an optimisation)."""
    try:
        path = _path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            path,
            {
                "outcome": outcome,
                "reason": reason,
                "seconds": round(seconds, 3),
                "when": utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        )
    except OSError:
        pass

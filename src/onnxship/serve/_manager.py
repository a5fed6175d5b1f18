"""ModelManager: which model serves, and golden-checked atomic reloads.

Selection order: ``MODEL_PATH`` (must exist and be readable) -> ``latest`` under ``--releases`` -> the PyTorch
checkpoint fallback. A reload loads and checks the new model on a worker thread while the old one keeps serving, then
swaps one attribute (model + its batcher) on the event loop and bumps the version; requests already queued finish on
the old model's batcher. A reload that fails changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from onnxship._errors import MissingDependencyError, OnnxshipError, ServeError
from onnxship.serve._batcher import Batcher
from onnxship.serve._config import ServeConfig
from onnxship.serve._files import ModelRoot, redact_paths
from onnxship.serve._locate import _error, latest_release, locate
from onnxship.serve._metrics import Metrics
from onnxship.serve._model import ServedModel, load_model, load_torch_model

DEFAULT_MERGE_ROWS = 32  # merged batch when neither the release nor --max-batch bounds the batch dim

__all__ = ["ModelManager", "find_latest"]

log = logging.getLogger("onnxship.serve")


def find_latest(releases: str | Path, root: str | Path | ModelRoot | None = None) -> Path:
    """The release ``latest`` points to: ``releases`` may be a release, ``releases/<name>`` or a root holding one
    model's folder. Every step (``latest`` link, ``LATEST`` file, the release folder) stays inside ``root``
    (default: ``releases`` itself).

    Raises:
        ServeError: nothing to serve there, several models (the error names them), or 403 when a pointer leaves
            the root.
    """
    from onnxship.package._release import MANIFEST

    files = root if isinstance(root, ModelRoot) else ModelRoot(root if root is not None else releases)
    given = Path(releases)
    if not given.is_dir():
        raise _error(
            f"releases folder {files.show(given)!r} does not exist",
            404,
            hint="pass --releases DIR holding <name>/latest (written by `onnxship ship`)",
        )
    base = files.resolve(given.absolute(), "releases folder")  # relative to the working folder, like the flag
    if (base / MANIFEST).is_file():
        return base
    latest = latest_release(base, files)
    if latest is not None:
        return latest
    named = []
    for p in sorted(base.iterdir()):
        if p.name.startswith(".") or not p.is_dir() or not files.contains(Path(os.path.realpath(p))):
            continue  # a symlink out of the root is not a model folder of this root
        if (p / "latest").is_symlink() or (p / "LATEST").exists():
            named.append(p)
    if not named:
        raise _error(
            f"no <name>/latest under {files.show(base)!r}",
            404,
            hint="ship a release first (onnxship ship) or point MODEL_PATH at a release folder",
        )
    if len(named) > 1:
        raise _error(
            f"{files.show(base)!r} holds several models ({', '.join(p.name for p in named)}); which one to serve "
            f"is ambiguous",
            422,
            hint=f"pass --releases {Path(releases) / named[0].name} (one model per server)",
        )
    found = latest_release(named[0], files)
    if found is None:
        raise _error(
            f"{files.show(named[0])}/latest does not name a complete release",
            404,
            hint="ship a release first (onnxship ship) or point MODEL_PATH at a release folder",
        )
    return found


class ModelManager:
    """Holds the serving model and its batcher; ``current`` is one tuple swapped atomically by reloads."""

    def __init__(self, config: ServeConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        root = config.root()
        self.root = root  # the resolved model root (None: no root, only the PyTorch fallback serves then)
        self.files = ModelRoot(root)  # every path the server opens goes through it
        self.metrics = metrics or Metrics()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxship-infer")
        self.loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxship-load")
        self.parsing = 0  # infer requests being read/validated (the batcher waits for them)
        self.version = 0
        self.selection: list[dict[str, Any]] = []  # how the first model was chosen
        self.last_reload: dict[str, Any] | None = None
        self.current: tuple[ServedModel, Batcher] | None = None
        self._lock: asyncio.Lock | None = None
        # several worker processes: called with a reload's checked model before it is installed; loads it in every
        # other worker and returns the version all of them swap to (raises ServeError to refuse the reload)
        self.agree: Callable[[ServedModel], Awaitable[int]] | None = None

    # -- selection -------------------------------------------------------------------------------------------
    def start(self) -> ServedModel:
        """Select and load the first model (MODEL_PATH -> latest -> PyTorch checkpoint).

        Raises:
            ServeError: no source produced a checked model; the message lists each source and why.
        """
        cfg = self.config
        attempts: list[tuple[str, Any]] = []
        if cfg.model_path:
            attempts.append(("MODEL_PATH", cfg.model_path))
        if cfg.releases:
            attempts.append(("latest", cfg.releases))
        if cfg.model_spec and cfg.checkpoint:
            attempts.append(("checkpoint", None))
        if not attempts:
            raise ServeError(
                "no model to serve: MODEL_PATH is unset and neither --releases nor --checkpoint is given",
                hint="onnxship serve --releases releases/  (or MODEL_PATH=releases/<name>/<version>, "
                "or --model file.py:factory --checkpoint best.pt)",
            )
        failures: list[str] = []  # for the operator (start-up error): paths as given
        for source, value in attempts:
            try:
                if source == "checkpoint":
                    model = load_torch_model(cfg)
                else:
                    # MODEL_PATH and --releases are relative to the working folder (/reload paths: to the root)
                    path = (
                        os.path.abspath(value) if source == "MODEL_PATH" else find_latest(value, self.files)
                    )
                    if source == "MODEL_PATH" and not os.access(path, os.R_OK):
                        why = "does not exist" if not os.path.exists(path) else "is not readable"
                        raise ServeError(f"MODEL_PATH {self.files.show(path)!r} {why}")
                    model = load_model(locate(path, self.files), cfg)
            except MissingDependencyError as exc:
                self.selection.append({"source": source, "ok": False, "reason": redact_paths(str(exc))})
                failures.append(f"{source}: {exc}")
                log.warning("model source %s skipped: %s", source, exc)
                continue
            except OnnxshipError as exc:
                self.selection.append({"source": source, "ok": False, "reason": redact_paths(exc.message)})
                failures.append(f"{source}: {exc.message}")
                log.warning("model source %s skipped: %s", source, exc.message)
                continue
            self.selection.append({"source": source, "ok": True, "path": model.source})
            self._install(model)
            return model
        tried = "; ".join(failures)
        raise ServeError(
            f"no model could be served ({tried})",
            hint="fix the first source listed, or point MODEL_PATH at a release folder",
        )

    # -- serving ---------------------------------------------------------------------------------------------
    def _install(self, model: ServedModel, version: int | None = None) -> None:
        cfg = self.config
        sig = model.signature
        max_rows = sig.batch_max or cfg.max_batch or DEFAULT_MERGE_ROWS  # sig carries the release's limit
        batcher = Batcher(
            model.run,
            mergeable=sig.batchable,
            max_rows=max_rows,
            timeout_s=cfg.batch_timeout_ms / 1000.0,
            executor=self.executor,
            preferred=cfg.preferred_batch,
            validate=sig.check_ids if sig.has_id_ranges else None,  # one id-range pass per merged batch
            on_batch=self.metrics.batch,
            inline_below_s=cfg.inline_below_ms / 1000.0,
        )
        self.version = (
            self.version + 1 if version is None else version
        )  # worker processes: the cluster's number
        model.version = self.version
        old = self.current
        self.current = (model, batcher)  # the swap: one assignment on the event loop thread
        if old is not None:
            old[1].close()  # finishes what is queued, on the old model
        log.info("serving %s version %d from %s", model.name, model.version, model.source)

    @property
    def public_root(self) -> str | None:
        """The model root as responses show it: its folder name, never the absolute path."""
        return self.root.name if self.root is not None else None

    @property
    def ready(self) -> bool:
        return self.current is not None

    async def reload(self, model_path: str | None) -> dict[str, Any]:
        """Load ``model_path`` (or ``latest`` under --releases when None), check it, swap, bump the version.

        Raises:
            ServeError: with ``status`` 403 (outside the model root), 404 (missing), 422 (fails to load or fails its
                golden check), 400 (nothing to reload from). The old model keeps serving.
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        shown = (
            self.files.show(model_path) if isinstance(model_path, str) and "\x00" not in model_path else None
        )
        async with self._lock:
            previous = self.current[0] if self.current else None
            try:
                model = await asyncio.get_running_loop().run_in_executor(self.loader, self._load, model_path)
                version = await self.agree(model) if self.agree is not None else None
            except OnnxshipError as exc:
                self.metrics.reloads["failed"] += 1
                exc.message = redact_paths(exc.message)  # answered to the client: no absolute paths
                exc.hint = redact_paths(exc.hint) if exc.hint else exc.hint
                self.last_reload = {"ok": False, "model_path": shown, "error": exc.message}
                log.warning("reload of %s refused: %s", model_path, exc.message)
                raise
            except (
                Exception
            ) as exc:  # an unexpected failure while loading must still leave the old model serving
                log.exception("reload of %s failed", model_path)
                self.metrics.reloads["failed"] += 1
                detail = redact_paths(
                    f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
                )
                self.last_reload = {"ok": False, "model_path": shown, "error": detail}
                raise _error(f"reload of {shown!r} failed: {detail}", 422) from exc
            self._install(model, version)
            self.metrics.reloads["ok"] += 1
            result = {
                "model_name": model.name,
                "model_version": str(model.version),
                "previous_version": str(previous.version) if previous else None,
                "previous_release": previous.release if previous else None,
                **{k: v for k, v in model.describe().items() if k not in ("model_name", "model_version")},
            }
            self.last_reload = {"ok": True, "model_path": shown, "model_version": str(model.version)}
            return result

    def _load(self, model_path: str | None) -> ServedModel:
        if model_path is None:
            if not self.config.releases:
                raise _error(
                    "reload without model_path needs --releases (it loads <name>/latest)",
                    400,
                    hint='POST /reload {"model_path": "<name>/<version>"}',
                )
            return load_model(locate(find_latest(self.config.releases, self.files), self.files), self.config)
        if not isinstance(model_path, str) or not model_path.strip():
            raise _error(f"model_path must be a non-empty string, got {model_path!r}", 400)
        if self.root is None:  # never load arbitrary paths: a reload needs a root to be confined to
            raise _error(
                f"cannot reload {self.files.show(model_path)!r}: this server has no model root",
                403,
                hint="start it with --releases DIR or --model-root DIR",
            )
        return load_model(locate(model_path, self.files), self.config)

    def close(self) -> None:
        if self.current is not None:
            self.current[1].close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.loader.shutdown(wait=False, cancel_futures=True)

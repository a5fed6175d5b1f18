"""Model specs: ``path/to/file.py:factory`` or ``package.module:factory``, plus an optional checkpoint.

DO NOT import torch at module level: parsing a spec must work without torch; only ``ModelSpec.load`` needs it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from onnxship._errors import ConfigError, ModelLoadError, UserCodeError, require

if TYPE_CHECKING:
    import torch

__all__ = ["LoadedModel", "ModelSpec", "parse_model_spec", "user_code"]

_SPEC_HINT = "use 'path/to/file.py:factory' or 'package.module:factory'"
# Keys under which training scripts commonly nest the weights inside a checkpoint dict.
_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


_MAIN_GUARD_HINT = 'guard the script part with `if __name__ == "__main__":` so that importing the module only defines the model'


def _exit_code(exc: SystemExit) -> str:
    code = exc.code
    if code is None:
        return "exit code 0"
    if isinstance(code, int):
        return f"exit code {code}"
    return f"exit code 1: {str(code)[:200]}"  # sys.exit("message") exits 1 after printing it


@contextlib.contextmanager
def user_code(what: str, source: str, *, during: str = "") -> Iterator[None]:
    """The error boundary around the user's code (importing a model module, calling a factory).

    Its prints go to stderr (stdout stays the machine interface, e.g. ``--json``); ``sys.exit()`` and
    ``KeyboardInterrupt`` become a UserCodeError ("the model module exited during import (exit code 2): 'train.py'"),
    so they neither end onnxship silently with the user's exit code nor leave a traceback.
    """
    when = f" {during}" if during else ""
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    except SystemExit as exc:
        raise UserCodeError(
            f"{what} exited{when} ({_exit_code(exc)}): {source}", hint=_MAIN_GUARD_HINT if during else None
        ) from None
    except KeyboardInterrupt:
        raise UserCodeError(f"{what} was interrupted{when} (KeyboardInterrupt): {source}") from None
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()


@dataclass(frozen=True)
class ModelSpec:
    """Where the model comes from."""

    target: str  # "file.py:factory" or "pkg.module:factory"
    kwargs: dict[str, Any] = field(default_factory=dict)  # keyword arguments for the factory
    checkpoint: Path | None = None  # weights (state_dict) loaded after the factory
    trust_checkpoint: bool = False  # allow full pickles (runs code from the file: only for files you trust)

    @property
    def module_ref(self) -> str:
        return self.target.rsplit(":", 1)[0]

    @property
    def factory_name(self) -> str:
        return self.target.rsplit(":", 1)[1]

    @property
    def is_file(self) -> bool:
        ref = self.module_ref
        return ref.endswith(".py") or "/" in ref or "\\" in ref

    def default_name(self) -> str:
        """A model name from the spec: the file stem, or its folder for generic stems like model.py."""
        if self.is_file:
            path = Path(self.module_ref)
            stem = path.stem
            if stem in {"model", "models", "__init__", "net", "network"} and path.resolve().parent.name:
                return path.resolve().parent.name
            return stem
        return self.module_ref.rsplit(".", 1)[-1]

    def import_module(self) -> ModuleType:
        """Import the module that holds the factory (a file path or a dotted module)."""
        if self.is_file:
            path = Path(self.module_ref)
            if not path.is_file():
                raise ModelLoadError(f"model file {str(path)!r} does not exist", hint=_SPEC_HINT)
            mod_name = "onnxship_user_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
            if mod_name in sys.modules:
                return sys.modules[mod_name]
            spec = importlib.util.spec_from_file_location(mod_name, path)
            if spec is None or spec.loader is None:
                raise ModelLoadError(f"cannot import {str(path)!r} as a Python module", hint=_SPEC_HINT)
            module = importlib.util.module_from_spec(spec)
            folder = str(path.resolve().parent)
            added = folder not in sys.path
            if added:
                sys.path.insert(0, folder)  # let the file import its sibling modules
            try:
                sys.modules[mod_name] = module
                with user_code("the model module", repr(str(path)), during="during import"):
                    spec.loader.exec_module(module)
            except BaseException as exc:
                sys.modules.pop(mod_name, None)
                if isinstance(exc, ModelLoadError) or not isinstance(exc, Exception):
                    raise
                raise ModelLoadError(f"importing {str(path)!r} failed: {type(exc).__name__}: {exc}") from exc
            finally:
                if added and folder in sys.path:
                    sys.path.remove(folder)
            return module
        try:
            with user_code("the model module", repr(self.module_ref), during="during import"):
                return importlib.import_module(self.module_ref)
        except ImportError as exc:
            raise ModelLoadError(f"cannot import module {self.module_ref!r}: {exc}", hint=_SPEC_HINT) from exc
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"importing module {self.module_ref!r} failed: {type(exc).__name__}: {exc}"
            ) from exc

    def factory(self) -> Any:
        module = self.import_module()
        fn = getattr(module, self.factory_name, None)
        if fn is None:
            names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
            raise ModelLoadError(
                f"{self.module_ref!r} has no attribute {self.factory_name!r}",
                hint=f"callables there: {', '.join(names[:15]) or '(none)'}",
            )
        if not callable(fn):
            raise ModelLoadError(
                f"{self.target!r} is a {type(fn).__name__}, not a callable factory", hint=_SPEC_HINT
            )
        return fn

    def module_attr(self, name: str, default: Any = None) -> Any:
        """An attribute of the factory's module (e.g. ONNXSHIP_INPUTS defaults)."""
        return getattr(self.import_module(), name, default)

    def export_defaults(self) -> tuple[list[str], tuple[str, ...] | None, dict[str, Any]]:
        """The model module's own export defaults: ONNXSHIP_INPUTS, ONNXSHIP_OUTPUT_NAMES, ONNXSHIP_METADATA."""
        inputs = list(self.module_attr("ONNXSHIP_INPUTS", None) or [])
        names = self.module_attr("ONNXSHIP_OUTPUT_NAMES", None)
        return (
            inputs,
            tuple(names) if names else None,
            dict(self.module_attr("ONNXSHIP_METADATA", None) or {}),
        )

    def load(self) -> LoadedModel:
        """Build the model, load the checkpoint, move it to CPU in eval mode.

        Raises:
            ModelLoadError: the factory fails or returns something else than an nn.Module, or the checkpoint
                is unreadable, needs code (without trust_checkpoint) or does not fit the model.
        """
        torch = require("torch", "torch")
        ckpt_obj, ckpt_sha = (None, None)
        kwargs = dict(self.kwargs)
        if self.checkpoint is not None:
            ckpt_obj, ckpt_sha = _read_checkpoint(Path(self.checkpoint), self.trust_checkpoint)
            if isinstance(ckpt_obj, dict) and isinstance(ckpt_obj.get("model_kwargs"), dict):
                kwargs = {**ckpt_obj["model_kwargs"], **kwargs}
        fn = self.factory()
        try:
            inspect.signature(fn).bind(**kwargs)
        except TypeError as exc:
            raise ModelLoadError(f"factory {self.target!r} does not accept {sorted(kwargs)}: {exc}") from exc
        except ValueError:
            pass  # builtins without a signature
        try:
            with user_code("the model factory", repr(self.target)):
                model = fn(**kwargs)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"factory {self.target!r} raised {type(exc).__name__}: {exc}") from exc
        model = ensure_module(model, f"factory {self.target!r}")
        if ckpt_obj is not None:
            _apply_checkpoint(model, ckpt_obj, Path(self.checkpoint))  # type: ignore[arg-type]
        model = to_cpu_eval(model)
        weights_sha = ckpt_sha or state_dict_sha256(model)
        return LoadedModel(
            model=model,
            spec=self,
            weights_sha256=weights_sha,
            torch_version=torch.__version__,
            checkpoint_meta=_checkpoint_meta(ckpt_obj),
        )


@dataclass
class LoadedModel:
    """A model ready to export, with where it came from."""

    model: torch.nn.Module
    spec: ModelSpec | None
    weights_sha256: str
    torch_version: str
    checkpoint_meta: dict[str, Any] = field(default_factory=dict)


def parse_model_spec(
    text: str,
    *,
    kwargs: dict[str, Any] | None = None,
    checkpoint: str | Path | None = None,
    trust_checkpoint: bool = False,
) -> ModelSpec:
    """Parse ``--model``; raises ConfigError for a spec without ``:factory``."""
    if not isinstance(text, str) or ":" not in text or text.endswith(":") or text.startswith(":"):
        raise ConfigError(f"model spec {text!r} has no ':factory' part", hint=_SPEC_HINT)
    ref, factory = text.rsplit(":", 1)
    if not factory.isidentifier():
        raise ConfigError(f"model spec {text!r}: {factory!r} is not a Python name", hint=_SPEC_HINT)
    return ModelSpec(
        target=text,
        kwargs=dict(kwargs or {}),
        checkpoint=Path(checkpoint) if checkpoint else None,
        trust_checkpoint=trust_checkpoint,
    )


def ensure_module(obj: Any, where: str) -> torch.nn.Module:
    """Return obj if it is an nn.Module, else raise ModelLoadError naming what came back."""
    import torch

    if isinstance(obj, torch.nn.Module):
        return obj
    desc = type(obj).__name__
    if isinstance(obj, (tuple, list)):
        inner = ", ".join(type(x).__name__ for x in obj[:4])
        desc = f"a {type(obj).__name__} ({inner})"
        hint = "return only the model; if it returns (model, extra), wrap it: lambda: build()[0]"
    elif isinstance(obj, dict):
        desc = f"a dict with keys {list(obj)[:5]}"
        hint = "a dict looks like a state_dict: build the model in the factory and pass the weights with --checkpoint"
    elif isinstance(obj, (str, Path)):
        desc = f"a path {str(obj)!r}"
        hint = "return the nn.Module itself; pass weight files with --checkpoint"
    else:
        hint = "the factory must return a torch.nn.Module"
    raise ModelLoadError(f"{where} returned {desc}, not a torch.nn.Module", hint=hint)


def to_cpu_eval(model: torch.nn.Module) -> torch.nn.Module:
    """Put the model in eval mode on the CPU; refuse meta tensors (no weights to export)."""
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.device.type == "meta":
            raise ModelLoadError(
                f"parameter {name!r} is on the 'meta' device: the model has no real weights",
                hint="materialise the model (e.g. model.to_empty(device='cpu') and load a checkpoint) before export",
            )
    return model.to("cpu").eval()


def state_dict_sha256(model: torch.nn.Module) -> str:
    """A stable sha256 over the state_dict (names + tensor bytes), for models without a checkpoint file."""
    import torch

    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        flat = value.detach().cpu().contiguous().reshape(-1)
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()


def _read_checkpoint(path: Path, trust: bool) -> tuple[Any, str]:
    import pickle

    import torch

    if not path.is_file():
        raise ModelLoadError(f"checkpoint {str(path)!r} does not exist")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        # Only a GLOBAL the weights-only unpickler refused means "needs code"; random bytes also fail weights-only
        # loading ("Unsupported operand ..."), and calling those a full pickle sent users to --trust-checkpoint.
        needed = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if not trust and needed:
            raise ModelLoadError(
                f"checkpoint {str(path)!r} is a full pickle that needs code to load ({needed.group(1)})",
                hint="save model.state_dict() instead, or pass --trust-checkpoint if you trust this file "
                "(loading it runs code from it)",
            ) from None
        raise ModelLoadError(
            f"checkpoint {str(path)!r} cannot be read: it does not unpickle as a torch checkpoint",
            hint="the file is truncated or not a torch checkpoint; re-save it with "
            "torch.save(model.state_dict(), path)",
        ) from None
    except Exception as exc:  # zip errors, EOF, truncated files
        raise ModelLoadError(
            f"checkpoint {str(path)!r} cannot be read: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
            hint="the file is truncated or not a torch checkpoint; re-save it with torch.save(model.state_dict(), path)",
        ) from None
    return obj, sha


def _extract_state_dict(obj: Any) -> dict[str, Any] | None:
    import torch

    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        for key in _STATE_KEYS:
            inner = obj.get(key)
            if isinstance(inner, torch.nn.Module):
                return inner.state_dict()
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
    return None


def _apply_checkpoint(model: torch.nn.Module, obj: Any, path: Path) -> None:
    state = _extract_state_dict(obj)
    if state is None:
        keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ModelLoadError(
            f"checkpoint {str(path)!r} holds no state_dict (found {keys})",
            hint=f"save torch.save(model.state_dict(), path) or nest it under one of {', '.join(_STATE_KEYS)}",
        )
    # Strip the prefix DataParallel / torch.compile add.
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    try:
        result = model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise ModelLoadError(
            f"checkpoint {str(path)!r} does not fit the model: {' '.join(first[:3])[:400]}",
            hint="check the factory arguments (--model-arg k=v) match the ones used in training",
        ) from None
    del result


def _checkpoint_meta(obj: Any) -> dict[str, Any]:
    """Plain-value entries next to the weights (vocab_size, seq_len, ...), kept for metadata."""
    if not isinstance(obj, dict):
        return {}
    meta: dict[str, Any] = {}
    for k, v in obj.items():
        if isinstance(v, (int, float, str, bool)) and not isinstance(k, int):
            meta[str(k)] = v
        elif k == "model_kwargs" and isinstance(v, dict):
            meta.update({str(a): b for a, b in v.items() if isinstance(b, (int, float, str, bool))})
    return meta

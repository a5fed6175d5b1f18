"""Checks a command makes before anything heavy is imported: a wrong flag is reported in milliseconds, not after
torch has loaded and the model has been built.

Only what can be known without running user code is checked here: the model file exists and (read with ``ast``,
not imported) defines the factory and, when no ``--input`` is given, ``ONNXSHIP_INPUTS``; the checkpoint exists;
every ``--input`` parses. Anything else is still checked by the verbs themselves.
"""

from __future__ import annotations

import ast
from pathlib import Path

from onnxship._errors import InputSpecError, ModelLoadError

__all__ = ["check_model_flags"]


def _module_names(path: Path) -> set[str] | None:
    """Top-level names a module file binds (None when it cannot be read or parsed: the loader will say why)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        else:
            return None  # conditional definitions, star imports...: leave it to the loader
    return names


def check_model_flags(
    model: str | None,
    *,
    checkpoint: Path | str | None = None,
    inputs: list[str] | None = None,
    inputs_required: bool = False,
) -> None:
    """Raise ModelLoadError (exit 1) / InputSpecError (exit 2) for flags that are wrong before any model code runs."""
    from onnxship.spec import parse_input_spec

    for text in inputs or []:
        parse_input_spec(text)  # InputSpecError (exit 2) names the grammar
    if checkpoint is not None and not Path(checkpoint).exists():
        raise ModelLoadError(
            f"checkpoint {str(checkpoint)!r} does not exist", hint="--checkpoint path/to/weights.pt"
        )
    if not model or ":" not in model:
        return
    ref, factory = model.rsplit(":", 1)
    if not ref.endswith(".py"):
        return  # package.module:factory: importing it is the only way to know
    path = Path(ref)
    if not path.is_file():
        raise ModelLoadError(
            f"model file {ref!r} does not exist",
            hint="--model path/to/file.py:factory (relative to this folder)",
        )
    names = _module_names(path)
    if names is None:
        return
    if factory.isidentifier() and factory not in names:
        defined = sorted(n for n in names if not n.startswith("_") and n[:1].islower())[:8]
        raise ModelLoadError(
            f"{ref!r} has no attribute {factory!r}",
            hint=f"names defined there: {', '.join(defined) or 'none'}; --model {ref}:<factory>",
        )
    if inputs_required and not inputs and "ONNXSHIP_INPUTS" not in names:
        raise InputSpecError(
            "no --input given and the model module defines no ONNXSHIP_INPUTS",
            hint="add --input NAME:DIMS:DTYPE, e.g. --input 'x:batch=2 x 10:float32'",
        )

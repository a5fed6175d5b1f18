"""Imports follow the layer order: a module imports only its own package or a lower layer.

Layers, lowest first (a package's rank applies to every module inside it)::

    0  spec, _errors, _util, _version, _secrets   ground floor: specs, errors, small helpers
    1  onnxfile, inspect                           reading/checking ONNX files (declared io, dims, external data)
    2  runtime                                     sessions, runners, data sources, preprocess, golden files, bench
    3  verify                                      the parity gate and its report
    4  export                                      exporters, the export gate
    5  optimize, package                           variants; bundles, Triton/KServe layouts
    6  ship                                        export -> verify -> package in one verb
    7  publish, serve                              MLflow/notifications; the torch-free KServe-v2 server
    8  recipes, doctor, testing                    end-to-end recipes built on the public verbs; training doctor
    9  cli                                         flag parsing only

Every import counts: module level, inside functions, under ``TYPE_CHECKING``, relative or absolute. Where a lower
layer needs something from a higher one, it takes it as an argument (``runtime.bench(build_variants=...)``) or the
shared piece moves down. ``onnxship/__init__.py`` (the lazy facade over every verb) is the one exception.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "onnxship"

RANK = {
    "spec": 0,
    "_errors": 0,
    "_util": 0,
    "_version": 0,
    "_progress": 0,
    "_secrets": 0,
    "onnxfile": 1,
    "inspect": 1,
    "runtime": 2,
    "verify": 3,
    "export": 4,
    "optimize": 5,
    "package": 5,
    "ship": 6,
    "publish": 7,
    "serve": 7,
    "recipes": 8,
    "doctor": 8,
    "testing": 8,
    "cli": 9,
}


FACADE = 7  # `import onnxship`: the lazy facade reaches every verb up to publish/serve


def _imported(tree: ast.AST, package: list[str]) -> list[tuple[int, str]]:
    """(line, absolute dotted name) for every import in a module of ``package``, relative ones resolved."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            found += [(node.lineno, f"{name}.{a.name}") for a in node.names]
    return found


def _layer(dotted: str) -> tuple[str, int | None] | None:
    """(package, rank) an import lands in; None outside onnxship. Rank None: a package with no layer."""
    parts = dotted.split(".")
    if parts[0] != "onnxship":
        return None
    if len(parts) == 1 or parts[1] not in RANK and len(parts) == 2:
        return "onnxship", FACADE  # `import onnxship` / `from onnxship import verb`
    return parts[1], RANK.get(parts[1])


def layer_violations(src: Path = SRC) -> list[str]:
    """One line per import that runs against the order: ``src/onnxship/<file>:<line>: ...``."""
    bad = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        if rel == Path("__init__.py"):
            continue
        me = rel.parts[0].removesuffix(".py")
        if me not in RANK:
            bad.append(
                f"src/onnxship/{rel}:1: package {me!r} has no layer (add it to RANK and the docstring)"
            )
            continue
        module = ["onnxship", *rel.with_suffix("").parts]
        package = module[:-1]  # __init__.py: its own package; else: the containing one
        for line, dotted in _imported(ast.parse(path.read_text(encoding="utf-8")), package):
            hit = _layer(dotted)
            if hit is None or hit[0] == me:
                continue
            target, rank = hit
            if rank is None:
                bad.append(f"src/onnxship/{rel}:{line}: imports {dotted}; package {target!r} has no layer")
            elif rank > RANK[me]:
                bad.append(
                    f"src/onnxship/{rel}:{line}: {me} (layer {RANK[me]}) imports {dotted} "
                    f"(layer {rank}): move the shared code down or pass it in"
                )
    return bad


def test_every_import_follows_the_layer_order():
    bad = layer_violations()
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_the_check_sees_function_level_and_relative_imports(tmp_path):
    """The checker itself: an upward import inside a function, or a relative one, is caught with file:line."""
    pkg = tmp_path / "runtime"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_x.py").write_text(
        "from onnxship.spec import TensorSpec\n\n\ndef f():\n    from onnxship.optimize import optimize\n"
    )
    (pkg / "_y.py").write_text("from ..verify import verify\nfrom . import _x\n")
    (tmp_path / "spec.py").write_text("import onnxship.cli\n")
    bad = layer_violations(tmp_path)
    assert [b.split(": ", 1)[0] for b in bad] == [
        "src/onnxship/runtime/_x.py:5",
        "src/onnxship/runtime/_y.py:1",
        "src/onnxship/spec.py:1",
    ], bad

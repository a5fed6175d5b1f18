"""ShipConfig: ``onnxship.yaml`` (sections model, paths, export, verify, optimize, package) plus ``ONNXSHIP_*`` environment overrides.

::

    model:    {spec: examples/deeplog/model.py:build_model, name: deeplog, checkpoint: null, args: {}}
    paths:    {releases: releases, project: null}
    export:   {strategy: auto, opsets: [], inputs: [...], output_names: [...], allow_static: false, ...}
    verify:   {golden_samples: 8, mode: smoke, sample_count: 32, task: null, data: null, seed: 0, atol: null, ...}
    optimize: {variants: []}
    package:  {assets: {vocab: vocab.json}, portable: false, update_latest: true, triton: {repo: null, ...}}

Every ``ONNXSHIP_<SECTION>_<KEY>`` environment variable overrides ``<section>.<key>`` (values parse as YAML
scalars/lists: ``ONNXSHIP_EXPORT_OPSETS="[17]"``, ``ONNXSHIP_PACKAGE_PORTABLE=true``). This module is the one place
that reads them. Unknown keys, in the file or in the environment, are errors that name the valid keys.
Relative paths in the file (model file, checkpoint, releases, assets, data, Triton repo) are relative to the file's
folder.

Size: over 400 lines on purpose: the whole onnxship.yaml schema, one small dataclass per section plus the
environment overrides; split, the schema could no longer be read in one place.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from onnxship._errors import ConfigError, require
from onnxship._util import check_name

__all__ = [
    "ENV_PREFIX",
    "ExportSection",
    "ModelSection",
    "OptimizeSection",
    "PackageSection",
    "PathsSection",
    "ShipConfig",
    "TritonSection",
    "VerifySection",
    "load_ship_config",
]

ENV_PREFIX = "ONNXSHIP_"


@dataclass
class ModelSection:
    """What to export."""

    spec: str | None = None  # file.py:factory or package.module:factory
    name: str | None = None  # release/model name (default: from the spec)
    checkpoint: str | None = None  # state_dict to load after the factory
    trust_checkpoint: bool = False  # allow full pickles (runs code from the file)
    args: dict[str, Any] = field(default_factory=dict)  # factory keyword arguments


@dataclass
class PathsSection:
    """Where things go."""

    releases: str = "releases"  # root of releases/<name>/<version>/
    project: str | None = None  # the git project whose sha tags the release (default: the current folder)


@dataclass
class ExportSection:
    """How to export (see ExportConfig)."""

    strategy: str = "auto"  # auto | dynamo | torchscript
    opsets: list[int] = field(
        default_factory=list
    )  # tried in order; []: each exporter's (dynamo 18, TorchScript 17)
    inputs: list[str] = field(
        default_factory=list
    )  # NAME:DIMS:DTYPE[:LOW..HIGH] (default: the module's ONNXSHIP_INPUTS)
    output_names: list[str] | None = None  # default: the module's ONNXSHIP_OUTPUT_NAMES, else output_N
    allow_static: bool = False  # accept a static export when no dynamic candidate verifies
    fp16: bool = False  # export in float16
    metadata: dict[str, Any] = field(default_factory=dict)  # user metadata (vocab_size, seq_len, notes, ...)
    seed: int = 0  # seed of generated inputs


@dataclass
class VerifySection:
    """Verification of the shipped file against PyTorch."""

    golden_samples: int = 8  # samples (batch rows) stored in golden.npz
    mode: str = "smoke"  # smoke | coverage | full (how many samples verify compares)
    sample_count: int = 32  # smoke: samples compared
    task: str | None = None  # classification | detection | sequence: task-level agreement in the gate
    data: str | None = None  # evaluation data (image folder, .npz, .parquet/.csv); None: synthetic
    seed: int = 0  # seed of the golden inputs and of sampling
    atol: float | None = None  # absolute tolerance (default: the precision's)
    rtol: float | None = None  # relative tolerance (default: the precision's)
    allow_nonfinite: bool = (
        False  # accept NaN/Inf outputs where both engines agree (default: they fail the gate)
    )


@dataclass
class OptimizeSection:
    """Optimized variants shipped under variants/ (each re-verified)."""

    variants: list[str] = field(default_factory=list)  # e.g. [fp16, int8]


@dataclass
class TritonSection:
    """A Triton model repository written after the release (optional)."""

    repo: str | None = None  # write <repo>/<name>/ when set
    max_batch_size: int | None = None  # default: the verified batch maximum (0 when the model cannot batch)
    instances: int = 1  # instance_group count
    kind: str = "KIND_CPU"  # KIND_CPU | KIND_GPU | KIND_AUTO
    dynamic_batching: bool = False  # add a dynamic_batching block


@dataclass
class PackageSection:
    """The bundle."""

    assets: dict[str, str] = field(default_factory=dict)  # name -> file (vocab, labels, ...)
    portable: bool = False  # also write the inference-engine vocab form {"0": "template"}
    update_latest: bool = True  # move releases/<name>/latest to the new release
    triton: TritonSection = field(default_factory=TritonSection)


_SECTIONS: dict[str, type] = {
    "model": ModelSection,
    "paths": PathsSection,
    "export": ExportSection,
    "verify": VerifySection,
    "optimize": OptimizeSection,
    "package": PackageSection,
}
_NESTED: dict[tuple[str, str], type] = {("package", "triton"): TritonSection}
# Numbers with a valid range: a negative seed or a zero sample count is a config error, not a traceback later.
_RANGES: dict[tuple[str, str], tuple[float, float]] = {
    ("export", "seed"): (0, 2**32 - 1),
    ("verify", "seed"): (0, 2**32 - 1),
    ("verify", "golden_samples"): (1, 100_000),
    ("verify", "sample_count"): (1, 10_000_000),
    ("verify", "atol"): (0, float("inf")),
    ("verify", "rtol"): (0, float("inf")),
    ("triton", "max_batch_size"): (0, 2**31 - 1),
    ("triton", "instances"): (1, 1024),
}
_OPSETS = (7, 30)
# A YAML document whose aliases expand to more nodes than this is refused (recursive or "billion laughs" anchors
# would otherwise hang the first code that walks the config).
YAML_MAX_NODES = 100_000
_PATH_KEYS = {
    ("model", "checkpoint"),
    ("paths", "releases"),
    ("paths", "project"),
    ("triton", "repo"),
    ("verify", "data"),
}


@dataclass
class ShipConfig:
    """Everything ``onnxship ship`` needs; build it with :func:`load_ship_config` or directly."""

    model: ModelSection = field(default_factory=ModelSection)
    paths: PathsSection = field(default_factory=PathsSection)
    export: ExportSection = field(default_factory=ExportSection)
    verify: VerifySection = field(default_factory=VerifySection)
    optimize: OptimizeSection = field(default_factory=OptimizeSection)
    package: PackageSection = field(default_factory=PackageSection)
    source: str | None = None  # the YAML file it came from, if any

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], *, base: Path | None = None, where: str = "config"
    ) -> ShipConfig:
        """Build from a nested dict (the YAML document); unknown keys raise ConfigError naming the valid ones."""
        if not isinstance(data, dict):
            raise ConfigError(
                f"{where} must be a mapping of sections, got {type(data).__name__}",
                hint=f"sections: {', '.join(_SECTIONS)}",
            )
        cfg = cls(source=where)
        for section, body in data.items():
            if section not in _SECTIONS:
                raise _unknown(where, str(section), list(_SECTIONS), "section")
            if body is None:
                continue
            setattr(cfg, section, _build(_SECTIONS[section], body, section, base, where))
        return cfg

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {k: v for k, v in asdict(self).items() if k != "source"}


def _unknown(where: str, key: str, valid: list[str], what: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1)
    return ConfigError(
        f"unknown {what} {key!r} in {where}" + (f" (did you mean {close[0]!r}?)" if close else ""),
        hint=f"valid {what}s: {', '.join(valid)}",
    )


def _check_type(value: Any, annotation: str, dotted: str, where: str) -> Any:
    base = annotation.replace(" | None", "")
    if value is None:
        if "None" in annotation:
            return None
        raise ConfigError(f"{dotted} in {where} must not be empty", hint=f"expected {base}")
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, (str, int, float)) and not isinstance(value, bool),
        "list[int]": isinstance(value, list)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value),
        "list[str]": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "dict[str, Any]": isinstance(value, dict),
        "dict[str, str]": isinstance(value, dict) and all(isinstance(v, str) for v in value.values()),
    }.get(base)
    if ok is None:
        return value
    if not ok:
        raise ConfigError(
            f"{dotted} in {where} is {value!r} ({type(value).__name__}), expected {base}",
            hint=f"fix {dotted} in the config file or its ONNXSHIP_* variable",
        )
    if base == "str":
        return str(value)
    if base == "float":
        return float(value)
    return value


def _check_range(value: Any, leaf: str, key: str, dotted: str, where: str) -> None:
    import math

    if value is None:
        return
    if (leaf, key) == ("model", "name"):
        check_name(value, f"{dotted} in {where}")
        return
    if (leaf, key) == ("export", "opsets"):
        # [] means each exporter's own default opset (the default of the section).
        bad = [v for v in value if not _OPSETS[0] <= v <= _OPSETS[1]]
        if bad:
            raise ConfigError(
                f"{dotted} in {where} is {value!r}: each opset must be in {_OPSETS[0]}..{_OPSETS[1]}",
                hint="e.g. [17, 18]",
            )
        return
    bounds = _RANGES.get((leaf, key))
    if bounds is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    low, high = bounds
    if isinstance(value, float) and not math.isfinite(value) or not low <= value <= high:
        shown = f"{low}..{high}" if high != float("inf") else f"a finite number >= {low}"
        raise ConfigError(
            f"{dotted} in {where} is {value!r}: it must be {shown}",
            hint=f"fix {dotted} in the config file or its ONNXSHIP_* variable",
        )


def safe_yaml_load(text: str, where: str) -> Any:
    """``yaml.safe_load`` that refuses recursive aliases and aliases expanding past YAML_MAX_NODES nodes.

    PyYAML shares aliased nodes, so parsing a "billion laughs" document is quick; what hangs is the first walk over
    the result. The composed node graph is measured (each node once) before anything is constructed.
    """
    yaml = require("yaml", "data")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, where)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(root: Any, where: str) -> int:
    """Nodes in the document with every alias expanded, computed over the shared graph (each node once)."""
    import yaml

    sizes: dict[int, int] = {}
    active: set[int] = set()
    # iterative post-order walk: a recursive one would overflow on deep documents
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            kids = _children(node, yaml)
            total = 1 + sum(sizes[id(k)] for k in kids)
            if total > YAML_MAX_NODES:
                raise ConfigError(
                    f"{where}: its anchors and aliases (&name / *name) expand to more than {YAML_MAX_NODES} "
                    "values",
                    hint="write the values out, or use fewer nested aliases",
                )
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in active:
            raise ConfigError(
                f"{where}: an alias refers to a value that contains it (a recursive anchor)",
                hint="a config value cannot contain itself; write the values out",
            )
        active.add(key)
        stack.append((node, True))
        for kid in _children(node, yaml):
            if id(kid) not in sizes:
                stack.append((kid, False))
    return sizes[id(root)]


def _children(node: Any, yaml: Any) -> list[Any]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _build(cls: type, body: Any, section: str, base: Path | None, where: str) -> Any:
    if isinstance(body, cls):
        return body
    if not isinstance(body, dict):
        raise ConfigError(
            f"section {section!r} in {where} must be a mapping, got {type(body).__name__}",
            hint=f"valid keys: {', '.join(f.name for f in fields(cls))}",
        )
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    leaf = section.rsplit(".", 1)[-1]
    for key, value in body.items():
        if key not in known:
            raise _unknown(where, f"{section}.{key}", [f"{section}.{k}" for k in known], "key")
        nested = _NESTED.get((leaf, key))
        if nested is not None:
            kwargs[key] = _build(nested, value or {}, f"{section}.{key}", base, where)
            continue
        value = _check_type(value, str(known[key].type), f"{section}.{key}", where)
        _check_range(value, leaf, key, f"{section}.{key}", where)
        if (
            (leaf, key) in _PATH_KEYS
            and isinstance(value, str)
            and base is not None
            and not os.path.isabs(value)
        ):
            value = os.path.normpath(base / value)
        if (
            (leaf, key) == ("model", "spec")
            and isinstance(value, str)
            and ".py:" in value
            and base is not None
            and not os.path.isabs(value)
        ):
            value = os.path.normpath(base / value)  # a model file next to the config, like every other path
        if section == "package" and key == "assets" and base is not None:
            value = {k: v if os.path.isabs(v) else os.path.normpath(base / v) for k, v in value.items()}
        kwargs[key] = value
    return cls(**kwargs)


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """``ONNXSHIP_<SECTION>_<KEY>`` -> nested dict; variables of other sections (serve, ...) are not ours."""
    yaml = require("yaml", "data")
    tree: dict[str, Any] = {}
    for var, raw in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        section = next((s for s in _SECTIONS if rest.startswith(s + "_")), None)
        if section is None:
            continue
        key = rest[len(section) + 1 :]
        try:
            value = safe_yaml_load(raw, f"environment variable {var}") if raw != "" else None
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"{var}={raw!r} does not parse ({exc})", hint="use a YAML scalar or [list]"
            ) from None
        if section == "package" and key.startswith("triton_"):
            tree.setdefault(section, {}).setdefault("triton", {})[key[len("triton_") :]] = value
            continue
        known = [f.name for f in fields(_SECTIONS[section])]
        if key not in known:
            raise _unknown(
                f"environment variable {var}", f"{section}.{key}", [f"{section}.{k}" for k in known], "key"
            )
        tree.setdefault(section, {})[key] = value
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = (
            _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "assets" else v
        )
    return out


def load_ship_config(path: str | Path | None = None, *, environ: dict[str, str] | None = None) -> ShipConfig:
    """Read ``onnxship.yaml`` (optional) and apply ``ONNXSHIP_*`` overrides.

    Example:
        >>> cfg = load_ship_config("onnxship.yaml")  # doctest: +SKIP
        >>> cfg.export.strategy
        'auto'
    """
    yaml = require("yaml", "data")
    data: dict[str, Any] = {}
    base: Path | None = None
    where = "config"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist", hint="pass --config onnxship.yaml")
        try:
            loaded = safe_yaml_load(p.read_text(encoding="utf-8"), str(p))
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"{str(p)!r} is not valid YAML: {str(exc).splitlines()[0]}",
                hint="check indentation and quoting",
            ) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                f"{str(p)!r} must hold a mapping of sections, got {type(loaded).__name__}",
                hint=f"sections: {', '.join(_SECTIONS)}",
            )
        data, base, where = loaded or {}, p.resolve().parent, str(p)
    env = _env_overrides(dict(os.environ if environ is None else environ))
    cfg = ShipConfig.from_dict(data, base=base, where=where)
    if env:
        merged = _merge(ShipConfig.from_dict(data, base=base, where=where).to_dict(), env)
        cfg = ShipConfig.from_dict(merged, base=None, where=f"{where} + ONNXSHIP_* environment")
        cfg.source = where
    return cfg

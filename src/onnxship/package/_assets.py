"""Bundle assets: vocabularies and label maps validated before they ship, other files copied verbatim.

A vocabulary maps the real template/token strings to ids (``{"User <ID> logged in": 0, ...}``). Otherwise a vocab keyed by Drain3 template ids (``{"1": 0, "2": 1}``) loads fine and the
deployed engine looks up strings that are never there. So keys that are all digits are refused, values must be a
permutation of ``0..N-1`` and N must agree with the model (its nn.Embedding size and/or its output size).

A label map turns a class index into a label (e.g. class index -> edi_code). It is accepted as a list, as
``{"0": "label", ...}`` or as ``{"label": 0, ...}`` and always written in the index-keyed form.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxship._errors import PackagingError

__all__ = [
    "AssetSpec",
    "ModelSizes",
    "PreparedAsset",
    "parse_asset_arg",
    "portable_vocab",
    "prepare_assets",
    "validate_labels",
    "validate_vocab",
]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
VOCAB_NAMES = ("vocab",)
LABEL_NAMES = ("labels",)
_VOCAB_FIX = (
    "rebuild the vocabulary from the template strings (build_deeplog_inputs(template_col="
    "'template')), i.e. {\"User <ID> logged in\": 0, ...}, and retrain if the ids changed"
)


@dataclass(frozen=True)
class AssetSpec:
    """One ``--asset name=path``."""

    name: str  # vocab, labels or any other identifier
    path: Path  # the file to validate and copy into assets/

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise PackagingError(
                f"asset name {self.name!r} is not usable",
                hint="use letters, digits, '_' or '-', e.g. --asset vocab=vocab.json",
            )


@dataclass(frozen=True)
class ModelSizes:
    """What the model says about its vocabulary/classes (None: unknown)."""

    embedding: int | None = None  # num_embeddings of the model's first nn.Embedding
    output: int | None = None  # last dim of the model's first output
    declared: int | None = None  # vocab_size / num_classes from the user's metadata


@dataclass
class PreparedAsset:
    """A validated asset: the files to write under assets/ (name -> bytes) and what was checked."""

    name: str
    source: Path
    files: dict[str, bytes]
    kind: str  # vocab | labels | file
    size: int | None = None  # entries in a vocab / label map
    checks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": str(self.source),
            "kind": self.kind,
            "size": self.size,
            "files": sorted(self.files),
            "checks": self.checks,
        }


def parse_asset_arg(text: str) -> AssetSpec:
    """``name=path`` -> AssetSpec (the CLI's ``--asset``)."""
    if "=" not in text or text.startswith("="):
        raise PackagingError(f"--asset {text!r} is not name=path", hint="e.g. --asset vocab=vocab.json")
    name, path = text.split("=", 1)
    return AssetSpec(name.strip(), Path(path.strip()))


def _load_json(spec: AssetSpec) -> Any:
    if not spec.path.is_file():
        raise PackagingError(
            f"asset {spec.name!r}: file {str(spec.path)!r} does not exist",
            hint="pass --asset NAME=PATH with an existing file",
        )
    try:
        return json.loads(spec.path.read_text(encoding="utf-8"), object_pairs_hook=_no_repeats(spec.name))
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, PackagingError):
            raise
        raise PackagingError(
            f"asset {spec.name!r}: {str(spec.path)!r} is not valid JSON ({exc})",
            hint="vocab and labels assets are JSON objects",
        ) from None


def _no_repeats(name: str) -> Any:
    """A JSON object hook that refuses a key given twice: json.loads would keep the last one silently, so a
    template listed with two ids could pass the permutation check with one of its ids dropped."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise PackagingError(
                    f"asset {name!r}: {key[:120]!r} appears twice (with {seen[key]!r} and {value!r})",
                    hint="each template/token/label key must appear once, with one id",
                )
            seen[key] = value
        return seen

    return hook


def _check_permutation(what: str, ids: list[Any]) -> None:
    bad = [v for v in ids if isinstance(v, bool) or not isinstance(v, int)]
    if bad:
        raise PackagingError(
            f"{what}: ids must be integers, got {bad[:3]!r}", hint="map every entry to an integer id 0..N-1"
        )
    n = len(ids)
    if sorted(ids) != list(range(n)):
        dup = sorted({v for v in ids if ids.count(v) > 1})[:5] if len(set(ids)) != n else []
        missing = sorted(set(range(n)) - set(ids))[:5]
        raise PackagingError(
            f"{what}: ids are not a permutation of 0..{n - 1}"
            + (f" (duplicated: {dup})" if dup else "")
            + (f" (missing: {missing})" if missing else ""),
            hint="every id 0..N-1 must appear exactly once",
        )


def _check_size(what: str, n: int, sizes: ModelSizes, noun: str) -> list[str]:
    checks: list[str] = []
    if sizes.declared is not None and sizes.declared != n:
        raise PackagingError(
            f"{what} has {n} entries but the model metadata says {sizes.declared}",
            hint=f"ship the {noun} the model was trained with, or fix the metadata",
        )
    known = {
        k: v
        for k, v in (("nn.Embedding size", sizes.embedding), ("output size", sizes.output))
        if v is not None
    }
    if known and n not in known.values():
        told = ", ".join(f"{k} {v}" for k, v in known.items())
        raise PackagingError(
            f"{what} has {n} entries but the model has {told}",
            hint=f"ship the {noun} the model was trained with (or retrain with this one)",
        )
    checks += [f"matches {k} {v}" for k, v in known.items() if v == n]
    if sizes.declared is not None:
        checks.append(f"matches metadata {sizes.declared}")
    return checks


def validate_vocab(
    data: Any, sizes: ModelSizes | None = None, *, what: str = "vocab"
) -> tuple[dict[str, int], list[str]]:
    """Check a ``{token: id}`` vocabulary; returns it and the checks passed."""
    if not isinstance(data, dict) or not data:
        raise PackagingError(
            f"{what} must be a non-empty JSON object {{token: id}}, got {type(data).__name__}",
            hint='e.g. {"User <ID> logged in": 0, "System started": 1}',
        )
    keys = list(data)
    values = list(data.values())
    if all(k.strip().isdigit() for k in keys):
        if all(isinstance(v, str) for v in values):
            raise PackagingError(
                f'{what} is in the inference-engine form {{"0": "template"}}',
                hint='pass the training form {"template": 0}; --portable writes the engine form',
            )
        raise PackagingError(
            f"{what} keys are ids ({', '.join(repr(k) for k in keys[:3])}...), not template strings: the engine "
            "would look up strings that are never there",
            hint=_VOCAB_FIX,
        )
    empty = [k for k in keys if not k.strip()]
    if empty:
        raise PackagingError(f"{what} has an empty key", hint="every key is a real template/token string")
    trimmed: dict[str, str] = {}
    for k in keys:
        other = trimmed.setdefault(" ".join(k.split()), k)
        if other != k:
            raise PackagingError(
                f"{what}: {other[:80]!r} (id {data[other]!r}) and {k[:80]!r} (id {data[k]!r}) are the same template "
                "up to whitespace",
                hint="each template must appear once, with one id: rebuild the vocabulary from the templates",
            )
    _check_permutation(what, values)
    checks = ["keys are strings, not ids", f"ids are a permutation of 0..{len(values) - 1}"]
    checks += _check_size(what, len(values), sizes or ModelSizes(), "vocabulary")
    return dict(data), checks


def portable_vocab(vocab: dict[str, int]) -> dict[str, str]:
    """The inference-engine form ``{"0": "template", ...}`` (ordered by id)."""
    return {str(i): t for t, i in sorted(vocab.items(), key=lambda kv: kv[1])}


def validate_labels(
    data: Any, sizes: ModelSizes | None = None, *, what: str = "labels"
) -> tuple[list[str], list[str]]:
    """Check a class-index -> label map; returns the labels in index order and the checks passed."""
    if isinstance(data, list):
        labels = data
    elif isinstance(data, dict) and data:
        keys, values = list(data), list(data.values())
        if all(k.strip().isdigit() for k in keys):
            ids = [int(k) for k in keys]
            _check_permutation(f"{what} keys", ids)
            labels = [data[k] for k in sorted(keys, key=int)]
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            _check_permutation(f"{what} values", values)
            labels = [k for k, _ in sorted(data.items(), key=lambda kv: kv[1])]
        else:
            raise PackagingError(
                f"{what} must map class indices to labels",
                hint='use ["label0", ...], {"0": "label0", ...} or {"label0": 0, ...}',
            )
    else:
        raise PackagingError(
            f"{what} must be a non-empty JSON list or object, got {type(data).__name__}",
            hint='e.g. {"0": "edi_code_A", "1": "edi_code_B"}',
        )
    if not labels:
        raise PackagingError(f"{what} is empty", hint="one label per class")
    bad = [x for x in labels if not isinstance(x, str) or not x.strip()]
    if bad:
        raise PackagingError(
            f"{what}: labels must be non-empty strings, got {bad[:3]!r}",
            hint="one label string per class index",
        )
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise PackagingError(
            f"{what}: several classes share the label(s) {dup[:5]}",
            hint="each class index needs its own label",
        )
    checks = [f"class indices are 0..{len(labels) - 1}", "labels are unique strings"]
    checks += _check_size(
        what,
        len(labels),
        ModelSizes(output=(sizes or ModelSizes()).output, declared=(sizes or ModelSizes()).declared),
        "label map",
    )
    return labels, checks


def _dump(obj: Any) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def prepare_assets(
    specs: list[AssetSpec],
    *,
    vocab_sizes: ModelSizes | None = None,
    label_sizes: ModelSizes | None = None,
    portable: bool = False,
) -> list[PreparedAsset]:
    """Validate every asset and return the bytes to write (nothing is written here)."""
    seen: set[str] = set()
    prepared: list[PreparedAsset] = []
    for spec in specs:
        if spec.name in seen:
            raise PackagingError(f"asset {spec.name!r} given twice", hint="pass each --asset name once")
        seen.add(spec.name)
        if spec.name in VOCAB_NAMES:
            vocab, checks = validate_vocab(_load_json(spec), vocab_sizes, what=f"asset {spec.name!r}")
            files = {f"{spec.name}.json": _dump(vocab)}
            if portable:
                files[f"{spec.name}.portable.json"] = _dump(portable_vocab(vocab))
                checks.append("portable form written")
            prepared.append(PreparedAsset(spec.name, spec.path, files, "vocab", len(vocab), checks))
        elif spec.name in LABEL_NAMES:
            labels, checks = validate_labels(_load_json(spec), label_sizes, what=f"asset {spec.name!r}")
            files = {f"{spec.name}.json": _dump({str(i): x for i, x in enumerate(labels)})}
            prepared.append(PreparedAsset(spec.name, spec.path, files, "labels", len(labels), checks))
        else:
            if not spec.path.is_file():
                raise PackagingError(
                    f"asset {spec.name!r}: file {str(spec.path)!r} does not exist",
                    hint="pass --asset NAME=PATH with an existing file",
                )
            prepared.append(
                PreparedAsset(spec.name, spec.path, {spec.path.name: spec.path.read_bytes()}, "file")
            )
    if portable and not any(p.kind == "vocab" for p in prepared):
        raise PackagingError("--portable needs a vocabulary asset", hint="add --asset vocab=vocab.json")
    return prepared

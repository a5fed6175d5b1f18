"""Vocabulary and label assets are validated before they ship: a vocabulary keyed by ids is refused."""

from __future__ import annotations

import json

import pytest

from onnxship import PackagingError
from onnxship.package import (
    AssetSpec,
    ModelSizes,
    parse_asset_arg,
    portable_vocab,
    prepare_assets,
    validate_labels,
    validate_vocab,
)

GOOD = {"User <ID> logged in": 0, "System started successfully": 1, "Error: <PATH> not found": 2}


def test_good_vocab_and_portable_form():
    vocab, checks = validate_vocab(GOOD, ModelSizes(embedding=3, output=3, declared=3))
    assert vocab == GOOD
    assert "matches nn.Embedding size 3" in checks and "matches output size 3" in checks
    assert portable_vocab(vocab) == {
        "0": "User <ID> logged in",
        "1": "System started successfully",
        "2": "Error: <PATH> not found",
    }


def test_template_id_keys_are_refused_with_the_fix():
    with pytest.raises(PackagingError) as exc:
        validate_vocab({"1": 0, "2": 1, "3": 2})
    assert "not template strings" in exc.value.message
    assert "template_col='template'" in exc.value.hint


def test_engine_form_is_refused_as_input():
    with pytest.raises(PackagingError, match="inference-engine form"):
        validate_vocab({"0": "a", "1": "b"})


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ([0, 1, 1], "duplicated: [1]"),
        ([0, 1, 3], "missing: [2]"),
        ([1, 2, 3], "missing: [0]"),
        ([0, 1, "2"], "must be integers"),
        ([0, True, 2], "must be integers"),
    ],
)
def test_ids_must_be_a_permutation(values, needle):
    with pytest.raises(PackagingError) as exc:
        validate_vocab(dict(zip(["a", "b", "c"], values, strict=True)))
    assert needle in exc.value.message


def test_size_must_match_the_model():
    with pytest.raises(
        PackagingError, match=r"3 entries but the model has nn.Embedding size 30, output size 30"
    ):
        validate_vocab(GOOD, ModelSizes(embedding=30, output=30))
    with pytest.raises(PackagingError, match="model metadata says 4"):
        validate_vocab(GOOD, ModelSizes(declared=4))
    # an embedding with one extra (padding) row still passes when the output size matches
    validate_vocab(GOOD, ModelSizes(embedding=4, output=3))


@pytest.mark.parametrize(
    "data",
    [
        ["A1", "B2", "C3"],
        {"0": "A1", "1": "B2", "2": "C3"},
        {"A1": 0, "B2": 1, "C3": 2},
        {"2": "C3", "0": "A1", "1": "B2"},
    ],
)
def test_label_forms(data):
    labels, _ = validate_labels(data, ModelSizes(output=3))
    assert labels == ["A1", "B2", "C3"]


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"0": "A", "2": "B"}, "not a permutation"),
        (["A", "A", "B"], "share the label"),
        (["A", "", "B"], "non-empty strings"),
        ({"x": "A"}, "must map class indices"),
        ([], "is empty"),
        ("A", "non-empty JSON list"),
        (["A", "B"], "2 entries but the model has output size 3"),
    ],
)
def test_bad_labels(data, needle):
    with pytest.raises(PackagingError) as exc:
        validate_labels(data, ModelSizes(output=3))
    assert needle in exc.value.message


def test_prepare_assets_files(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps(GOOD), encoding="utf-8")
    (tmp_path / "labels.json").write_text(json.dumps(["x", "y", "z"]), encoding="utf-8")
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    prepared = prepare_assets(
        [
            parse_asset_arg(f"vocab={tmp_path / 'vocab.json'}"),
            parse_asset_arg(f"labels={tmp_path / 'labels.json'}"),
            AssetSpec("notes", tmp_path / "notes.txt"),
        ],
        vocab_sizes=ModelSizes(output=3),
        label_sizes=ModelSizes(output=3),
        portable=True,
    )
    files = {f: d for p in prepared for f, d in p.files.items()}
    assert json.loads(files["vocab.portable.json"])["1"] == "System started successfully"
    assert json.loads(files["labels.json"]) == {"0": "x", "1": "y", "2": "z"}
    assert files["notes.txt"] == b"hello"


@pytest.mark.parametrize(
    ("arg", "needle"),
    [
        ("vocab", "not name=path"),
        ("bad name=x.json", "not usable"),
        ("vocab=/nonexistent/vocab.json", "does not exist"),
    ],
)
def test_bad_asset_args(arg, needle):
    with pytest.raises(PackagingError, match=needle):
        prepare_assets([parse_asset_arg(arg)])


def test_invalid_json_and_portable_without_vocab(tmp_path):
    bad = tmp_path / "vocab.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(PackagingError, match="not valid JSON"):
        prepare_assets([AssetSpec("vocab", bad)])
    with pytest.raises(PackagingError, match="--portable needs a vocabulary"):
        prepare_assets([], portable=True)

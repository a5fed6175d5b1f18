"""The value sweep's inputs: floats shifted/scaled/edged, ids at their extremes, structure kept valid."""

from __future__ import annotations

import numpy as np

from onnxship.spec._inputs import parse_input_spec, sample_feeds
from onnxship.verify._values import VALUE_VARIANTS, is_structural, value_variants


def test_floats_ids_and_structure():
    specs = [
        parse_input_spec("x:batch=2 x 4:float32"),
        parse_input_spec("ids:batch=2 x 5:int64:3..9"),
        parse_input_spec("attention_mask:batch=2 x 5:int64:0..2"),
        parse_input_spec("flags:batch=2 x 5:bool"),
    ]
    feeds = sample_feeds(specs, seed=0)
    variants = dict(value_variants(specs, feeds))
    assert list(variants) == [v.label for v in VALUE_VARIANTS]
    np.testing.assert_allclose(variants["x-3"]["x"], feeds["x"] - 3, rtol=1e-6)
    np.testing.assert_allclose(variants["10x"]["x"], feeds["x"] * 10, rtol=1e-6)
    assert (variants["zeros"]["x"] == 0).all()
    assert (variants["x-3"]["ids"] == 3).all() and (variants["x+3"]["ids"] == 8).all()  # [LOW, HIGH)
    assert variants["10x"]["ids"] is feeds["ids"]
    for v in variants.values():  # masks and booleans keep their generated (valid) values
        assert v["attention_mask"] is feeds["attention_mask"] and v["flags"] is feeds["flags"]
        assert v["x"].dtype == np.float32 and v["ids"].dtype == np.int64


def test_declared_ranges_are_kept_and_structural_names():
    spec = parse_input_spec("image:batch=2 x 3:float32:0..1")
    feeds = sample_feeds([spec], seed=1)
    for _, v in value_variants([spec], feeds):
        assert (v["image"] >= 0).all() and (v["image"] < 1).all()
    assert is_structural(parse_input_spec("offsets:n=3:int64"))
    assert is_structural(parse_input_spec("lengths:n=3:int64"))
    assert not is_structural(parse_input_spec("input_ids:n=3:int64"))
    assert not is_structural(parse_input_spec("mask_logits:n=3:float32"))  # a float named like a mask is data


def test_only_structural_inputs_give_no_variants():
    spec = parse_input_spec("attention_mask:batch=2 x 5:int64:0..2")
    assert value_variants([spec], sample_feeds([spec], seed=0)) == []

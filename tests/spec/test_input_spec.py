"""The --input grammar: a table of good and bad specs."""

from __future__ import annotations

import numpy as np
import pytest

from onnxship import InputSpecError
from onnxship.spec import dim_table, parse_input_spec, sample_feeds, sweep_points

GOOD = [
    ("input_sequence:batch=2 x seq=10..64:int64:0..30", (2, 10), {0: "batch", 1: "seq"}, "int64", (0, 30)),
    ("image:batch=4x3x224x224:float32", (4, 3, 224, 224), {0: "batch"}, "float32", (None, None)),
    ("x:2x10:int64", (2, 10), {}, "int64", (None, None)),
    ("x: batch = 3 x 7 :fp16", (3, 7), {0: "batch"}, "float16", (None, None)),
    ("xdim:2xxlen=5:float32:-1.5..2.5", (2, 5), {1: "xlen"}, "float32", (-1.5, 2.5)),
    ("mask:batch=2 x seq=8:bool", (2, 8), {0: "batch", 1: "seq"}, "bool", (None, None)),
]


@pytest.mark.parametrize(("text", "shape", "axes", "dtype", "rng"), GOOD)
def test_good_specs(text, shape, axes, dtype, rng):
    spec = parse_input_spec(text)
    assert spec.shape == shape
    assert spec.dynamic_axes == axes
    assert spec.dtype == dtype
    assert (spec.low, spec.high) == rng
    assert parse_input_spec(str(spec)) == spec  # round-trips


BAD = [
    ("", "empty"),
    ("x", "fields"),
    ("x:2x10", "fields"),
    ("x:2x10:int64:0..5:extra", "neither a value kind"),
    ("x:2x10:int64:0..5:ids:1..2", "fields"),
    ("1x:2:int64", "not a valid input name"),
    ("x:2 x -3:int64", "cannot read a dim"),
    ("x:2 10:int64", "expected 'x'"),
    ("x::int64", "no dims"),
    ("x:2..5:int64", "must be named"),
    ("x:b=8..4:int64", "below its sample value"),
    ("x:2x0:float32", "size 0"),
    ("x:2:complex64", "unknown dtype"),
    ("x:2:int64:5..1", "empty"),
    ("x:2:int64:0..zz", "not LOW..HIGH"),
    ("x:2:int8:0..1000", "overflows int8"),
    ("x:2:uint8:-1..10", "overflows uint8"),
    ("x:2:int64:0.5..3", "not integral"),
    ("x:2:float16:0..1e9", "overflows float16"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_specs_name_the_problem(text, message):
    with pytest.raises(InputSpecError, match=message) as info:
        parse_input_spec(text)
    assert info.value.hint  # every error tells what to do


def test_shared_dim_must_agree():
    a = parse_input_spec("a:batch=2 x 3:float32")
    b = parse_input_spec("b:batch=4 x 3:float32")
    with pytest.raises(InputSpecError, match="declared twice"):
        dim_table([a, b])


def test_sweep_points_move_all_dims_and_cover_one_odd_and_max():
    spec = parse_input_spec("x:batch=2..16 x seq=10..64:int64:0..30")
    points = sweep_points([spec])
    assert points[0] == {"batch": 2, "seq": 10}
    assert {"batch": 1, "seq": 1} in points
    assert {"batch": 3, "seq": 11} in points
    assert {"batch": 16, "seq": 64} in points
    static = parse_input_spec("x:2x3:float32")
    assert sweep_points([static]) == [{}]


def test_sample_feeds_respect_ranges_and_dims():
    spec = parse_input_spec("ids:batch=2 x seq=5:int64:3..7")
    feeds = sample_feeds([spec], {"batch": 4, "seq": 9}, seed=1)
    arr = feeds["ids"]
    assert arr.shape == (4, 9) and arr.dtype == np.int64
    assert arr.min() >= 3 and arr.max() < 7
    again = sample_feeds([spec], {"batch": 4, "seq": 9}, seed=1)["ids"]
    np.testing.assert_array_equal(arr, again)

"""Value kinds, dim steps, derived and bare dims, the size-rule probe and dict-input binding (no exporter needed)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxship import InputSpecError
from onnxship.spec import (
    TensorSpec,
    dim_table,
    parse_dynamic_dim,
    parse_input_spec,
    parse_input_specs,
    sample_feeds,
    sweep_points,
)
from onnxship.spec._binding import bind_inputs
from onnxship.spec._probe import plan_sweep
from onnxship.spec._values import infer_kinds

GOOD = [
    ("attention_mask:batch=2 x seq=8:int64:mask", "mask", None, None),
    ("m:batch=2 x seq=8:bool:mask", "mask", None, None),
    ("offsets:bags=3:int64:offsets(n)", "offsets", "n", None),
    ("lens:batch=2:int32:lengths(seq)", "lengths", "seq", None),
    ("x:batch=2 x 4:float32:uniform:0..1", "uniform", None, (0.0, 1.0)),
    ("x:batch=2 x 4:float32:0..255:image", "image", None, (0.0, 255.0)),
    ("pos:batch=2 x seq=5:int64:positions(past)", "positions", "past", None),
    ("ids:2 x 5:int64:ids:0..30", "ids", None, (0.0, 30.0)),
]


@pytest.mark.parametrize(("text", "kind", "of", "rng"), GOOD)
def test_kinds_parse_and_round_trip(text, kind, of, rng):
    spec = parse_input_spec(text)
    assert (spec.kind, spec.of) == (kind, of)
    assert (spec.low, spec.high) == (rng or (None, None))
    assert parse_input_spec(str(spec)) == spec
    assert TensorSpec.from_dict(spec.to_dict()) == spec


BAD = [
    ("x:2:int64:bogus", "neither a value kind"),
    ("x:2:float32:offsets(n)", "needs an integer dtype"),
    ("x:2:int64:image", "needs a float dtype"),
    ("x:2:int64:offsets", "needs the dim it refers to"),
    ("x:2:int64:mask(n)", "takes no argument"),
    ("x:2:int64:mask:ids", "two value kinds"),
    ("x:h=20/16:float32", "not a multiple of its step"),
    ("x:20/16:float32", "must be named"),
    ("x:t=t+1:float32", "defined by itself"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_kinds_and_dims_name_the_problem(text, message):
    with pytest.raises(InputSpecError, match=message) as info:
        parse_input_spec(text)
    assert info.value.hint


def test_bare_and_derived_dims_resolve_across_inputs():
    specs = parse_input_specs(
        [
            "x:batch=2 x seq=3 x 16:float32",
            "past_k:batch x 1 x past=4 x 16:float32",
            "attention_mask:batch x total=past+seq:int64:mask",
        ]
    )
    assert specs[1].shape == (2, 1, 4, 16)
    assert specs[2].shape == (2, 7)
    assert str(specs[2]) == "attention_mask:batch=2 x total=past+seq:int64:mask"
    assert TensorSpec.from_dict(specs[2].to_dict()).dims == specs[2].dims
    with pytest.raises(InputSpecError, match="has no size"):
        parse_input_specs(["m:batch x 3:int64"])
    with pytest.raises(InputSpecError, match="which no input declares"):
        parse_input_specs(["m:b=2 x t=a+s:int64", "x:b=2 x s=3:float32"])
    with pytest.raises(InputSpecError, match="different sizes"):
        parse_input_specs(["a:h=32/16:float32", "b:h=32/8:float32"])


def test_python_api_dims():
    assert parse_dynamic_dim("height..512/16", 224).step == 16
    d = parse_dynamic_dim("total=past+seq", 7)
    assert (d.parts, d.value) == (("past", "seq"), 7)
    with pytest.raises(InputSpecError, match="must be"):
        parse_dynamic_dim("9lives", 3)


def test_sweep_uses_multiples_and_moves_each_dim_alone():
    spec = parse_input_spec("image:batch=2 x 3 x height=32..64/16 x width=32..64/16:float32")
    points = sweep_points([spec])
    assert points[0] == {"batch": 2, "height": 32, "width": 32}
    assert all(p["height"] % 16 == 0 and p["width"] % 16 == 0 for p in points)
    assert {"batch": 1, "height": 16, "width": 16} in points
    alone = [p for p in points if sum(p[k] != points[0][k] for k in p) == 1]
    assert {next(k for k in p if p[k] != points[0][k]) for p in alone} == {"batch", "height", "width"}


def test_sweep_keeps_derived_dims_consistent():
    specs = parse_input_specs(
        ["x:batch=2 x seq=3:float32", "p:batch x past=4:float32", "m:batch x t=past+seq+1:int64"]
    )
    points = sweep_points(specs)
    assert len(points) >= 5
    assert all(p["t"] == p["past"] + p["seq"] + 1 for p in points)
    feeds = sample_feeds(specs, points[2], seed=0)
    assert feeds["m"].shape == (points[2]["batch"], points[2]["t"])


@pytest.mark.parametrize("shape", [(1, 1), (4, 9), (3, 2, 5), (7,)])
@pytest.mark.parametrize("dtype", ["int64", "bool", "float32"])
def test_masks_are_padding_prefixes_with_a_valid_first_token(shape, dtype):
    dims = " x ".join(f"d{i}={n}" for i, n in enumerate(shape))
    spec = parse_input_spec(f"mask:{dims}:{dtype}:mask")
    for seed in range(5):
        m = sample_feeds([spec], seed=seed)["mask"].astype(np.int64)
        assert m.shape == shape
        rows = m.reshape(-1, shape[-1])
        assert (rows[:, 0] == 1).all()  # never a masked first token, >= 1 valid token per row
        assert (np.diff(rows, axis=1) <= 0).all()  # ones then zeros
        assert rows[0].all()  # the longest row fills the padded length


def test_mask_named_int_inputs_are_inferred_with_a_note():
    specs, notes = infer_kinds(parse_input_specs(["input_ids:b=2 x s=6:int64", "attention_mask:b x s:int64"]))
    assert specs[1].kind == "mask" and specs[0].kind is None
    assert len(notes) == 1 and "attention_mask" in notes[0] and "mask" in notes[0]
    # generation treats such an input as a mask even before inference
    m = sample_feeds(parse_input_specs(["attention_mask:b=6 x s=9:int64"]), seed=3)["attention_mask"]
    assert (m[:, 0] == 1).all()
    # a sample that is not 0/1 is not called a mask
    odd = parse_input_spec("score_mask:b=2 x s=3:int64")
    odd.meta["sample"] = np.array([[0, 5, 1], [1, 1, 1]])
    assert infer_kinds([odd])[0][0].kind is None


def test_structural_integer_kinds_are_valid_at_every_size():
    specs = parse_input_specs(
        [
            "tokens:n=8:int64:0..40",
            "offsets:bags=3:int64:offsets(n)",
            "ids:batch=4 x seq=6:int64",
            "lengths:batch:int64:lengths(seq)",
            "gather:batch x k=2:int64:indices(seq)",
            "pos:batch x seq:int64:positions",
        ]
    )
    for point in sweep_points(specs) + [{"n": 3, "bags": 9}]:
        f = sample_feeds(specs, point, seed=7)
        n, seq = f["tokens"].shape[0], f["ids"].shape[1]
        off = f["offsets"]
        assert off[0] == 0 and (np.diff(off) >= 0).all() and off.max() < n
        assert f["lengths"][0] == seq and f["lengths"].min() >= 1 and (np.diff(f["lengths"]) <= 0).all()
        assert f["gather"].min() >= 0 and f["gather"].max() < seq
        assert (f["pos"] == np.arange(seq)).all()


def test_offsets_and_lengths_are_inferred_from_names():
    specs, notes = infer_kinds(parse_input_specs(["tokens:n=8:int64", "offsets:bags=3:int64"]))
    assert (specs[1].kind, specs[1].of) == ("offsets", "n")
    specs, notes = infer_kinds(parse_input_specs(["x:b=2 x seq=9 x 4:float32", "lengths:b:int64"]))
    assert (specs[1].kind, specs[1].of) == ("lengths", "seq") and notes


def test_float_kinds_stay_in_range():
    specs = parse_input_specs(
        ["img:b=4 x 3 x 8 x 8:float32:image", "p:b x 5:float32:positive", "n:b x 5:float32:normal:-2..2"]
    )
    f = sample_feeds(specs, seed=0)
    assert f["img"].min() >= 0 and f["img"].max() < 1
    assert f["p"].min() > 0
    assert f["n"].min() >= -2 and f["n"].max() < 2


def test_the_user_sample_is_used_exactly_at_its_shape():
    torch = pytest.importorskip("torch")
    from onnxship.export._inputs_from_model import specs_from_samples

    tokens, offsets = torch.tensor([3, 1, 4, 1, 5, 9, 2]), torch.tensor([0, 2, 6])
    specs, _ = specs_from_samples(
        {"tokens": tokens, "offsets": offsets}, {"tokens": {0: "n"}, "offsets": {0: "bags"}}
    )
    f = sample_feeds(specs, seed=11)
    np.testing.assert_array_equal(f["tokens"], tokens.numpy())
    np.testing.assert_array_equal(f["offsets"], offsets.numpy())
    specs, _ = infer_kinds(specs)
    other = sample_feeds(specs, {"n": 12, "bags": 4}, seed=11)
    assert other["offsets"][0] == 0 and other["offsets"].max() < 12
    with pytest.raises(InputSpecError, match="consistent"):
        specs_from_samples(
            {"x": torch.zeros(2, 3), "p": torch.zeros(2, 4), "m": torch.ones(2, 9)},
            {"x": {1: "seq"}, "p": {1: "past"}, "m": {1: "total=seq+past"}},
        )


# ------------------------------------------------------------------------------------------------ probe


class FakeReference:
    """A 'model' that accepts only sizes following a rule on axis 2 and 3 (like a UNet or a ViT)."""

    def __init__(self, rule):
        self.rule, self.calls = rule, 0

    def infer(self, feeds):
        self.calls += 1
        x = feeds["image"]
        if not (self.rule(x.shape[2]) and self.rule(x.shape[3])):
            raise RuntimeError(f"Sizes of tensors must match: got {x.shape}")
        return {"y": x.sum(axis=(1, 2, 3))}


def _image_spec(text="image:batch=2 x 3 x height=32 x width=32:float32"):
    return parse_input_specs([text])


def test_probe_finds_a_multiple_rule_and_sweeps_only_multiples():
    plan = plan_sweep(FakeReference(lambda s: s % 16 == 0), _image_spec())
    assert plan.rules == {"height": "a multiple of 16", "width": "a multiple of 16"}
    assert any("'height' must be a multiple of 16" in n for n in plan.notes)
    assert all(p["height"] % 16 == 0 and p["width"] % 16 == 0 for p in plan.runnable)
    assert {p["batch"] for p in plan.runnable} >= {1, 2, 3}
    assert plan.unrunnable and all(
        p in plan.points for p in plan.unrunnable
    )  # reported, not verified  # the batch axis is still checked
    assert dim_table(plan.specs)["height"].step == 16 and not plan.problem


def test_probe_finds_a_minimum_size():
    plan = plan_sweep(FakeReference(lambda s: s >= 12), _image_spec())
    assert plan.rules["height"] == "at least 12"
    assert dim_table(plan.specs)["height"].min == 12
    assert all(p["height"] >= 12 for p in plan.runnable) and len(plan.runnable) >= 4


def test_probe_names_a_dim_that_never_moves():
    plan = plan_sweep(FakeReference(lambda s: s == 32), _image_spec())
    assert "could not make valid inputs" in plan.problem and "height" in plan.problem
    assert "batch" not in plan.stuck


def test_probe_costs_nothing_when_every_point_runs():
    ref = FakeReference(lambda s: True)
    plan = plan_sweep(ref, _image_spec())
    assert plan.points == sweep_points(_image_spec()) and not plan.notes and not plan.unrunnable
    assert (
        ref.calls == len(plan.points) - 1 + 3
    )  # each other point once, 3 generated draws at the export shape


# ------------------------------------------------------------------------------------------------ dict inputs


class _DictForward:
    def forward(self, inputs: dict, scale):
        return inputs, scale


def test_dotted_names_bind_to_a_dict_parameter():
    b = bind_inputs(_DictForward(), ["inputs.image", "inputs.meta.extra", "scale"])
    assert b.order == ("inputs.image", "inputs.meta.extra", "scale")
    args, kwargs = b.call_args({"inputs.image": 1, "inputs.meta.extra": 2, "scale": 3})
    assert args == ({"image": 1, "meta": {"extra": 2}}, 3) and not kwargs
    assert not b.by_position


class FakeKV:
    """Runs only when the mask covers past + new tokens, and (alias) when ``mseq`` equals ``seq``."""

    def infer(self, feeds):
        x, past, mask = feeds["x"], feeds["past"], feeds["mask"]
        if mask.shape[1] != past.shape[1] + x.shape[1]:
            raise RuntimeError("The size of tensor a must match the size of tensor b")
        if "tags" in feeds and feeds["tags"].shape[1] != x.shape[1]:
            raise RuntimeError("shape mismatch")
        return {"y": x.sum(axis=1)}


def test_probe_infers_sums_and_aliases_between_dims():
    specs = parse_input_specs(
        [
            "x:batch=2 x seq=3:float32",
            "past:batch x past=4:float32",
            "mask:batch x total=7:int64:mask",
            "tags:batch x mseq=3:int64",
        ]
    )
    plan = plan_sweep(FakeKV(), specs)
    table = dim_table(plan.specs)
    assert set(table["total"].parts) == {"past", "seq"}
    assert table["mseq"].parts == ("seq",) or table["seq"].parts == ("mseq",)
    assert not plan.problem and not plan.dropped
    assert all(p["total"] == p["past"] + p["seq"] and p["mseq"] == p["seq"] for p in plan.runnable)
    assert {p["seq"] for p in plan.runnable} != {3} and {p["past"] for p in plan.runnable} != {4}
    assert any("'total' must equal" in n for n in plan.notes)


def test_position_ids_are_inferred_and_structural_kinds_are_marked():
    from onnxship.spec._values import is_structural

    specs, notes = infer_kinds(parse_input_specs(["input_ids:b=2 x s=5:int64", "position_ids:b x s:int64"]))
    assert specs[1].kind == "positions" and notes
    assert is_structural(specs[1]) and not is_structural(specs[0])
    assert (sample_feeds(specs, {"b": 3, "s": 7})["position_ids"] == np.arange(7)).all()
    # the Python API builds the same specs from TensorSpec/DimSpec
    from onnxship.spec import DimSpec

    mask = TensorSpec(
        "attention_mask",
        (DimSpec(0, "b", bare=True), DimSpec(0, "t", parts=("s",), offset=2)),
        "int64",
        kind="mask",
    )
    resolved = parse_input_specs([specs[0], mask])
    assert resolved[1].shape == (2, 7)


def test_kinds_are_declared_with_sample_tensors():
    torch = pytest.importorskip("torch")
    from onnxship.export._inputs_from_model import specs_from_samples

    specs, _ = specs_from_samples(
        {"items": torch.arange(6), "starts": torch.tensor([0, 4])},
        {"items": {0: "n"}, "starts": {0: "bags"}},
        {"starts": "offsets(n)"},
    )
    assert (specs[1].kind, specs[1].of, specs[1].low) == ("offsets", "n", None)
    with pytest.raises(InputSpecError, match="needs an integer dtype"):
        specs_from_samples({"x": torch.zeros(2)}, None, {"x": "offsets(n)"})


def test_probe_finds_a_window_multiple_that_is_not_a_power_of_two():
    plan = plan_sweep(
        FakeReference(lambda s: s % 28 == 0), _image_spec("image:batch=2 x 3 x height=56 x width=56:float32")
    )
    assert plan.rules["height"] == "a multiple of 28"
    assert all(p["height"] % 28 == 0 for p in plan.runnable) and len(plan.runnable) >= 4


def test_id_ranges_come_from_the_embedding_each_input_feeds():
    torch = pytest.importorskip("torch")
    from onnxship.export._inputs_from_model import default_int_ranges

    class TwoTables(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.words, self.types = torch.nn.Embedding(50, 4), torch.nn.Embedding(2, 4)

        def forward(self, input_ids, token_type_ids):
            return self.words(input_ids.reshape(-1)) + self.types(token_type_ids.flatten())

    specs = parse_input_specs(["input_ids:b=2 x s=5:int64", "token_type_ids:b x s:int64"])
    out, notes = default_int_ranges(TwoTables(), specs)
    assert [(s.low, s.high) for s in out] == [(0, 50), (0, 2)]
    assert "the size of the nn.Embedding it feeds" in notes[0]

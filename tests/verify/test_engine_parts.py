"""Building blocks of the verification engine: policy, streaming metrics, sampling, data sources, preprocessing."""

from __future__ import annotations

import numpy as np
import pytest

from onnxship._errors import ConfigError
from onnxship.spec import parse_input_spec
from onnxship.verify import (
    NpzSource,
    OutputAccumulator,
    PreprocessConfig,
    SampleConfig,
    TableSource,
    Tolerance,
    add_hard_samples,
    compare_arrays,
    open_source,
    plan_samples,
    preprocess_images,
    resolve_policy,
)

SEQ = parse_input_spec("input_sequence:batch=2..16 x seq=10..32:int64:0..30")


# ------------------------------------------------------------------------------------------------ policy
@pytest.mark.parametrize(
    ("precision", "task", "elementwise", "mse_mean", "cosine_min", "top1"),
    [
        ("fp32", None, (1e-4, 1e-3), 1e-4, None, 0.01),
        ("fp16", "classification", None, 5e-4, 0.99, 0.02),
        ("int8", "classification", None, None, None, 0.02),
        ("int8", None, None, None, 0.98, 0.02),
    ],
)
def test_policy_defaults_follow_the_seed(precision, task, elementwise, mse_mean, cosine_min, top1):
    p = resolve_policy(precision, task)
    assert (p.elementwise.atol, p.elementwise.rtol) == elementwise if elementwise else p.elementwise is None
    assert p.mse_mean == mse_mean and p.cosine_min == cosine_min and p.task.top1_mismatch_rate == top1


def test_policy_overrides_and_bad_values():
    p = resolve_policy(
        "fp32",
        "classification",
        tolerance={"atol": 1e-3, "rtol": 0},
        per_output={"logits": 0.5},
        thresholds={"mse_mean": 1e-2, "top1_mismatch_rate": 0.1},
    )
    assert p.tolerance_for("logits") == Tolerance(0.5, 0.0) and p.tolerance_for("other") == Tolerance(1e-3, 0)
    gate = p.task_gate("classification")
    assert gate.top1_mismatch_rate == 0.1 and gate.prob_mse_mean == 1e-2  # MSE moves onto probabilities
    with pytest.raises(ConfigError, match="unknown precision 'bf8'"):
        resolve_policy("bf8")
    with pytest.raises(ConfigError, match="unknown gate threshold 'mse'"):
        resolve_policy("fp32", thresholds={"mse": 1.0})
    with pytest.raises(ConfigError, match="not understood"):
        resolve_policy("fp32", tolerance="tight")


# ------------------------------------------------------------------------------------------------ metrics
def test_streaming_stats_match_the_one_shot_comparison():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((40, 7)).astype(np.float32)
    got = ref + rng.normal(scale=1e-4, size=ref.shape).astype(np.float32)
    tol = Tolerance(1e-4, 1e-3)
    acc = OutputAccumulator("y", tol)
    for k in range(0, 40, 16):  # three uneven batches
        acc.update(ref[k : k + 16], got[k : k + 16], indices=np.arange(k, min(k + 16, 40)))
    s = acc.summary(resolve_policy("fp32"))
    one = compare_arrays("y", ref, got, tol)
    assert s.max_abs == pytest.approx(one.max_abs) and s.min_passing_atol == pytest.approx(
        one.min_passing_atol
    )
    assert s.mismatch_count == one.mismatch_count and s.passed == one.passed
    assert sum(s.histogram["counts"]) + s.histogram["zeros"] == s.elements == ref.size
    assert s.samples == 40 and acc.worst()[0].max_abs == pytest.approx(s.max_abs)
    worst_row = int(np.abs(got - ref).max(axis=1).argmax())
    assert acc.worst()[0].index == worst_row


def test_nan_in_one_engine_and_shape_mismatch_fail():
    ref = np.ones((4, 3), np.float32)
    got = ref.copy()
    got[2, 1] = np.nan
    acc = OutputAccumulator("y", Tolerance())
    acc.update(ref, got)
    s = acc.summary(resolve_policy("fp32"))
    assert not s.passed and s.nan_mismatches == 1 and "NaN" in s.failures[0]
    acc2 = OutputAccumulator("y", Tolerance())
    acc2.update(ref, ref[:, :2])
    s2 = acc2.summary(resolve_policy("fp32"))
    assert not s2.passed and "shape [4, 2] != reference [4, 3]" in s2.failures[0]


def test_fp16_gate_uses_mse_and_cosine_not_elementwise():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((64, 10))
    near = ref + rng.normal(scale=3e-3, size=ref.shape)  # fails fp32 elementwise, fine for fp16
    for precision, ok in (("fp32", False), ("fp16", True)):
        policy = resolve_policy(precision)
        acc = OutputAccumulator("y", policy.tolerance_for("y"))
        acc.update(ref, near)
        assert acc.summary(policy).passed is ok


# ------------------------------------------------------------------------------------------------ sampling
def test_sampling_modes():
    labels = np.repeat(np.arange(10), 5)
    smoke = plan_samples(50, labels, SampleConfig(mode="smoke", sample_count=8, seed=3))
    again = plan_samples(50, labels, SampleConfig(mode="smoke", sample_count=8, seed=3))
    assert smoke.count == 8 and np.array_equal(smoke.indices, again.indices)
    cov = plan_samples(
        50, labels, SampleConfig(mode="coverage", per_class_k=2, min_classes=20, max_total=100)
    )
    assert cov.count == 20 and cov.sampled_classes == 10
    assert all((labels[cov.indices] == c).sum() == 2 for c in range(10))
    assert any("fewer than min_classes=20" in n for n in cov.notes)
    capped = plan_samples(50, labels, SampleConfig(mode="coverage", per_class_k=2, max_total=7))
    assert capped.count <= 7 and capped.sampled_classes == 3
    full = plan_samples(50, labels, SampleConfig(mode="full"))
    assert full.indices is None and full.count == 50
    with pytest.raises(ConfigError, match="unknown mode 'all'"):
        SampleConfig(mode="all")


def test_hardness_bins_add_samples_near_the_boundary():
    margins = np.linspace(0, 1, 100)  # sample i has margin i/99
    plan = plan_samples(100, None, SampleConfig(mode="smoke", sample_count=5))
    cfg = SampleConfig(mode="smoke", sample_count=5, hardness_bins=(0.0, 0.5, 0.9, 1.0), hard_per_bin=3)
    plan = add_hard_samples(plan, lambda idx: margins[idx], cfg)
    assert plan.count == 14 and [b["added"] for b in plan.hard_bins] == [3, 3, 3]
    hardest = [i for i in plan.indices if 1 - margins[i] >= 0.9]
    assert len(hardest) >= 3


# ------------------------------------------------------------------------------------------------ data sources
def test_npz_source_checks_names_dtypes_and_lengths(tmp_path):
    x = np.random.default_rng(0).integers(0, 30, (10, 10)).astype(np.int64)
    good = tmp_path / "good.npz"
    np.savez(good, input_sequence=x.astype(np.int32), next_event=np.arange(10))
    src = open_source(good, [SEQ])
    assert isinstance(src, NpzSource) and len(src) == 10 and src.labels() is not None
    batches = list(src.batches(np.array([1, 3, 5]), 2))
    assert [len(b) for b in batches] == [2, 1] and batches[0].feeds["input_sequence"].dtype == np.int64
    np.savez(tmp_path / "names.npz", tokens=x)
    with pytest.raises(ConfigError, match=r"do not match the model inputs \['input_sequence'\]"):
        open_source(tmp_path / "names.npz", [SEQ])
    np.savez(tmp_path / "dtype.npz", input_sequence=x.astype(np.float32))
    with pytest.raises(ConfigError, match="is float32 but the model expects int64"):
        open_source(tmp_path / "dtype.npz", [SEQ])
    np.savez(tmp_path / "len.npz", input_sequence=x, label=np.arange(3))
    with pytest.raises(ConfigError, match="different sample counts"):
        open_source(tmp_path / "len.npz", [SEQ])


def test_csv_and_parquet_sequences_stream_the_selected_rows(tmp_path):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 30, (25, 10))
    df = pd.DataFrame({"input_sequence": [" ".join(map(str, r)) for r in rows], "next_event": rows[:, 0]})
    df.to_csv(tmp_path / "seq.csv", index=False)
    pd.DataFrame({"input_sequence": [list(map(int, r)) for r in rows], "next_event": rows[:, 0]}).to_parquet(
        tmp_path / "seq.parquet"
    )
    for name in ("seq.csv", "seq.parquet"):
        src = open_source(tmp_path / name, [SEQ])
        assert isinstance(src, TableSource) and len(src) == 25
        picked = np.array([0, 7, 8, 24])
        got = list(src.batches(picked, 3))
        assert [b.indices.tolist() for b in got] == [[0, 7, 8], [24]]
        assert np.array_equal(got[0].feeds["input_sequence"], rows[[0, 7, 8]])
        assert np.array_equal(got[1].labels, rows[[24], 0])
        assert sum(len(b) for b in src.batches(None, 10)) == 25
    pd.DataFrame({"tokens": ["1 2"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ConfigError, match=r"lack the model inputs \['input_sequence'\]"):
        open_source(tmp_path / "bad.csv", [SEQ])


def _png(path, color, size=(40, 30)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_image_folder_and_the_shared_preprocess(tmp_path):
    pytest.importorskip("PIL")
    spec = parse_input_spec("image:batch=2..8 x 3 x 16 x 16:float32")
    for c, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        for k in range(3):
            _png(tmp_path / "imgs" / c / f"{k}.png", color)
    src = open_source(tmp_path / "imgs", [spec])
    assert src.classes == ["cat", "dog"] and src.labels().tolist() == [0, 0, 0, 1, 1, 1]
    batch = next(iter(src.batches(np.array([0, 4]), 8)))
    x = batch.feeds["image"]
    assert x.shape == (2, 3, 16, 16) and x.dtype == np.float32 and batch.ids == ["cat/0.png", "dog/1.png"]
    cfg = PreprocessConfig(size=16)
    red = (np.array([1.0, 0.0, 0.0]) - np.array(cfg.mean)) / np.array(cfg.std)
    assert np.allclose(x[0].mean(axis=(1, 2)), red, atol=1e-5)
    assert np.array_equal(
        preprocess_images([tmp_path / "imgs/cat/0.png"], cfg)[0], x[0]
    )  # one function, same bytes
    nhwc = preprocess_images([tmp_path / "imgs/cat/0.png"], PreprocessConfig(size=16, layout="NHWC"))
    assert nhwc.shape == (1, 16, 16, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no class sub-folders"):
        open_source(tmp_path / "empty", [spec])
    (tmp_path / "noimg" / "cat").mkdir(parents=True)
    with pytest.raises(ConfigError, match="but no images"):
        open_source(tmp_path / "noimg", [spec])
    (tmp_path / "imgs" / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match="cannot read image"):
        list(open_source(tmp_path / "imgs", [spec]).batches(None, 16))


def test_open_source_rejects_unknown_paths(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        open_source(tmp_path / "nope.npz", [SEQ])
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(ConfigError, match="unsupported data file 'x.txt'"):
        open_source(tmp_path / "x.txt", [SEQ])

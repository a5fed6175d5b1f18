"""Findings on real log shapes: a run that diverged at the start, clean runs (no alarm), and each pathology on its own."""

from __future__ import annotations

import numpy as np
import pytest

from onnxship._errors import ConfigError
from onnxship.doctor import TrainLogConfig, diagnose_train_log
from onnxship.doctor._schedule import classify_decay

CLEAN_FILES = [
    "clean_trainer_state.json",
    "clean_cosine.jsonl",
    "clean_lightning_metrics.csv",
    "clean_mlflow_stepdecay.csv",
    "clean_large_scale_stdout.log",
    "clean_fp16_stdout.log",
]


def _kinds(result, alarms_only=False):
    return {f.kind for f in (result.alarms if alarms_only else result.findings)}


def _by_kind(result, kind):
    [f] = [f for f in result.findings if f.kind == kind]
    return f


@pytest.fixture(scope="module")
def diverging_start(data):
    return diagnose_train_log(data / "diverging_start_trainer_stdout.log")


def test_diverging_start_findings(diverging_start):
    assert _kinds(diverging_start, alarms_only=True) == {
        "unstable_start",
        "grad_explosion",
        "loss_spike",
        "loss_zero",
        "vanishing_gradients",
    }
    assert not diverging_start


def test_diverging_start_unstable_start_is_the_first_epochs(diverging_start):
    f = _by_kind(diverging_start, "unstable_start")
    assert f.evidence["epoch"][0] == 0.14 and f.evidence["grad_norm"][0] == 1495043.625
    assert f.evidence["epoch"][-1] <= 0.2
    assert any("Clip gradients at max-norm" in a for a in f.advice)
    assert any("already has a learning-rate warm-up" in a for a in f.advice)  # lr rises 1.5e-05 -> 3.4e-05


def test_diverging_start_spike_at_epoch_022(diverging_start):
    spike = _by_kind(diverging_start, "loss_spike")
    assert spike.evidence["epoch"] == [0.22] and spike.evidence["loss"] == [4.6215]
    assert "epoch 0.22" in spike.title
    assert any("22% into epoch 1" in a for a in spike.advice)  # check the data at the spike's position
    assert any("coincides with a grad_norm explosion" in a for a in spike.advice)
    explosion = _by_kind(diverging_start, "grad_explosion")
    assert explosion.evidence["epoch"] == [0.22]


def test_diverging_start_zero_loss_vanishing_phases_schedule(diverging_start):
    zero = _by_kind(diverging_start, "loss_zero")
    assert zero.evidence["epoch"] == [0.31, 0.32, 0.33]
    assert any("rounds the logged loss to 4 decimals" in a for a in zero.advice)
    vanish = _by_kind(diverging_start, "vanishing_gradients")
    assert any("loss is near zero" in a for a in vanish.advice)
    assert [p.name for p in diverging_start.phases] == ["unstable start", "fast descent", "convergence"]
    first, descent, _ = diverging_start.phases
    assert diverging_start.log.epoch[first.first] == 0.14 and diverging_start.log.epoch[descent.first] == 0.17
    assert diverging_start.schedule.startswith("warm-up still rising")
    # the suggested max-norm comes from the stable grad_norm, far below the 1.5e6 of the start
    assert 0.1 < diverging_start.suggested_max_norm < 10


@pytest.mark.parametrize("name", CLEAN_FILES)
def test_clean_fixture_logs_raise_no_alarm(data, name):
    result = diagnose_train_log(data / name)
    assert result.alarms == [], [(f.code, f.title, f.detail) for f in result.alarms]
    assert "phases" in _kinds(result) and "lr_schedule" in _kinds(result)


def test_real_deeplog_recipe_logs(data):
    # written by onnxship's DeepLog recipe on loghub BGL_2k (see make_fixtures.py)
    clean = diagnose_train_log(data / "deeplog_bgl_train.jsonl")
    assert clean.alarms == [] and clean.schedule == "constant at 0.01"
    assert [p.name for p in clean.phases] == ["start", "fast descent", "convergence"]
    hot = diagnose_train_log(data / "deeplog_bgl_hot_lr.jsonl")  # lr 0.5, clipping off
    assert _kinds(hot, alarms_only=True) == {"grad_explosion"}
    assert _by_kind(hot, "grad_explosion").evidence["step"] == [59]
    assert hot.suggested_max_norm < 2  # the stable grad_norm, not the 19.2 of the explosion


def _clean_shape(shape: str, rng: np.random.Generator):
    n = 300
    t = np.arange(n, dtype=float)
    noise = lambda s: np.exp(rng.normal(0, s, n))  # noqa: E731
    if shape == "per-step noisy classification":
        return (2.3 * np.exp(-t / 60) + 0.4) * noise(0.15), 2.0 * noise(0.3), np.full(n, 1e-3)
    if shape == "slow power law, rising grad_norm":
        return 5.0 * (1 + t) ** -0.3 * noise(0.03), (0.5 + t / 300) * noise(0.1), 1e-4 * (1 - t / n)
    if shape == "tiny loss scale":
        return (3e-6 * np.exp(-t / 80) + 1e-7) * noise(0.05), 1e-8 * noise(0.2), np.full(n, 0.1)
    if shape == "plateau then descent":
        base = np.where(t < 100, 1.0, 1.0 * np.exp(-(t - 100) / 50) + 0.1)
        return base * noise(0.03), (1 + 2 * (t > 100)) * noise(0.1), np.full(n, 3e-4)
    if shape == "negative loss (log-likelihood)":
        return -2.0 * (1 - np.exp(-t / 70)) + 0.5 + rng.normal(0, 0.02, n), 1.0 * noise(0.1), np.full(n, 1e-3)
    raise AssertionError(shape)


@pytest.mark.parametrize(
    "shape",
    [
        "per-step noisy classification",
        "slow power law, rising grad_norm",
        "tiny loss scale",
        "plateau then descent",
        "negative loss (log-likelihood)",
    ],
)
def test_clean_synthetic_shapes_raise_no_alarm(write_jsonl, shape):
    loss, gn, lr = _clean_shape(shape, np.random.default_rng(7))
    result = diagnose_train_log(write_jsonl(loss, gn, lr))
    assert result.alarms == [], [(f.code, f.title, f.detail) for f in result.alarms]


def _spiky(rng: np.random.Generator, scale: float):
    n = 120
    t = np.arange(n, dtype=float)
    loss = (1.5 * np.exp(-t / 40) + 0.3) * np.exp(rng.normal(0, 0.03, n)) * scale
    gn = 1.0 * np.exp(rng.normal(0, 0.1, n)) * scale
    loss[70] *= 8.0
    gn[70] *= 40.0
    gn[95] *= 25.0
    return loss, gn, np.full(n, 1e-3)


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e5])
def test_findings_do_not_depend_on_the_scale(write_jsonl, scale):
    loss, gn, lr = _spiky(np.random.default_rng(3), scale)
    result = diagnose_train_log(write_jsonl(loss, gn, lr))
    assert _kinds(result, alarms_only=True) == {"grad_explosion", "loss_spike"}
    assert _by_kind(result, "grad_explosion").evidence["step"] == [710, 960]
    assert _by_kind(result, "loss_spike").evidence["step"] == [710]
    assert result.suggested_max_norm == pytest.approx(1.2 * scale, rel=0.25)


def test_divergence_to_nan(data):
    result = diagnose_train_log(data / "diverging_onnxship.jsonl")
    critical = [f for f in result.findings if f.severity == "critical"]
    assert critical and critical[0].kind == "nonfinite" and "step 1000" in critical[0].title
    assert "loss_rising" in _kinds(result) and "grad_explosion" in _kinds(result)
    assert _by_kind(result, "grad_explosion").evidence["step"][0] == 820  # where the run-away starts
    assert result.suggested_max_norm == pytest.approx(1.3, abs=0.3)  # from before the run-away, not from it


def test_rare_fp16_overflow_is_info_only(data):
    result = diagnose_train_log(data / "clean_fp16_stdout.log")
    f = _by_kind(result, "nonfinite")
    assert f.severity == "info" and "GradScaler" in f.advice[0]


def test_vanishing_gradients_with_a_high_loss(write_jsonl):
    rng = np.random.default_rng(1)
    n = 100
    loss = 2.3 * np.exp(rng.normal(0, 0.02, n))
    gn = np.geomspace(1.0, 1e-6, n)
    result = diagnose_train_log(write_jsonl(loss, gn, np.full(n, 1e-3)))
    f = _by_kind(result, "vanishing_gradients")
    assert f.alarm and not any("loss is near zero" in a for a in f.advice)
    assert "phases" in _kinds(result) and result.phases[0].name == "no clear descent"


def test_zero_grad_norm_and_zero_lr(write_jsonl):
    n = 20
    result = diagnose_train_log(write_jsonl(np.full(n, 0.7), np.zeros(n), np.zeros(n)))
    assert {"vanishing_gradients", "lr_schedule"} <= _kinds(result, alarms_only=True)
    assert "exactly 0" in _by_kind(result, "vanishing_gradients").title


def test_short_log_is_described_not_judged(write_jsonl):
    result = diagnose_train_log(write_jsonl(np.array([2.0, 1.5, 1.2])))
    assert _kinds(result) == {"short_log"} and bool(result)


@pytest.mark.parametrize(
    ("curve", "expected"),
    [
        (lambda u: 1 - 0.9 * u, "linear decay"),
        (lambda u: 0.5 * (1 + np.cos(np.pi * u)), "cosine decay"),
        (lambda u: 0.5 * (1 + np.cos(np.pi * u * 0.6)), "cosine decay"),  # log stops before the schedule ends
        (lambda u: np.exp(-4 * u), "exponential decay"),
        (lambda u: 0.1 ** np.floor(u * 2.999), "step decay"),
        (lambda u: 1 - 0.5 * np.abs(np.sin(6 * u)), "irregular"),
    ],
)
def test_decay_shapes(curve, expected):
    t = np.arange(0, 500, 5, dtype=float)
    assert classify_decay(t, curve(t / t[-1])).startswith(expected)


def test_fine_grained_decay_is_not_a_step_schedule():
    t = np.arange(50_000, dtype=float)  # per-step lr logging: every change is tiny, none is a step
    assert classify_decay(t, 1 - 0.999 * t / t[-1]) == "linear decay"
    assert classify_decay(t, np.where(t < 25_000, 1.0, 0.1)).startswith("step decay (1 drop, ×0.1")


def test_warmup_then_cosine_from_a_log(write_jsonl):
    t = np.arange(1, 201, dtype=float)
    lr = np.where(t <= 20, 1e-3 * t / 20, 1e-3 * 0.5 * (1 + np.cos(np.pi * (t - 20) / 180)))
    result = diagnose_train_log(write_jsonl(np.exp(-t / 50) + 0.2, np.ones(200), lr))
    assert result.schedule.startswith("warm-up over 19 logs") and "cosine decay" in result.schedule


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"format": "xml"}, "not a training-log format"),
        ({"explosion_factor": 1.0}, "must be > 1"),
        ({"vanish_factor": 2.0}, "between 0 and 1"),
        ({"clip_percentile": 10.0}, "between 50 and 100"),
        ({"window": 0}, "must be >= 1"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainLogConfig(**kwargs)


def test_result_to_dict_is_strict_json(data):
    import json

    result = diagnose_train_log(data / "diverging_onnxship.jsonl")
    doc = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert doc["alarms"] == len(result.alarms) and doc["format"] == "jsonl"
    nonfinite = next(f for f in doc["findings"] if f["code"] == "TRN001")
    assert "nan" in nonfinite["evidence"]["loss"] or "inf" in nonfinite["evidence"]["loss"]

"""The PNG plot: written atomically, a real image of the expected size, findings marked, bad paths refused."""

from __future__ import annotations

import struct

import pytest

from onnxship._errors import DoctorError
from onnxship.doctor import diagnose_train_log, plot_train_log

pytest.importorskip("matplotlib")


def _png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_plot_diverging_start(data, tmp_path):
    out = tmp_path / "plots" / "train.png"  # the folder is created
    result = diagnose_train_log(data / "diverging_start_trainer_stdout.log", plot=out)
    assert result.plot == str(out)
    width, height = _png_size(out)
    assert width == 1000 and height > 700  # three panels: loss, grad_norm, lr
    assert out.stat().st_size > 20_000
    assert [p.name for p in out.parent.iterdir()] == ["train.png"]  # no temp file left behind


def test_plot_with_nan_and_only_loss(write_jsonl, tmp_path, data):
    import numpy as np

    path = write_jsonl(np.array([1.0, 0.8, 0.7, float("nan"), float("inf"), 0.6]))
    out = plot_train_log(diagnose_train_log(path), tmp_path / "loss.png")
    width, height = _png_size(out)
    assert height < 500  # one panel
    plot_train_log(diagnose_train_log(data / "diverging_onnxship.jsonl"), tmp_path / "div.png")


def test_plot_path_must_be_png(data, tmp_path):
    result = diagnose_train_log(data / "clean_cosine.jsonl")
    with pytest.raises(DoctorError, match="does not end in .png"):
        plot_train_log(result, tmp_path / "train.jpg")
    assert not list(tmp_path.iterdir())


def _trainer_state(tmp_path, lr):
    import json

    history = []
    for step in range(1, 81):
        history.append({"step": step, "epoch": step / 20, "loss": 3.0 / step**0.5 + 0.05 * (step % 3),
                        "grad_norm": 1.0 + 0.1 * (step % 5), "learning_rate": lr(step)})  # fmt: skip
        if step % 20 == 0:
            history.append(
                {"step": step, "epoch": step / 20, "eval_loss": 2.5 / step**0.5, "eval_runtime": 1.0}
            )
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps({"global_step": 80, "log_history": history}))
    return path


def test_eval_loss_is_read_from_trainer_state(tmp_path, data):
    from onnxship.doctor._readers import read_train_log

    log = read_train_log(_trainer_state(tmp_path, lambda s: 1e-3))
    assert log.eval_loss.shape == (4, 2) and log.eval_loss[:, 0].tolist() == [20, 40, 60, 80]
    assert log.eval_loss[0, 1] == 2.5 / 20**0.5
    assert len(log) == 80  # evaluation entries are not training rows
    assert len(read_train_log(data / "clean_trainer_state.json").eval_loss) == 3


def test_smoothed_loss_follows_the_trend_and_skips_nan():
    import numpy as np

    from onnxship.doctor._plot import smoothed

    noisy = np.linspace(2, 1, 100) + np.tile([0.2, -0.2], 50)
    s = smoothed(noisy)
    assert s.shape == noisy.shape and np.abs(s[5:-5] - np.linspace(2, 1, 100)[5:-5]).max() < 0.05
    with_nan = noisy.copy()
    with_nan[10] = np.nan
    assert np.isfinite(smoothed(with_nan)).all()


def test_a_constant_learning_rate_gets_no_panel(tmp_path):
    constant = plot_train_log(
        diagnose_train_log(_trainer_state(tmp_path, lambda s: 1e-3)), tmp_path / "c.png"
    )
    (tmp_path / "v").mkdir()
    varying = plot_train_log(
        diagnose_train_log(_trainer_state(tmp_path / "v", lambda s: 1e-3 * (1 - s / 100))), tmp_path / "v.png"
    )
    (_, h_constant), (_, h_varying) = _png_size(constant), _png_size(varying)
    assert h_constant < h_varying  # loss and grad_norm only
    assert h_varying - h_constant < 0.25 * h_varying  # a learning-rate panel is the smallest one

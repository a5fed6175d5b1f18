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


def test_plot_seed002(data, tmp_path):
    out = tmp_path / "plots" / "train.png"  # the folder is created
    result = diagnose_train_log(data / "seed002_trainer_stdout.log", plot=out)
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

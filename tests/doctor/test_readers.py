"""Training-log readers: every supported format, auto-detection, and clear errors for bad files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from onnxship._errors import DoctorError
from onnxship.doctor import FORMATS, read_train_log


@pytest.mark.parametrize(
    ("name", "fmt", "entries", "x_label", "columns"),
    [
        ("clean_trainer_state.json", "trainer-state", 75, "step", {"loss": "loss"}),
        ("clean_cosine.jsonl", "jsonl", 200, "step", {"grad_norm": "grad_norm"}),
        (
            "clean_lightning_metrics.csv",
            "lightning-csv",
            150,
            "step",
            {"loss": "train_loss_step", "grad_norm": "grad_2.0_norm_total", "learning_rate": "lr-AdamW"},
        ),
        ("clean_mlflow_stepdecay.csv", "mlflow-csv", 90, "step", {"learning_rate": "learning_rate"}),
        ("clean_large_scale_stdout.log", "trainer-stdout", 60, "log line", {"loss": "loss"}),
        (
            "diverging_start_trainer_stdout.log",
            "trainer-stdout",
            20,
            "log line",
            {"learning_rate": "learning_rate"},
        ),
    ],
)
def test_formats_are_detected_and_read(data, name, fmt, entries, x_label, columns):
    log = read_train_log(data / name)
    assert (log.format, len(log), log.x_label) == (fmt, entries, x_label)
    assert columns.items() <= log.columns.items()
    assert np.all(np.diff(log.step) > 0)  # sorted, merged, one row per step
    for m in log.columns:
        assert log.logged[m].sum() > 0


def test_trainer_state_skips_eval_and_summary_entries(data):
    log = read_train_log(data / "clean_trainer_state.json")
    assert log.skipped_lines == 4  # 3 eval entries + the final train_runtime summary
    assert log.step[-1] == 750 and log.logged["loss"].all()
    assert log.epoch[0] == pytest.approx(0.04)


def test_diverging_start_values_are_read_exactly(data):
    log = read_train_log(data / "diverging_start_trainer_stdout.log")
    assert log.values["loss"][0] == 18305.9719
    assert log.values["grad_norm"][0] == 1495043.625
    assert log.values["grad_norm"][17] == 0.0020479606464505196
    assert log.values["learning_rate"][[0, -1]].tolist() == [1.5e-05, 3.4e-05]
    assert log.epoch[8] == 0.22 and log.values["loss"][8] == 4.6215
    assert log.skipped_lines == 5  # the "***** Running training *****" banner


def test_lightning_rows_of_one_step_are_merged(data):
    log = read_train_log(data / "clean_lightning_metrics.csv")
    assert log.logged["learning_rate"].all() and log.logged["loss"].all() and log.logged["grad_norm"].all()
    assert log.step.tolist() == list(range(150))


def test_nan_and_inf_tokens_and_tqdm_prefixes(tmp_path):
    path = tmp_path / "stdout.log"
    path.write_text(
        " 10%|█         | 10/100 [00:01<00:09]{'loss': 0.9, 'grad_norm': nan, 'learning_rate': 1e-05, 'epoch': 0.1}\n"
        "\r 20%|██        | 20/100 [00:02<00:08]{'loss': inf, 'grad_norm': -inf, 'learning_rate': 1e-05, 'epoch': 0.2}\n"
        "{'loss': NaN, 'grad_norm': 1.5, 'learning_rate': 1e-05, 'epoch': 0.3}\n"
        "{'eval_loss': 0.8, 'epoch': 0.3}\n"
    )
    log = read_train_log(path)
    assert log.format == "trainer-stdout" and len(log) == 3 and log.skipped_lines == 1
    g, loss = log.values["grad_norm"], log.values["loss"]
    assert math.isnan(g[0]) and g[1] == -math.inf and loss[1] == math.inf and math.isnan(loss[2])
    assert log.logged["grad_norm"].all()  # NaN that was logged is a value, not a gap


def test_dict_lines_are_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.log"
    path.write_text(
        "{'loss': 0.5, 'epoch': 0.1}\n"
        f"{{'loss': __import__('pathlib').Path({str(marker)!r}).touch(), 'epoch': 0.2}}\n"
    )
    with pytest.raises(DoctorError, match="line 2 is not a complete metrics dict"):
        read_train_log(path)
    assert not marker.exists()


def test_format_override(data, tmp_path):
    assert read_train_log(data / "clean_cosine.jsonl", format="trainer-stdout").format == "trainer-stdout"
    with pytest.raises(DoctorError, match="unknown training-log format 'xml'"):
        read_train_log(data / "clean_cosine.jsonl", format="xml")
    assert "auto" in FORMATS


def test_csv_without_step_column_uses_row_order(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("train_loss,lr\n0.9,0.1\n0.8,0.1\n0.7,0.1\n")
    log = read_train_log(path)
    assert log.format == "lightning-csv" and log.x_label == "log line" and log.step.tolist() == [1, 2, 3]


def test_single_line_trainer_state(tmp_path):
    path = tmp_path / "trainer_state.json"
    path.write_text(
        json.dumps(
            {"log_history": [{"loss": 1.0, "step": 5, "epoch": 0.1}, {"loss": 0.5, "step": 10, "epoch": 0.2}]}
        )
    )
    log = read_train_log(path)
    assert log.format == "trainer-state" and log.step.tolist() == [5, 10]


BAD = [
    ("empty.log", "is empty"),
    ("truncated_trainer_state.json", r"not valid JSON at line \d+"),
    ("truncated_stdout.log", "line 25 is not a complete metrics dict"),
    ("garbled_metrics.csv", r"row 4, column 'train_loss_step': '#REF!' is not a number"),
    ("no_metrics.log", "is not a training log onnxship knows"),
]


@pytest.mark.parametrize(("name", "message"), BAD)
def test_bad_logs_raise_clear_errors(data, name, message):
    with pytest.raises(DoctorError, match=message) as info:
        read_train_log(data / name)
    assert info.value.hint  # every error says what to do


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary file"),
        (b"\xff\xfe{'loss'", "not UTF-8"),
        (b"   \n\n", "is empty"),
        (b'{\n  "best_metric": null\n}\n', "has no 'log_history'"),
        (b"epoch,step,val_loss\n0,10,0.5\n", "no training metrics"),
        (b"key,value,step\nloss,0.5\n", "row 2 has 2 fields, the header has 3"),
        (b"key,value\nloss,0.5\n", "no step column"),
        (b"run_id,key,value,step\na1,loss,0.5,1\nb2,loss,0.4,1\n", "holds the metrics of 2 runs"),
        (b"{'loss': 'high', 'epoch': 0.1}\n", "loss is 'high', expected a number"),
    ],
)
def test_more_bad_inputs(tmp_path, content, message):
    path = tmp_path / "log.txt"
    path.write_bytes(content)
    with pytest.raises(DoctorError, match=message):
        read_train_log(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DoctorError, match="does not exist"):
        read_train_log(tmp_path / "nope.json")
    with pytest.raises(DoctorError, match="is not a file"):
        read_train_log(tmp_path)


def test_mutated_logs_never_crash(data, tmp_path):
    """Truncated, garbled, re-ordered copies of every fixture: a result or a DoctorError, never a traceback."""
    import random

    from onnxship.doctor import diagnose_train_log

    rng = random.Random(0)
    sources = [p for p in sorted(data.iterdir()) if not p.name.startswith("export_") and p.stat().st_size]
    outcomes = {"ok": 0, "error": 0}
    for i in range(150):
        src = sources[i % len(sources)]
        raw = bytearray(src.read_bytes())
        mode = i % 3
        if mode == 0:
            raw = raw[: rng.randrange(len(raw))]
        elif mode == 1:
            for _ in range(3):
                raw[rng.randrange(len(raw))] = rng.choice(b"0123456789.,{}:\"'-naif \n")
        else:
            lines = bytes(raw).split(b"\n")
            rng.shuffle(lines)
            raw = bytearray(b"\n".join(lines))
        path = tmp_path / f"m{i}{src.suffix}"
        path.write_bytes(bytes(raw))
        try:
            diagnose_train_log(path)
            outcomes["ok"] += 1
        except DoctorError as exc:
            assert exc.message and exc.hint  # what was wrong, and what to do
            outcomes["error"] += 1
    assert outcomes["ok"] > 20 and outcomes["error"] > 20  # both paths were exercised

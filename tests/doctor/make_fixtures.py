"""Regenerate the synthetic training-log fixtures in tests/doctor/data/ (deterministic: fixed seeds).

Run: .venv/bin/python tests/doctor/make_fixtures.py

Not made here:
- diverging_start_trainer_stdout.log: a real HF Trainer run that diverged early (loss 18305.9719 / grad_norm 1495043.625 at epoch 0.14, the
  4.6215 spike at epoch 0.22, 0.0008 then 0.0 and grad_norm 0.0020479606464505196 at the end, lr rising from
  1.5e-05 to 3.4e-05), with the steps in between filled in as HF Trainer console lines.
- deeplog_bgl_train.jsonl / deeplog_bgl_hot_lr.jsonl: real logs written by onnxship's DeepLog recipe
  (train_deeplog on loghub BGL_2k, window 10, embed 8 / hidden 16 / 1 layer): 8 epochs at lr 1e-2 with clipping
  at 5 (clean), and 3 epochs at lr 0.5 with clipping off (clip_grad_norm=1e9: a real grad_norm explosion).
- export_torchscript.log / export_dynamo_datadep.log: captured stdout+stderr of real torch.onnx.export runs
  (TorchScript on DeepLogLSTM and ShapeArithmetic; dynamo on DataDependentBranch), torch 2.13.
Each file is written in the format a real tool writes: HF Trainer (trainer_state.json, console lines with tqdm
bars), Lightning CSVLogger (wide, rows split per log call), MLflow metric export (long), onnxship JSON lines.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

__all__ = ["CLEAN", "write_all"]

DATA = Path(__file__).parent / "data"
CLEAN = [
    "clean_trainer_state.json",
    "clean_cosine.jsonl",
    "clean_lightning_metrics.csv",
    "clean_mlflow_stepdecay.csv",
    "clean_large_scale_stdout.log",
    "clean_fp16_stdout.log",
]


def _warmup_linear(step: np.ndarray, total: int, warm: int, peak: float) -> np.ndarray:
    return np.where(step < warm, peak * step / warm, peak * np.maximum(0, total - step) / (total - warm))


def _hf_entry(step: int, total_steps: int, epochs: float, loss: float, gn: float, lr: float) -> dict:
    return {
        "epoch": round(epochs * step / total_steps, 4),
        "grad_norm": float(gn),
        "learning_rate": float(lr),
        "loss": round(float(loss), 4),
        "step": int(step),
    }


def clean_trainer_state(rng: np.random.Generator) -> str:
    total, epochs = 750, 3
    steps = np.arange(10, total + 1, 10)
    lr = _warmup_linear(steps, total, 75, 5e-5)
    loss = (0.35 + 2.0 * np.exp(-steps / 120)) * np.exp(rng.normal(0, 0.04, len(steps)))
    gn = (1.2 + 3.0 * np.exp(-steps / 100)) * np.exp(rng.normal(0, 0.1, len(steps)))
    history = []
    for s, lo, g, r in zip(steps, loss, gn, lr, strict=True):
        history.append(_hf_entry(s, total, epochs, lo, g, r))
        if s % 250 == 0:
            history.append(
                {
                    "epoch": round(epochs * s / total, 4),
                    "eval_loss": round(float(lo) * 1.1, 4),
                    "eval_runtime": 3.21,
                    "eval_samples_per_second": 311.5,
                    "eval_steps_per_second": 39.0,
                    "step": int(s),
                }
            )
    history.append(
        {
            "epoch": float(epochs),
            "step": total,
            "total_flos": 1.2e15,
            "train_loss": float(loss.mean()),
            "train_runtime": 412.3,
            "train_samples_per_second": 14.55,
            "train_steps_per_second": 1.819,
        }
    )
    state = {
        "best_metric": None,
        "best_model_checkpoint": None,
        "epoch": float(epochs),
        "eval_steps": 250,
        "global_step": total,
        "is_hyper_param_search": False,
        "is_local_process_zero": True,
        "is_world_process_zero": True,
        "log_history": history,
        "logging_steps": 10,
        "max_steps": total,
        "num_input_tokens_seen": 0,
        "num_train_epochs": epochs,
        "save_steps": 500,
        "total_flos": 1.2e15,
        "train_batch_size": 8,
        "trial_name": None,
        "trial_params": None,
    }
    return json.dumps(state, indent=2) + "\n"


def clean_cosine(rng: np.random.Generator) -> str:
    steps = np.arange(5, 1001, 5)
    warm = 100
    lr = np.where(
        steps < warm, 3e-4 * steps / warm, 3e-4 * 0.5 * (1 + np.cos(np.pi * (steps - warm) / (1000 - warm)))
    )
    loss = 3.0 * (1 + steps / 50) ** -0.5 * np.exp(rng.normal(0, 0.05, len(steps)))
    gn = 0.8 * np.exp(rng.normal(0, 0.15, len(steps)))
    lines = [
        json.dumps(
            {
                "step": int(s),
                "epoch": round(float(s) / 250, 4),
                "loss": float(lo),
                "grad_norm": float(g),
                "learning_rate": float(r),
            }
        )
        for s, lo, g, r in zip(steps, loss, gn, lr, strict=True)
    ]
    return "\n".join(lines) + "\n"


def _write_csv(rows: list[dict], header: list[str]) -> str:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def clean_lightning(rng: np.random.Generator) -> str:
    # CSVLogger: the LearningRateMonitor's row and the training_step's row are separate rows of the same step;
    # epoch-end rows carry train_loss_epoch/val_loss.
    per_epoch, epochs = 50, 3
    rows = []
    for step in range(per_epoch * epochs):
        epoch = step // per_epoch
        rows.append(
            {
                "epoch": None,
                "grad_2.0_norm_total": None,
                "lr-AdamW": 1e-3,
                "step": step,
                "train_loss_epoch": None,
                "train_loss_step": None,
                "val_loss": None,
            }
        )
        loss = (0.7 * math.exp(-step / 30) + 0.25) * math.exp(rng.normal(0, 0.12))
        rows.append(
            {
                "epoch": epoch,
                "grad_2.0_norm_total": 2.0 * math.exp(rng.normal(0, 0.25)),
                "lr-AdamW": None,
                "step": step,
                "train_loss_epoch": None,
                "train_loss_step": loss,
                "val_loss": None,
            }
        )
        if step % per_epoch == per_epoch - 1:
            rows.append(
                {
                    "epoch": epoch,
                    "grad_2.0_norm_total": None,
                    "lr-AdamW": None,
                    "step": step,
                    "train_loss_epoch": 0.3,
                    "train_loss_step": None,
                    "val_loss": 0.33,
                }
            )
    return _write_csv(rows, list(rows[0]))


def clean_mlflow_stepdecay(rng: np.random.Generator) -> str:
    # MLflow metric history export (e.g. client.get_metric_history per key), long format.
    rows, t0 = [], 1763900000000
    for i, step in enumerate(range(0, 900, 10)):
        lr = 0.1 * (0.1 ** (step // 300))
        loss = (1.8 * math.exp(-step / 250) + 0.4 - 0.05 * (step // 300)) * math.exp(rng.normal(0, 0.03))
        gn = (3.0 - step / 600) * math.exp(rng.normal(0, 0.1))
        for key, value in (("loss", loss), ("grad_norm", gn), ("learning_rate", lr), ("epoch", step / 300)):
            rows.append({"key": key, "value": value, "step": step, "timestamp": t0 + 1000 * i})
    return _write_csv(rows, ["key", "value", "step", "timestamp"])


def _tqdm(i: int, total: int) -> str:
    pct = int(100 * i / total)
    return f"\r {pct:3d}%|{'█' * (pct // 10):<10}| {i}/{total} [00:{i // 4:02d}<03:12,  3.79it/s]"


def clean_large_scale_stdout(rng: np.random.Generator) -> str:
    # A regression on unnormalised targets: loss in the millions, smooth decay; no warm-up, linear decay.
    total, n = 1200, 60
    out = [
        "***** Running training *****",
        "  Num examples = 9,600",
        "  Num Epochs = 2",
        "  Total optimization steps = 1,200",
    ]
    for i in range(1, n + 1):
        step = i * total // n
        loss = (4.2e6 * math.exp(-step / 300) + 1.1e4) * math.exp(rng.normal(0, 0.05))
        gn = (3e5 * math.exp(-step / 400) + 2e4) * math.exp(rng.normal(0, 0.1))
        lr = 1e-4 * (1 - step / total)
        d = {
            "loss": round(loss, 4),
            "grad_norm": gn,
            "learning_rate": lr,
            "epoch": round(2 * step / total, 2),
        }
        out.append(_tqdm(step, total) + repr(d))
    return "\n".join(out) + "\n"


def clean_fp16_stdout(rng: np.random.Generator) -> str:
    # fp16 with a GradScaler: two overflow steps log grad_norm nan/inf while the loss stays finite.
    total, n = 800, 80
    out = []
    for i in range(1, n + 1):
        step = i * 10
        lr = 2e-5 * min(1.0, step / 80) * (1 - max(0, step - 80) / (total - 80))
        loss = (0.5 + 1.5 * math.exp(-step / 150)) * math.exp(rng.normal(0, 0.04))
        gn = 1.5 * math.exp(rng.normal(0, 0.12))
        gn_text = "nan" if i == 3 else ("inf" if i == 41 else repr(gn))
        out.append(
            f"{{'loss': {round(loss, 4)!r}, 'grad_norm': {gn_text}, 'learning_rate': {lr!r}, "
            f"'epoch': {round(step / 400, 2)!r}}}"
        )
    out.append("{'train_runtime': 301.2, 'train_samples_per_second': 21.2, 'train_loss': 0.71, 'epoch': 2.0}")
    return "\n".join(out) + "\n"


def diverging_jsonl(rng: np.random.Generator) -> str:
    # onnxship's own training log (DeepLog recipe format): the lr is too high, grad_norm explodes, loss -> inf -> nan
    out = []
    for step in range(1, 61):
        if step < 40:
            loss = (2.5 * math.exp(-step / 15) + 0.6) * math.exp(rng.normal(0, 0.03))
            gn = 1.1 * math.exp(rng.normal(0, 0.1))
        elif step < 50:
            loss = 0.7 * 3.0 ** (step - 40)
            gn = 1.1 * 6.0 ** (step - 39)
        elif step < 52:
            loss, gn = math.inf, math.inf
        else:
            loss, gn = math.nan, math.nan
        out.append(
            json.dumps(
                {
                    "step": step * 20,
                    "epoch": round(step / 30, 4),
                    "loss": loss,
                    "grad_norm": gn,
                    "learning_rate": 0.05,
                }
            )
        )
    return "\n".join(out) + "\n"


def write_all() -> None:
    rng = np.random.default_rng(20261123)
    files = {
        "clean_trainer_state.json": clean_trainer_state(rng),
        "clean_cosine.jsonl": clean_cosine(rng),
        "clean_lightning_metrics.csv": clean_lightning(rng),
        "clean_mlflow_stepdecay.csv": clean_mlflow_stepdecay(rng),
        "clean_large_scale_stdout.log": clean_large_scale_stdout(rng),
        "clean_fp16_stdout.log": clean_fp16_stdout(rng),
        "diverging_onnxship.jsonl": diverging_jsonl(rng),
    }
    state = files["clean_trainer_state.json"]
    files["truncated_trainer_state.json"] = state[: len(state) // 2]
    source = (DATA / "diverging_start_trainer_stdout.log").read_text()
    files["truncated_stdout.log"] = source[: source.rindex("'grad_norm'") + 15]
    files["garbled_metrics.csv"] = "epoch,step,train_loss_step\n0,0,0.9\n0,1,0.8\n0,2,#REF!\n"
    files["empty.log"] = ""
    files["no_metrics.log"] = "Loading checkpoint shards: 100%|██████████| 2/2\nSaving model to out/\n"
    for name, text in files.items():
        (DATA / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    write_all()

"""`onnxship doctor train-log` time against log length: read, analyse, plot.

A training log of N entries (onnxship JSON lines, a noisy descent with two injected spikes) is read and analysed;
the plot is timed separately. Goal: a 100 000-entry log (a long per-step run) in a few seconds on one core.

Usage: python benchmarks/doctor_train_log.py [--out benchmarks/results/doctor_train_log.json] [--repeat 2]
Each point is the minimum of --repeat runs (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from onnxship.doctor import TrainLogConfig, diagnose_train_log, plot_train_log, read_train_log
from onnxship.doctor._analysis import analyze

SIZES = (1_000, 10_000, 100_000)


def _write_log(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(n, dtype=float)
    loss = (2.0 * np.exp(-t / (n / 10)) + 0.3) * np.exp(rng.normal(0, 0.08, n))
    gn = np.exp(rng.normal(0, 0.2, n))
    loss[n // 2] *= 10
    gn[n // 2] *= 50
    lr = 1e-3 * np.minimum(1.0, t / (n / 20)) * (1 - t / n)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(
                json.dumps(
                    {
                        "step": i + 1,
                        "epoch": round((i + 1) / (n / 4), 4),
                        "loss": float(loss[i]),
                        "grad_norm": float(gn[i]),
                        "learning_rate": float(lr[i]),
                    }
                )
                + "\n"
            )


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/doctor_train_log.json"))
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in SIZES:
            path = Path(tmp) / f"train_{n}.jsonl"
            _write_log(path, n)
            read_s, log = _best(lambda p=path: read_train_log(p), args.repeat)
            analyse_s, result = _best(lambda lg=log: analyze(lg, TrainLogConfig()), args.repeat)
            plot_s, _ = _best(lambda r=result, p=path: plot_train_log(r, p.with_suffix(".png")), 1)
            total_s, _ = _best(lambda p=path: diagnose_train_log(p), 1)
            points.append(
                {
                    "entries": n,
                    "bytes": path.stat().st_size,
                    "read_s": round(read_s, 4),
                    "analyse_s": round(analyse_s, 4),
                    "plot_s": round(plot_s, 4),
                    "read_and_analyse_s": round(total_s, 4),
                    "alarms": sorted({f.code for f in result.alarms}),
                }
            )
            print(points[-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "doctor_train_log",
                "python": platform.python_version(),
                "machine": platform.machine(),
                "repeat": args.repeat,
                "points": points,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()

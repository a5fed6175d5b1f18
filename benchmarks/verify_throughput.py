"""Verification throughput and memory: ``onnxship.verify`` against PyTorch alone + ONNX Runtime alone.

Measures, on the DeepLog example (examples/deeplog/model.py, exported with TorchScript):
- throughput: the same batches (``--scale-throughput`` x ``--base`` windows, batch ``--batch``) run through
  TorchRunner alone and OnnxRuntimeRunner alone, and through ``verify(mode="full", task="sequence")`` from an
  ``.npz`` and from a parquet file. ``ratio = (torch_s + ort_s) / verify_s`` (goal >= 0.8: the engine adds at most
  25% over running both engines yourself).
- memory: ``verify(mode="full")`` streaming a parquet file of 1x, 10x and 100x ``--base`` windows, each in a fresh
  interpreter: peak RSS (ru_maxrss) and the tracemalloc peak of Python/numpy allocations during verify() (goal: flat).

Usage: python benchmarks/verify_throughput.py [--out benchmarks/results/verify_throughput.json] [--base 500]
Timings on a shared 2-core machine are noisy: each throughput point is the minimum of --repeat interleaved rounds,
and the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = str(ROOT / "examples/deeplog/model.py") + ":build_model"
SPEC = "input_sequence:batch=2..512 x seq=10..64:int64:0..30"
SEQ, VOCAB = 10, 30


def _dataset(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, VOCAB, (n, SEQ)).astype(np.int64), rng.integers(0, VOCAB, n).astype(np.int64)


def _write_parquet(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"input_sequence": pa.array(list(x), type=pa.list_(pa.int64())), "next_event": y})
    pq.write_table(table, path, row_group_size=8192)


def _export(tmp: Path) -> Path:
    import onnxship

    return onnxship.export(EXAMPLE, inputs=[SPEC], out=tmp, name="deeplog", strategy="torchscript").path


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def throughput(onnx_path: Path, tmp: Path, n: int, batch: int, repeat: int) -> dict:
    """Rounds of (torch alone, ORT alone, verify npz, verify parquet), interleaved so that load from other
    processes hits every contender alike; each figure is the minimum over the rounds."""
    from onnxship.spec import parse_model_spec
    from onnxship.spec._binding import bind_inputs
    from onnxship.verify import OnnxRuntimeRunner, TorchRunner, VerifyConfig, verify

    x, y = _dataset(n)
    npz = tmp / "data.npz"
    np.savez(npz, input_sequence=x, next_event=y)
    parquet = tmp / "data.parquet"
    _write_parquet(parquet, x, y)
    one = tmp / "one-batch.npz"
    np.savez(one, input_sequence=x[:batch], next_event=y[:batch])
    spec = parse_model_spec(EXAMPLE)
    model = spec.load().model
    ort = OnnxRuntimeRunner(onnx_path)
    torch_runner = TorchRunner(model, bind_inputs(model, ["input_sequence"]), output_names=ort.output_names)
    batches = [{"input_sequence": x[i : i + batch]} for i in range(0, n, batch)]

    def run_all(runner, feeds_list):
        for feeds in feeds_list:
            runner.infer(feeds)

    def run_verify(data: Path, expect: int) -> None:
        rep = verify(
            onnx_path,
            model=model,
            config=VerifyConfig(mode="full", data=data, batch_size=batch, sweep=False, task="sequence"),
        )
        assert rep.passed, rep.failure_reason
        assert rep.compare["sample_count"] == expect, rep.compare

    times: dict[str, list[float]] = {
        k: [] for k in ("torch", "ort", "npz", "parquet", "one_verify", "one_both")
    }
    load_before = os.getloadavg()
    for _ in range(repeat):
        times["torch"].append(_timed(lambda: run_all(torch_runner, batches)))
        times["ort"].append(_timed(lambda: run_all(ort, batches)))
        times["npz"].append(_timed(lambda: run_verify(npz, n)))
        times["parquet"].append(_timed(lambda: run_verify(parquet, n)))
        times["one_verify"].append(_timed(lambda: run_verify(one, batch)))
        times["one_both"].append(
            _timed(lambda: (run_all(torch_runner, batches[:1]), run_all(ort, batches[:1])))
        )
    best = {k: min(v) for k, v in times.items()}
    both = best["torch"] + best["ort"]
    return {
        "samples": n,
        "batch_size": batch,
        "rounds": repeat,
        "torch_alone_s": best["torch"],
        "ort_alone_s": best["ort"],
        "both_alone_s": both,
        "verify_npz_s": best["npz"],
        "verify_parquet_s": best["parquet"],
        "verify_npz_samples_per_s": n / best["npz"],
        "verify_parquet_samples_per_s": n / best["parquet"],
        "ratio_npz": both / best["npz"],
        "ratio_parquet": both / best["parquet"],
        "verify_fixed_overhead_s": best["one_verify"] - best["one_both"],
        "goal_ratio": 0.8,
        "all_times_s": times,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
    }


def child_memory(onnx_path: str, parquet: str, batch: int) -> dict:
    """Runs in a fresh interpreter: verify(mode=full) over a parquet file; reports its memory peaks."""
    from onnxship.verify import VerifyConfig, verify

    cfg = VerifyConfig(mode="full", data=parquet, batch_size=batch, sweep=False, task="sequence")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t0 = time.perf_counter()
    rep = verify(onnx_path, model=EXAMPLE, config=cfg)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "samples": rep.compare["sample_count"],
        "passed": rep.passed,
        "seconds": seconds,
        "tracemalloc_peak_mb": peak / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_verify_mb": rss_before / 1024,
    }


def memory(onnx_path: Path, tmp: Path, base: int, batch: int, scales: tuple[int, ...]) -> list[dict]:
    rows = []
    for scale in scales:
        n = base * scale
        x, y = _dataset(n, seed=scale)
        path = tmp / f"data-{scale}x.parquet"
        _write_parquet(path, x, y)
        del x, y
        out = subprocess.run(
            [sys.executable, __file__, "--child-memory", str(onnx_path), str(path), str(batch)],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"memory child failed at {scale}x: {out.stderr[-2000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row.update({"scale": scale, "rows": n})
        rows.append(row)
        print(
            f"  {scale:>4}x {n:>7} rows: peak RSS {row['peak_rss_mb']:.0f} MB, tracemalloc peak "
            f"{row['tracemalloc_peak_mb']:.1f} MB, {row['seconds']:.1f} s",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/verify_throughput.json"))
    parser.add_argument("--base", type=int, default=500, help="windows in the 1x dataset")
    parser.add_argument("--scale-throughput", type=int, default=40, help="throughput dataset = base x this")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-memory", action="store_true", help="throughput only")
    parser.add_argument(
        "--child-memory", nargs=3, metavar=("ONNX", "PARQUET", "BATCH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child_memory:
        onnx_path, parquet, batch = args.child_memory
        print(json.dumps(child_memory(onnx_path, parquet, int(batch))))
        return
    import onnx
    import onnxruntime
    import torch

    with tempfile.TemporaryDirectory(prefix="verify-bench-") as d:
        tmp = Path(d)
        onnx_path = _export(tmp)
        print("throughput ...", flush=True)
        thr = throughput(onnx_path, tmp, args.base * args.scale_throughput, args.batch, args.repeat)
        print(
            f"  torch {thr['torch_alone_s']:.3f} s + ort {thr['ort_alone_s']:.3f} s; verify npz "
            f"{thr['verify_npz_s']:.3f} s (ratio {thr['ratio_npz']:.2f}), parquet {thr['verify_parquet_s']:.3f} s "
            f"(ratio {thr['ratio_parquet']:.2f}); fixed overhead {thr['verify_fixed_overhead_s']:.3f} s; "
            f"load {thr['load_average_before'][0]:.1f}",
            flush=True,
        )
        mem = []
        if not args.skip_memory:
            print("memory ...", flush=True)
            mem = memory(onnx_path, tmp, args.base, args.batch, (1, 10, 100))
    result = {
        "benchmark": "verify_throughput",
        "model": "examples/deeplog (LSTM 2x64, vocab 30, seq 10), TorchScript export",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "throughput": thr,
        "memory": mem,
        "memory_growth_100x_vs_1x": None
        if not mem
        else {
            "peak_rss": mem[-1]["peak_rss_mb"] / mem[0]["peak_rss_mb"],
            "tracemalloc_peak": mem[-1]["tracemalloc_peak_mb"] / mem[0]["tracemalloc_peak_mb"],
        },
        "notes": "ratio = (torch alone + ORT alone) / verify on the same batches; memory rows are fresh interpreters "
        "streaming parquet in full mode (per-sample statistics are the only state that grows with N).",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Serving throughput: `onnxship serve` vs in-process onnxruntime (vs `mlflow models serve` when mlflow is here).

The same ONNX model (examples/deeplog/model.py, a DeepLog-sized 2-layer LSTM, shipped once with `onnxship.ship`),
one [1, 10] int64 sample per request, concurrency 1, 8 and 32, load from `wrk` (Debian package; one thread, N
keep-alive connections, a Lua script for the POST body). In-process onnxruntime runs the same session settings the
server uses (1 intra-op thread, no spinning) at batch 1 and batch 32 (the limit without any HTTP).

Usage: python benchmarks/serve_throughput.py [--seconds 5] [--out benchmarks/results/serve_throughput.json]
       [--no-mlflow]
Timings on a shared 2-core machine are noisy: compare points within one run, not across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = [[3, 7, 1, 0, 12, 29, 5, 5, 8, 2]]
LUA = """wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


def _ship(work: Path) -> Path:
    import onnxship.ship as ship_mod
    from onnxship.spec._config import ShipConfig

    cfg = ShipConfig.from_dict(
        {
            "model": {"spec": str(ROOT / "examples/deeplog/model.py") + ":build_model"},
            "paths": {"releases": str(work / "releases")},
            "export": {"strategy": "torchscript"},
        }
    )
    result = ship_mod.ship(config=cfg)
    return result.path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} not up after {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def _wrk(url: str, body: str, connections: int, seconds: int, work: Path) -> dict:
    script = work / "post.lua"
    script.write_text(LUA.format(body=body))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    total = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "concurrency": connections,
        "req_per_s": float(rps.group(1)) if rps else None,
        "p50_ms": _ms(lat.get("50", "")),
        "p99_ms": _ms(lat.get("99", "")),
        "requests": int(total.group(1)) if total else None,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(0) if errors else None,
    }


def _in_process(model: Path, seconds: float) -> list[dict]:
    from onnxship.runtime import SessionConfig, create_session

    sess = create_session(model, SessionConfig(intra_op_threads=1, allow_spinning=False))
    rows = []
    for batch in (1, 32):
        x = np.tile(np.asarray(SAMPLE, np.int64), (batch, 1))
        for _ in range(50):
            sess.run(None, {"input_sequence": x})
        times = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            sess.run(None, {"input_sequence": x})
            times.append(time.perf_counter() - t)
        arr = np.asarray(times)
        rows.append(
            {
                "batch": batch,
                "calls_per_s": len(arr) / arr.sum(),
                "samples_per_s": batch * len(arr) / arr.sum(),
                "p50_ms": float(np.percentile(arr, 50) * 1e3),
                "p99_ms": float(np.percentile(arr, 99) * 1e3),
            }
        )
    return rows


def _onnxship(
    release: Path, seconds: int, work: Path, max_batch: int, levels: list[int], extra: tuple[str, ...] = ()
) -> list[dict]:
    port = _free_port()
    exe = str(Path(sys.executable).with_name("onnxship"))
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_PATH", "ONNXSHIP_TOKEN")}
    proc = subprocess.Popen(
        [
            exe,
            "serve",
            "--model-path",
            str(release),
            "--port",
            str(port),
            "--max-batch",
            str(max_batch),
            *extra,
        ],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(base + "/v2/health/ready", proc)
        body = json.dumps(
            {"inputs": [{"name": "input_sequence", "shape": [1, 10], "datatype": "INT64", "data": SAMPLE[0]}]}
        )
        rows = [
            _wrk(base + "/v2/models/deeplog/infer", body, c, seconds, work)
            | {"max_batch": max_batch, "flags": list(extra)}
            for c in levels
        ]
        with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
            text = r.read().decode()
        runs = re.search(r"^onnxship_batch_requests_count (\d+)", text, re.M)
        reqs = re.search(r"^onnxship_batch_requests_sum (\S+)", text, re.M)
        if runs and reqs and int(runs.group(1)):
            rows[-1]["mean_requests_per_model_run_over_all_points"] = float(reqs.group(1)) / int(
                runs.group(1)
            )
        return rows
    finally:
        _stop(proc)


def _mlflow(release: Path, seconds: int, work: Path, levels: list[int]) -> list[dict] | dict:
    try:
        import mlflow.onnx
        import onnx
    except ImportError:
        return {"skipped": "mlflow is not installed"}
    model_dir = work / "mlflow_model"
    mlflow.onnx.save_model(
        onnx.load(str(release / "deeplog.onnx")),
        str(model_dir),
        pip_requirements=["onnx", "onnxruntime"],
        onnx_execution_providers=["CPUExecutionProvider"],
    )
    port = _free_port()
    # mlflow starts `uvicorn` by name: the venv's bin must come first on PATH
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    exe = str(Path(sys.executable).with_name("mlflow"))
    proc = subprocess.Popen(
        [
            exe,
            "models",
            "serve",
            "-m",
            str(model_dir),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--env-manager",
            "local",
            "-w",
            "1",
        ],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(base + "/ping", proc)
        body = json.dumps({"inputs": {"input_sequence": SAMPLE}})
        return [_wrk(base + "/invocations", body, c, seconds, work) for c in levels]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the scoring workers go with it
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=20, help="seconds per point (the issue asks for 20)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/serve_throughput.json"))
    ap.add_argument("--no-mlflow", action="store_true", help="skip `mlflow models serve`")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk; scripts/components.sh installs it)")
    levels = [1, 8, 32]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        release = _ship(work)
        results = {
            "measured_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "note": "shared with other jobs: load varies between runs; compare points of one run",
            },
            "seconds_per_point": args.seconds,
            "model": "examples/deeplog/model.py (2-layer LSTM, hidden 64)",
            "request": "one [1,10] int64 sample, JSON (binary_data=False), wrk -t1 -cN keep-alive",
            "in_process_onnxruntime": _in_process(release / "deeplog.onnx", args.seconds),
            "onnxship_serve": _onnxship(release, args.seconds, work, 32, levels),
            "onnxship_serve_no_batching": _onnxship(release, args.seconds, work, 1, [32]),
            "onnxship_serve_always_executor_thread": _onnxship(
                release, args.seconds, work, 32, levels, ("--inline-below-ms", "0")
            ),
            "mlflow_models_serve": {"skipped": "--no-mlflow"}
            if args.no_mlflow
            else _mlflow(release, args.seconds, work, levels),
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

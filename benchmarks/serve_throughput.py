"""Serving throughput: `onnxship serve` (REST and gRPC) against its peers, all measured in the same run.

The same ONNX model (examples/deeplog/model.py, a DeepLog-sized 2-layer LSTM, shipped once with `onnxship.ship`),
one [1, 10] int64 sample per request, at concurrency 1 and 32 (keep-alive connections), in interleaved rounds (every
peer once per round, so a change in the machine's load hits all of them alike):

- in-process onnxruntime (batch 1, one intra-op thread, the session settings the server uses): the floor;
- `onnxship serve` over REST (default settings: one worker per core, dynamic batching up to 32) and over gRPC
  (the same server, `--grpc-port`), plus the same REST server with `--workers 1`;
- `mlflow models serve` (mlflow's own ONNX flavour);
- FastAPI + onnxruntime (one uvicorn process, uvloop + httptools, an async handler calling the session);
- Triton 2.51 (scripts/components.sh) with dynamic batching and a Python-backend model that concatenates the
  batch Triton hands it, runs onnxruntime once and splits the outputs back (Triton's CPU wheel has no onnxruntime
  backend), over REST and over its own gRPC port. Skipped with the reason when the component is not installed.

Load: `wrk` (REST, a Lua script for the POST body) and `h2load` (gRPC: a unary call is an HTTP/2 POST; the body is
a ModelInferRequest built with the protocol's generated message, behind gRPC's 5-byte frame). Both are Debian
packages that scripts/components.sh installs (wrk, nghttp2-client).

Usage: python benchmarks/serve_throughput.py [--seconds 5] [--rounds 2] [--out ...] [--no-mlflow] [--no-triton]
       [--only onnxship]   (only the REST and gRPC points of the default `onnxship serve`: a quick ratio check)
The JSON holds every point of every round and RATIOS to peers of the same run: quote those, not absolute numbers
(a shared machine's load moves absolute numbers between runs).
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
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from _readme import write_between  # benchmarks/ is the script's folder: on sys.path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = [[3, 7, 1, 0, 12, 29, 5, 5, 8, 2]]
LUA = """wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""
V2_BODY = json.dumps(
    {"inputs": [{"name": "input_sequence", "shape": [1, 10], "datatype": "INT64", "data": SAMPLE[0]}]}
)
TRITON_HOME = Path(sys.prefix) / ".components" / "tritonserver"

# Triton Python backend named `onnxruntime` (the platform package_triton writes): BENCHMARK PEER ONLY. Unlike the
# test shim in tests/package/triton_harness, it concatenates the requests of a dynamic batch into one run.
TRITON_BACKEND = """
import json, os
import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests):
        feeds = {n: [pb_utils.get_input_tensor_by_name(r, n).as_numpy() for r in requests] for n in self.inputs}
        rows = [a.shape[0] for a in feeds[self.inputs[0]]]
        outs = self.session.run(self.outputs, {n: np.concatenate(v) for n, v in feeds.items()})
        responses, start = [], 0
        for n in rows:
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor(name, np.ascontiguousarray(o[start:start + n])) for name, o in zip(self.outputs, outs)]
            ))
            start += n
        return responses
"""

FASTAPI_APP = """
import os
import numpy as np
import onnxruntime as ort
from fastapi import Body, FastAPI

opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
opts.inter_op_num_threads = 1
session = ort.InferenceSession(os.environ["BENCH_MODEL"], opts, providers=["CPUExecutionProvider"])
app = FastAPI()


@app.get("/ready")
async def ready():
    return {"ready": True}


@app.post("/v2/models/deeplog/infer")
async def infer(body: dict = Body(...)):
    t = body["inputs"][0]
    x = np.asarray(t["data"], dtype=np.int64).reshape(t["shape"])
    y = session.run(None, {"input_sequence": x})[0]
    return {"model_name": "deeplog", "outputs": [
        {"name": "output_0", "datatype": "FP32", "shape": list(y.shape), "data": y.ravel().tolist()}
    ]}
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
    return ship_mod.ship(config=cfg).path


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
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # each peer runs in its own session: its workers go with it
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


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
        "req_per_s": float(rps.group(1)) if rps else None,
        "p50_ms": _ms(lat.get("50", "")),
        "p99_ms": _ms(lat.get("99", "")),
        "requests": int(total.group(1)) if total else None,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(0) if errors else None,
    }


def _grpc_body(work: Path) -> Path:
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name="deeplog")
    req.inputs.add(name="input_sequence", datatype="INT64", shape=[1, 10])
    req.raw_input_contents.append(np.asarray(SAMPLE, np.int64).tobytes())
    msg = req.SerializeToString()
    path = work / "grpc_body.bin"
    path.write_bytes(b"\0" + struct.pack(">I", len(msg)) + msg)  # gRPC frame: uncompressed, 4-byte length
    return path


def _h2load(address: str, body: Path, connections: int, seconds: int, work: Path, streams: int = 1) -> dict:
    log = work / "h2load.log"
    log.unlink(missing_ok=True)
    out = subprocess.run(
        [
            "h2load",
            "-t1",
            f"-c{connections}",
            f"-m{streams}",
            "-D",
            str(seconds),
            "-d",
            str(body),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            f"--log-file={log}",
            f"http://{address}/inference.GRPCInferenceService/ModelInfer",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    rps = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    durations = np.asarray(
        [int(line.split()[2]) for line in log.read_text().splitlines() if line.strip()], dtype=np.float64
    )
    return {
        "req_per_s": float(rps.group(1)) if rps else None,
        "p50_ms": float(np.percentile(durations, 50) / 1e3) if durations.size else None,
        "p99_ms": float(np.percentile(durations, 99) / 1e3) if durations.size else None,
        "requests": int(done.group(1)) if done else None,
        "failed": int(done.group(3)) if done else None,
    }


def _in_process(model: Path, seconds: float) -> dict:
    from onnxship.runtime import SessionConfig, create_session

    sess = create_session(model, SessionConfig(intra_op_threads=1, allow_spinning=False))
    x = np.asarray(SAMPLE, np.int64)
    for _ in range(50):
        sess.run(None, {"input_sequence": x})
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        sess.run(None, {"input_sequence": x})
        times.append(time.perf_counter() - t)
    arr = np.asarray(times)
    return {
        "calls_per_s": len(arr) / arr.sum(),
        "mean_ms": float(arr.mean() * 1e3),
        "p50_ms": float(np.percentile(arr, 50) * 1e3),
        "p99_ms": float(np.percentile(arr, 99) * 1e3),
    }


def _popen(cmd: list[str], work: Path, env: dict | None = None, log: str = "server.log") -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        cwd=work,
        env=env or os.environ.copy(),
        stdout=open(work / log, "w"),  # noqa: SIM115 - the child holds it
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


# -- peers: each returns (name, {level: measure-callable}, process) ------------------------------------------------


def _onnxship(
    release: Path, work: Path, extra: list[str], grpc: bool
) -> tuple[subprocess.Popen, str, str | None]:
    port = _free_port()
    gport = _free_port() if grpc else None
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_PATH", "ONNXSHIP_TOKEN")}
    cmd = [str(Path(sys.executable).with_name("onnxship")), "serve", "--model-path", str(release)]
    cmd += ["--port", str(port), *extra] + (["--grpc-port", str(gport)] if gport else [])
    proc = _popen(cmd, work, env, f"onnxship-{port}.log")
    base = f"http://127.0.0.1:{port}"
    _wait(base + "/v2/health/ready", proc)
    return proc, base, f"127.0.0.1:{gport}" if gport else None


def _fastapi(release: Path, work: Path) -> tuple[subprocess.Popen, str]:
    (work / "fastapi_peer.py").write_text(FASTAPI_APP)
    port = _free_port()
    env = {**os.environ, "BENCH_MODEL": str(release / "deeplog.onnx"), "PYTHONPATH": str(work)}
    cmd = [sys.executable, "-m", "uvicorn", "fastapi_peer:app", "--port", str(port), "--no-access-log"]
    cmd += ["--log-level", "warning", "--loop", "uvloop", "--http", "httptools"]
    proc = _popen(cmd, work, env, "fastapi.log")
    base = f"http://127.0.0.1:{port}"
    _wait(base + "/ready", proc)
    return proc, base


def _mlflow(release: Path, work: Path) -> tuple[subprocess.Popen, str]:
    import mlflow.onnx
    import onnx

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
    cmd = [exe, "models", "serve", "-m", str(model_dir), "-h", "127.0.0.1", "-p", str(port)]
    proc = _popen(cmd + ["--env-manager", "local", "-w", "1"], work, env, "mlflow.log")
    base = f"http://127.0.0.1:{port}"
    _wait(base + "/ping", proc)
    return proc, base


def _triton(release: Path, work: Path) -> tuple[subprocess.Popen, str, str]:
    from onnxship.package import TritonConfig, package_triton

    if not ((TRITON_HOME / ".ok").is_file() and os.access(TRITON_HOME / "server/bin/tritonserver", os.X_OK)):
        raise FileNotFoundError(f"tritonserver is not installed under {TRITON_HOME} (scripts/components.sh)")
    repo = work / "triton_repo"
    package_triton(
        release, TritonConfig(repo=repo, max_batch_size=32, dynamic_batching=True, model_name="deeplog")
    )
    backends = work / "triton_backends"
    (backends / "onnxruntime").mkdir(parents=True)
    (backends / "python").symlink_to(TRITON_HOME / "server/backends/python")
    (backends / "onnxruntime" / "model.py").write_text(TRITON_BACKEND)
    libs = [str(Path(sys.base_prefix) / "lib")] + [
        str(p) for p in TRITON_HOME.glob("venv/lib/python3*/site-packages/nvidia_pytriton.libs")
    ]
    env = {
        **os.environ,
        "PATH": f"{TRITON_HOME / 'venv/bin'}:{os.environ.get('PATH', '')}",
        "LD_LIBRARY_PATH": ":".join(libs),
    }
    port, gport = _free_port(), _free_port()
    cmd = [
        str(TRITON_HOME / "server/bin/tritonserver"),
        f"--model-repository={repo}",
        f"--backend-directory={backends}",
        "--http-address=127.0.0.1",
        f"--http-port={port}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={gport}",
        "--allow-metrics=false",
        "--exit-timeout-secs=2",
    ]
    proc = _popen(cmd, work, env, "triton.log")
    base = f"http://127.0.0.1:{port}"
    _wait(base + "/v2/models/deeplog/ready", proc)
    return proc, base, f"127.0.0.1:{gport}"


def _grpc_codes(base: str) -> dict[str, int]:
    """ModelInfer calls the onnxship server answered over gRPC, by (REST-equivalent) status."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        text = r.read().decode()
    found = re.findall(
        r'^onnxship_requests_total\{[^}]*endpoint="grpc_model_infer",code="(\d+)"\} (\d+)', text, re.M
    )
    return {code: int(n) for code, n in found}


def _requests_per_run(base: str) -> float | None:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        text = r.read().decode()
    runs = re.search(r"^onnxship_batch_requests_count (\d+)", text, re.M)
    reqs = re.search(r"^onnxship_batch_requests_sum (\S+)", text, re.M)
    if runs and reqs and int(runs.group(1)):
        return float(reqs.group(1)) / int(runs.group(1))
    return None


def _summary(points: list[dict]) -> dict:
    """Median over rounds of each number."""
    out: dict = {"rounds": points}
    for key in ("req_per_s", "p50_ms", "p99_ms"):
        vals = [p[key] for p in points if isinstance(p.get(key), (int, float)) and p[key] == p[key]]
        out[key] = statistics.median(vals) if vals else None
        if key == "req_per_s" and vals:  # the spread over rounds says how much the machine's load moved it
            out["req_per_s_range"] = [min(vals), max(vals)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=5, help="seconds per point and round")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (every peer once per round)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/serve_throughput.json"))
    ap.add_argument("--no-mlflow", action="store_true", help="skip `mlflow models serve`")
    ap.add_argument("--no-triton", action="store_true", help="skip Triton")
    ap.add_argument(
        "--only",
        choices=["onnxship"],
        help="onnxship: only the REST and gRPC points of the default `onnxship serve` (a quick ratio check)",
    )
    ap.add_argument(
        "--readme", help="rewrite the ratio table between the serve-ratios markers of this README"
    )
    ap.add_argument("--readme-only", action="store_true", help="only rewrite --readme from an existing --out")
    args = ap.parse_args()
    if args.readme_only:
        _write_readme(Path(args.readme), json.loads(Path(args.out).read_text()))
        return
    for tool in ("wrk", "h2load"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (scripts/components.sh installs it: wrk, nghttp2-client)")
    levels = [1, 32]
    # before any server starts: what other jobs put on the machine (the run itself loads every core)
    load_start = os.getloadavg()
    busy = load_start[0] >= 0.5 * (os.cpu_count() or 1)
    skipped: dict[str, str] = {}
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        release = _ship(work)
        grpc_body = _grpc_body(work)
        targets: dict[str, tuple[str, str]] = {}  # name -> (kind, address)
        try:
            proc, base, gaddr = _onnxship(release, work, [], grpc=True)
            procs.append(proc)
            onnxship_base = base
            targets["onnxship_rest"] = ("wrk", base + "/v2/models/deeplog/infer")
            targets["onnxship_grpc"] = ("h2load", gaddr or "")
            # what one gRPC client channel does: every call multiplexed on one connection (so one worker)
            targets["onnxship_grpc_one_connection"] = ("h2load-mux", gaddr or "")
            if args.only:
                for name in ("onnxship_rest_1_worker", "fastapi_onnxruntime"):
                    skipped[name] = f"--only {args.only}"
            else:
                proc, base, _ = _onnxship(release, work, ["--workers", "1"], grpc=False)
                procs.append(proc)
                targets["onnxship_rest_1_worker"] = ("wrk", base + "/v2/models/deeplog/infer")
                try:
                    proc, base = _fastapi(release, work)
                    procs.append(proc)
                    targets["fastapi_onnxruntime"] = ("wrk", base + "/v2/models/deeplog/infer")
                except (ImportError, RuntimeError) as exc:
                    skipped["fastapi_onnxruntime"] = str(exc)
            if args.only:
                for name in ("mlflow_models_serve", "triton_dynamic_batching", "triton_grpc"):
                    skipped[name] = f"--only {args.only}"
            elif args.no_mlflow:
                skipped["mlflow_models_serve"] = "--no-mlflow"
            else:
                try:
                    proc, base = _mlflow(release, work)
                    procs.append(proc)
                    targets["mlflow_models_serve"] = ("wrk-mlflow", base + "/invocations")
                except (ImportError, RuntimeError) as exc:
                    skipped["mlflow_models_serve"] = str(exc)
            if args.only:
                pass
            elif args.no_triton:
                skipped["triton_dynamic_batching"] = skipped["triton_grpc"] = "--no-triton"
            else:
                try:
                    proc, base, tgrpc = _triton(release, work)
                    procs.append(proc)
                    targets["triton_dynamic_batching"] = ("wrk", base + "/v2/models/deeplog/infer")
                    targets["triton_grpc"] = ("h2load", tgrpc)  # the same Triton server, its gRPC port
                except (FileNotFoundError, RuntimeError) as exc:
                    skipped["triton_dynamic_batching"] = skipped["triton_grpc"] = str(exc)
            # a check that every peer answers the request (not only with a 2xx) before loading it
            _check_answers(targets)

            points: dict[str, dict[int, list[dict]]] = {
                n: {c: [] for c in levels if c > 1 or targets[n][0] != "h2load-mux"} for n in targets
            }
            in_process: list[dict] = []
            for r in range(args.rounds):
                in_process.append(_in_process(release / "deeplog.onnx", args.seconds))
                for name, (kind, address) in targets.items():
                    for c in points[name]:
                        if kind == "h2load":
                            row = _h2load(address, grpc_body, c, args.seconds, work)
                        elif kind == "h2load-mux":  # c=1 would repeat the plain gRPC point
                            row = _h2load(address, grpc_body, 1, args.seconds, work, streams=c)
                        else:
                            body = (
                                json.dumps({"inputs": {"input_sequence": SAMPLE}})
                                if kind == "wrk-mlflow"
                                else V2_BODY
                            )
                            row = _wrk(address, body, c, args.seconds, work)
                        points[name][c].append({"round": r, **row})
                        print(
                            f"round {r} {name} c={c}: {row['req_per_s']} req/s p99 {row['p99_ms']} ms",
                            flush=True,
                        )
            per_run = _requests_per_run(onnxship_base)
            grpc_codes = _grpc_codes(onnxship_base)
        finally:
            for proc in procs:
                _stop(proc)

    peers = {n: {f"c{c}": _summary(v) for c, v in by.items()} for n, by in points.items()}
    floor = {
        "calls_per_s": statistics.median(p["calls_per_s"] for p in in_process),
        "mean_ms": statistics.median(p["mean_ms"] for p in in_process),
        "p50_ms": statistics.median(p["p50_ms"] for p in in_process),
        "rounds": in_process,
    }
    ratios, goals = _ratios(peers, floor)
    results = {
        "measured_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": load_start,
            "load_average_at_end": os.getloadavg(),
            "busy": busy,
            "note": _machine_note(load_start, os.getloadavg(), os.cpu_count() or 1),
        },
        "seconds_per_point": args.seconds,
        "rounds": args.rounds,
        "model": "examples/deeplog/model.py (2-layer LSTM, hidden 64)",
        "request": "one [1,10] int64 sample per request; REST: JSON (wrk -t1 -cN keep-alive); gRPC: ModelInfer "
        "with raw_input_contents (h2load -t1 -cN -m1; one_connection: h2load -t1 -c1 -mN, N calls multiplexed on "
        "one connection as a gRPC client channel does)",
        "onnxship_settings": "defaults: --workers = cores, --max-batch 32, --batch-timeout-ms 0",
        "ratios": ratios,
        "goals": goals,
        "in_process_onnxruntime_batch1": floor,
        "peers": peers,
        "onnxship_mean_requests_per_model_run": per_run,
        # h2load counts HTTP statuses only: the server's own count of gRPC answers by status (all "200" = OK)
        "onnxship_grpc_model_infer_by_status": grpc_codes,
        "skipped": skipped,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({"ratios": ratios, "goals": goals, "skipped": skipped}, indent=2))
    if args.readme:
        _write_readme(Path(args.readme), results)


def _machine_note(start: tuple[float, ...], end: tuple[float, ...], cpus: int) -> str:
    """Busy or quiet, from the 1-minute load average measured before the run started (other jobs' load)."""
    state = "busy" if start[0] >= 0.5 * cpus else "quiet"
    return (
        f"{state} when the run started: 1-minute load average {start[0]:.2f} on {cpus} cores before any server "
        f"started (busy = at least half the cores' worth of other work); {end[0]:.2f} at the end counts this "
        f"benchmark's own servers and load generators. Absolute numbers move with the machine's load between "
        f"runs: compare the ratios of one run (every peer measured in the same interleaved rounds)"
    )


MARK_BEGIN, MARK_END = "<!-- serve-ratios:begin -->", "<!-- serve-ratios:end -->"


def _write_readme(readme: Path, results: dict) -> None:
    """The README's table of this benchmark's ratios (between the serve-ratios markers)."""
    r, g = results["ratios"], results["goals"]

    def x(v: float | None) -> str:
        return "not measured" if v is None else f"{v:.2f}x"

    def ms(v: float | None, plus: bool = False) -> str:
        return "not measured" if v is None else f"{'+' if plus and v >= 0 else ''}{v:.2f} ms"

    def goal(key: str, text: str) -> str:
        met = g.get(key)
        return f"{text} ({'met' if met else 'not met' if met is not None else 'not measured'})"

    rows = [
        (
            "c=32: onnxship REST / Triton 2.51, dynamic batching",
            x(r["c32_onnxship_rest_over_triton_dynamic_batching"]),
            goal("c32_at_least_1.3x_triton", ">= 1.3x"),
        ),
        (
            "c=32: onnxship REST / `mlflow models serve`",
            x(r["c32_onnxship_rest_over_mlflow_models_serve"]),
            goal("c32_at_least_10x_mlflow", ">= 10x"),
        ),
        (
            "c=32: onnxship REST / FastAPI + onnxruntime",
            x(r["c32_onnxship_rest_over_fastapi_onnxruntime"]),
            "",
        ),
        ("c=32: default workers / `--workers 1`", x(r["c32_onnxship_rest_over_one_worker"]), ""),
        (
            "c=32: onnxship gRPC / REST",
            x(r["c32_onnxship_grpc_over_rest"]),
            goal("grpc_beats_rest_c32", "> 1x"),
        ),
        ("c=1: onnxship gRPC / REST", x(r["c1_onnxship_grpc_over_rest"]), ""),
        (
            "c=32 on one connection (32 streams): onnxship gRPC / REST",
            x(r.get("c32_onnxship_grpc_one_connection_over_rest")),
            "",
        ),
        (
            "c=32: onnxship gRPC / Triton 2.51 gRPC, dynamic batching",
            x(r.get("c32_onnxship_grpc_over_triton_grpc")),
            "",
        ),
        (
            "c=32: p99 latency, onnxship REST",
            ms(r["c32_onnxship_rest_p99_ms"]),
            goal("c32_p99_at_most_12ms", "<= 12 ms"),
        ),
        (
            "c=1: added latency over in-process onnxruntime (p50)",
            ms(r["c1_added_latency_ms_p50"], True),
            goal("c1_added_latency_at_most_0.25ms_p50", "<= 0.25 ms"),
        ),
    ]
    machine = results["machine"]
    start = machine.get("load_average_at_start")
    if start is not None:
        load = f"{'busy' if machine.get('busy') else 'quiet'}: load average {start[0]:.1f} before the run"
    else:
        load = f"load average {machine['load_average_at_end'][0]:.1f} at the end, the run included"
    lines = [
        f"Last run: {results['measured_at_utc']}, {machine['cpus']} cores ({load}), {results['rounds']} "
        f"interleaved rounds of {results['seconds_per_point']} s per point; medians over rounds.",
        "",
        "| measured in the same run | ratio | goal |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
    ]
    write_between(readme, MARK_BEGIN, MARK_END, lines)


def _check_answers(targets: dict[str, tuple[str, str]]) -> None:
    for name, (kind, address) in targets.items():
        if kind.startswith("h2load"):
            import tritonclient.grpc as grpcclient

            client = grpcclient.InferenceServerClient(address)
            inp = grpcclient.InferInput("input_sequence", [1, 10], "INT64")
            inp.set_data_from_numpy(np.asarray(SAMPLE, np.int64))
            resp = client.infer("deeplog", [inp]).get_response()
            assert resp.outputs and resp.raw_output_contents, (name, resp)
            continue
        body = json.dumps({"inputs": {"input_sequence": SAMPLE}}) if kind == "wrk-mlflow" else V2_BODY
        req = urllib.request.Request(
            address, data=body.encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            doc = json.loads(r.read())
        assert "outputs" in doc or "predictions" in doc, (name, doc)


def _ratios(peers: dict, floor: dict) -> tuple[dict, dict]:
    def rps(name: str, c: int) -> float | None:
        return peers.get(name, {}).get(f"c{c}", {}).get("req_per_s")

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    rest32, rest1 = rps("onnxship_rest", 32), rps("onnxship_rest", 1)
    ratios = {
        "c32_onnxship_rest_over_triton_dynamic_batching": ratio(rest32, rps("triton_dynamic_batching", 32)),
        "c32_onnxship_rest_over_mlflow_models_serve": ratio(rest32, rps("mlflow_models_serve", 32)),
        "c32_onnxship_rest_over_fastapi_onnxruntime": ratio(rest32, rps("fastapi_onnxruntime", 32)),
        "c32_onnxship_rest_over_one_worker": ratio(rest32, rps("onnxship_rest_1_worker", 32)),
        "c32_onnxship_grpc_over_rest": ratio(rps("onnxship_grpc", 32), rest32),
        "c1_onnxship_grpc_over_rest": ratio(rps("onnxship_grpc", 1), rest1),
        "c32_onnxship_grpc_one_connection_over_rest": ratio(rps("onnxship_grpc_one_connection", 32), rest32),
        "c32_onnxship_grpc_over_triton_grpc": ratio(rps("onnxship_grpc", 32), rps("triton_grpc", 32)),
        "c1_onnxship_grpc_over_triton_grpc": ratio(rps("onnxship_grpc", 1), rps("triton_grpc", 1)),
        "c32_onnxship_rest_over_in_process_onnxruntime_calls": ratio(rest32, floor["calls_per_s"]),
    }
    p99 = peers.get("onnxship_rest", {}).get("c32", {}).get("p99_ms")
    # c=1: the time one request takes end to end (1/throughput, one connection) minus one in-process call
    added_mean = round(1e3 / rest1 - floor["mean_ms"], 4) if rest1 else None
    p50_1 = peers.get("onnxship_rest", {}).get("c1", {}).get("p50_ms")
    added_p50 = round(p50_1 - floor["p50_ms"], 4) if p50_1 is not None else None
    ratios["c1_added_latency_ms_mean"] = added_mean
    ratios["c1_added_latency_ms_p50"] = added_p50
    ratios["c32_onnxship_rest_p99_ms"] = p99
    t = ratios["c32_onnxship_rest_over_triton_dynamic_batching"]
    m = ratios["c32_onnxship_rest_over_mlflow_models_serve"]
    goals = {
        "c32_at_least_1.3x_triton": None if t is None else t >= 1.3,
        "c32_at_least_10x_mlflow": None if m is None else m >= 10,
        "c32_p99_at_most_12ms": None if p99 is None else p99 <= 12,
        "c1_added_latency_at_most_0.25ms_p50": None if added_p50 is None else added_p50 <= 0.25,
        "grpc_beats_rest_c32": None
        if ratios["c32_onnxship_grpc_over_rest"] is None
        else ratios["c32_onnxship_grpc_over_rest"] > 1,
    }
    return ratios, goals


if __name__ == "__main__":
    main()

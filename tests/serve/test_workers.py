"""`onnxship serve --workers N`: several processes on one port stay one server. A reload reaches every worker (or
none), /version names one model version everywhere, /metrics sums every worker, a dead worker is replaced."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest

X = np.random.default_rng(3).integers(0, 30, size=(2, 10)).astype(np.int64)
BODY = json.dumps(
    {
        "inputs": [
            {"name": "input_sequence", "shape": [2, 10], "datatype": "INT64", "data": X.reshape(-1).tolist()}
        ]
    }
)
CONNECTIONS = 40  # fresh connections: SO_REUSEPORT hashes each to a worker; 40 miss one of 2 with p = 2**-39


def _fresh(server, method: str, path: str, body: str | None = None) -> tuple[int, dict]:
    host, port = server.hostport.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body, {"Content-Type": "application/json"} if body else {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _survey(server, last_reload: bool = False) -> dict[int, set[str]]:
    """worker pid -> model versions it reported (and its last_reload), over many fresh connections."""
    seen: dict[int, set[str]] = {}
    for _ in range(CONNECTIONS):
        status, doc = _fresh(server, "GET", "/version")
        assert status == 200
        extra = f":{json.dumps(doc['last_reload'], sort_keys=True)}" if last_reload else ""
        seen.setdefault(doc["worker_pid"], set()).add(f"{doc['model_version']}:{doc['release']}{extra}")
    return seen


@pytest.fixture(scope="module")
def server(bundles, start_server):
    return start_server(["--releases", str(bundles.root), "--workers", "2"])


def test_two_workers_serve_one_port_with_one_version(server, bundles):
    assert "workers=2" in server.output()
    seen = _survey(server)
    assert len(seen) == 2, seen  # both processes answer
    assert os.getpid() not in seen and server.proc.pid not in seen  # workers, not the supervisor
    assert all(v == {f"1:{bundles.v1.name}"} for v in seen.values()), seen


def test_reload_reaches_every_worker_and_failures_reach_none(server, bundles):
    status, doc = server.json("POST", "/reload", {"model_path": f"deeplog/{bundles.bad_golden.name}"})
    assert status == 422 and "golden check" in doc["error"]
    assert all(v == {f"1:{bundles.v1.name}"} for v in _survey(server).values())
    notes = {v.pop().split(":", 2)[2] for v in _survey(server, last_reload=True).values()}
    assert (
        len(notes) == 1 and json.loads(notes.pop())["ok"] is False
    )  # every worker tells the same last_reload

    status, doc = server.json("POST", "/reload", {"model_path": f"deeplog/{bundles.v2.name}"})
    assert status == 200 and doc["model_version"] == "2", doc
    seen = _survey(server, last_reload=True)  # right after the answer: every worker already serves version 2
    assert len(seen) == 2 and len(set().union(*seen.values())) == 1, seen
    assert all(v.pop().startswith(f"2:{bundles.v2.name}:") for v in seen.values())
    want = bundles.expected(bundles.v2.name, {"input_sequence": X})
    for _ in range(CONNECTIONS):
        status, out = _fresh(server, "POST", "/v2/models/deeplog/infer", BODY)
        assert status == 200 and out["model_version"] == "2"
        np.testing.assert_allclose(
            np.asarray(out["outputs"][0]["data"], np.float32).reshape(2, 30), want, atol=1e-5
        )

    status, doc = server.json("POST", "/reload", {})  # latest again: one more version, everywhere
    assert status == 200 and doc["model_version"] == "3" and doc["release"] == bundles.v1.name
    assert all(v == {f"3:{bundles.v1.name}"} for v in _survey(server).values())


def test_metrics_sum_every_worker(bundles, start_server):
    s = start_server(["--releases", str(bundles.root), "--workers", "2"])
    for _ in range(CONNECTIONS):
        assert _fresh(s, "POST", "/v2/models/deeplog/infer", BODY)[0] == 200
    assert s.json("POST", "/reload", {"model_path": f"deeplog/{bundles.v2.name}"})[0] == 200
    for _ in range(3):  # asked on any worker, the same totals
        text = s.request("GET", "/metrics")[2].decode()
        assert f'onnxship_requests_total{{model="deeplog",endpoint="infer",code="200"}} {CONNECTIONS}' in text
        assert 'onnxship_reloads_total{outcome="ok"} 1' in text  # one reload, not one per worker
        assert "onnxship_model_version" in text and re.search(
            r'onnxship_model_version\{model="deeplog"\} 2', text
        )
        rows = re.search(r"^onnxship_batch_rows_sum (\S+)", text, re.M)
        assert rows and float(rows.group(1)) == 2 * CONNECTIONS  # rows the batchers ran, over both workers


def test_a_dead_worker_is_replaced_with_the_current_model(bundles, start_server):
    s = start_server(["--releases", str(bundles.root), "--workers", "2"])
    assert s.json("POST", "/reload", {"model_path": f"deeplog/{bundles.v2.name}"})[0] == 200
    before = _survey(s)
    victim = sorted(before)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            seen = _survey(s)
        except (ConnectionError, OSError):  # connections hashed to the dead worker's socket until it is gone
            time.sleep(0.2)
            continue
        if len(seen) == 2 and victim not in seen:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"no replacement worker: {s.output()[-2000:]}")
    assert all(v == {f"2:{bundles.v2.name}"} for v in seen.values()), seen  # the replacement serves version 2


def test_stop_reports_every_worker(bundles, start_server):
    s = start_server(["--releases", str(bundles.root), "--workers", "2"])
    for _ in range(10):
        assert _fresh(s, "POST", "/v2/models/deeplog/infer", BODY)[0] == 200
    s.stop()
    assert s.proc.returncode == 0, s.output()
    assert "stopped: 10 infer requests" in s.output()


def test_concurrent_reloads_on_different_workers_end_in_one_version(bundles, start_server):
    """Reloads sent at once (fresh connections, so to different workers) are applied one after the other: each
    gets its own version number and every worker ends on the same release."""
    import threading

    s = start_server(["--releases", str(bundles.root), "--workers", "2"])
    plan = [bundles.v2, bundles.v1, bundles.v2, bundles.v1]
    answers: list[tuple[int, dict]] = []

    def reload(path) -> None:
        answers.append(_fresh(s, "POST", "/reload", json.dumps({"model_path": str(path)})))

    threads = [threading.Thread(target=reload, args=(p,)) for p in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [st for st, _ in answers] == [200] * len(plan), answers
    versions = sorted(int(doc["model_version"]) for _, doc in answers)
    assert versions == [2, 3, 4, 5]  # one number per reload, none shared
    last = max(answers, key=lambda a: int(a[1]["model_version"]))[1]
    seen = _survey(s)
    assert len(seen) == 2 and all(v == {f"5:{last['release']}"} for v in seen.values()), seen


@pytest.mark.parametrize(
    ("cpu_max", "cap"), [("max 100000\n", None), ("150000 100000\n", 2), ("50000 100000", 1)]
)
def test_default_workers_follow_the_cpu_quota(tmp_path, cpu_max, cap):
    from onnxship.serve._workers import default_workers

    f = tmp_path / "cpu.max"
    f.write_text(cpu_max)
    cores = len(os.sched_getaffinity(0))
    assert default_workers(str(f)) == (cores if cap is None else min(cores, cap))
    assert default_workers(str(tmp_path / "absent")) == cores


def test_a_port_in_use_is_refused_not_shared(bundles, start_server, tmp_path):
    """A second server on the first one's port (both with SO_REUSEPORT workers) fails clearly instead of taking
    half of its connections."""
    import subprocess
    import sys

    s = start_server(["--releases", str(bundles.root), "--workers", "2"])
    port = s.hostport.split(":")[1]
    exe = str(Path(sys.executable).with_name("onnxship"))
    for flag in ("--port", "--grpc-port"):
        args = ["--port", port] if flag == "--port" else ["--port", "0", "--grpc-port", port]
        out = subprocess.run(
            [exe, "serve", "--releases", str(bundles.root), "--workers", "2", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert out.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in out.stderr, out.stderr[-500:]
        assert "Traceback" not in out.stderr

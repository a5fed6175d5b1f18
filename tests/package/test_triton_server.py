"""A real tritonserver (Triton 2.51 from the nvidia-pytriton wheel) loads the generated repository unchanged and
answers like PyTorch. The `onnxruntime` backend is the test shim in triton_harness/ (see its README)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from onnxship.package import TritonConfig, package_triton
from onnxship.verify import read_golden

pytestmark = [pytest.mark.triton, pytest.mark.component]

HOME = (
    Path(sys.prefix) / ".components" / "tritonserver"
)  # written by scripts/components.sh component_tritonserver
HARNESS = Path(__file__).resolve().parent / "triton_harness"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _installed() -> bool:
    return (HOME / ".ok").is_file() and os.access(HOME / "server/bin/tritonserver", os.X_OK)


@pytest.fixture(scope="module")
def triton(shipped, tmp_path_factory, require_component):
    require_component(_installed(), f"tritonserver is not installed under {HOME} (scripts/components.sh)")
    try:
        import tritonclient.http as httpclient
    except ImportError:
        require_component(False, "tritonclient[http] is not installed (pip install 'onnxship[triton]')")
    releases, r1, r2 = shipped
    work = tmp_path_factory.mktemp("triton")
    result = package_triton(
        releases / "deeplog",
        TritonConfig(
            repo=work / "repo", max_batch_size=8, dynamic_batching=True, version_policy="all", warmup=True
        ),
    )
    backends = work / "backends"
    backends.mkdir()
    (backends / "python").symlink_to(HOME / "server/backends/python")
    shutil.copytree(HARNESS / "onnxruntime", backends / "onnxruntime")
    libs = [str(Path(sys.base_prefix) / "lib")] + [
        str(p) for p in HOME.glob("venv/lib/python3*/site-packages/nvidia_pytriton.libs")
    ]
    env = {
        **os.environ,
        "PATH": f"{HOME / 'venv/bin'}:{os.environ.get('PATH', '')}",
        "LD_LIBRARY_PATH": ":".join(libs),
    }
    http_port, grpc_port = _free_port(), _free_port()
    log = open(work / "tritonserver.log", "w")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen(
        [
            str(HOME / "server/bin/tritonserver"),
            f"--model-repository={work / 'repo'}",
            f"--backend-directory={backends}",
            "--http-address=127.0.0.1",
            f"--http-port={http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={grpc_port}",
            "--allow-metrics=false",
            "--exit-timeout-secs=2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    client = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail("tritonserver exited:\n" + (work / "tritonserver.log").read_text()[-3000:])
            try:
                if (
                    client.is_server_ready()
                    and client.is_model_ready("deeplog", "1")
                    and client.is_model_ready("deeplog", "2")
                ):
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    "tritonserver not ready in 90 s:\n" + (work / "tritonserver.log").read_text()[-3000:]
                )
            time.sleep(0.25)
        yield client, result, (r1, r2)
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _infer(client, x: np.ndarray, version: str) -> np.ndarray:
    import tritonclient.http as httpclient

    inp = httpclient.InferInput("input_sequence", list(x.shape), "INT64")
    inp.set_data_from_numpy(x)
    res = client.infer(
        "deeplog", [inp], model_version=version, outputs=[httpclient.InferRequestedOutput("output_0")]
    )
    return res.as_numpy("output_0")


def test_server_loaded_the_generated_config(triton):
    client, result, _ = triton
    cfg = client.get_model_config("deeplog")
    assert cfg["platform"] == "onnxruntime_onnx" and cfg["max_batch_size"] == 8
    assert cfg["input"][0]["dims"] == [-1] and cfg["output"][0]["dims"] == [30]
    assert cfg["model_warmup"][0]["name"] == "golden"  # ran on a golden sample before the model turned ready
    assert result.versions == {1: triton[2][0].version, 2: triton[2][1].version}


@pytest.mark.parametrize("version", ["1", "2"])
def test_golden_replay_matches_pytorch(triton, version):
    client, _, releases = triton
    golden = read_golden(releases[int(version) - 1].path / "golden.npz")
    got = _infer(client, golden.inputs["input_sequence"], version)
    np.testing.assert_allclose(got, golden.outputs["output_0"], atol=1e-5, rtol=1e-4)


def test_other_shapes_match_pytorch(triton, deeplog_model):
    import torch

    client, _, _ = triton
    rng = np.random.default_rng(3)
    for batch, seq in ((1, 10), (3, 17), (8, 32)):
        x = rng.integers(0, 30, size=(batch, seq)).astype(np.int64)
        with torch.inference_mode():
            ref = deeplog_model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(_infer(client, x, "2"), ref, atol=1e-5, rtol=1e-4)


def test_triton_enforces_the_config(triton):
    from tritonclient.utils import InferenceServerException

    client, _, _ = triton
    with pytest.raises(InferenceServerException, match="batch"):
        _infer(client, np.zeros((9, 10), dtype=np.int64), "2")  # above max_batch_size 8
    with pytest.raises(InferenceServerException):
        _infer(client, np.zeros((2, 10, 1), dtype=np.int64), "2")  # wrong rank

"""One source of truth for serving limits: the release's largest batch, read alike by every consumer.

The release records it (declared by the batch dim's range, verified by the shape sweep); ``package triton``,
``ship --triton-repo``, ``serve`` and the MLflow model all get the same number, and the flags that lower it
(``--max-batch-size``, ``--max-batch``) are checked against it the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from onnxship import ConfigError
from onnxship.package import ServingLimits, serving_limits
from onnxship.package._limits import derive_limits


def _rec(name: str, *dims: tuple) -> dict:
    return {
        "name": name,
        "dtype": "float32",
        "dims": [{"value": v, "name": n, "max": mx, "min": 1} for v, n, mx in dims],
    }


@pytest.mark.parametrize(
    ("inputs", "verified", "want"),
    [
        # declared range, sweep verified its top: the declared max
        ([_rec("x", (2, "batch", 16), (4, None, None))], [{"batch": 2}, {"batch": 16}], (16, "declared")),
        # no declared max: the largest batch the sweep verified (today's 5 for batch=2)
        (
            [_rec("x", (2, "batch", None))],
            [{"batch": 2}, {"batch": 1}, {"batch": 3}, {"batch": 5}],
            (5, "verified"),
        ),
        # declared but the sweep only got part of the way: what was verified, not what was hoped for
        ([_rec("x", (2, "batch", 64))], [{"batch": 2}, {"batch": 3}, {"batch": 16}], (16, "verified")),
        # declared, no sweep record (an export without a sweep): the declaration
        ([_rec("x", (2, "batch", 8))], [], (8, "declared")),
        # two inputs sharing the batch dim
        ([_rec("a", (2, "b", 4)), _rec("m", (2, "b", 4))], [{"b": 4}], (4, "declared")),
    ],
)
def test_derived_limits(inputs, verified, want):
    lim = derive_limits(inputs, verified)
    assert (lim.max_batch, lim.source) == want
    assert ServingLimits.from_dict(json.loads(json.dumps(lim.to_dict()))) == lim


@pytest.mark.parametrize(
    ("inputs", "needle"),
    [
        ([_rec("x", (3, None, None), (4, None, None))], "no dynamic axis 0"),
        ([_rec("a", (2, "batch", None)), _rec("b", (2, "n", None))], "does not start with"),
        ([], "no input specs"),
    ],
)
def test_not_batchable(inputs, needle):
    lim = derive_limits(inputs, [{"batch": 2}])
    assert not lim.batchable and lim.max_batch is None and needle in (lim.why_not or "")
    assert lim.resolve(None, "--max-batch") is None


def test_recorded_limits_win_over_derivation():
    meta = {
        "inputs": [_rec("x", (2, "batch", 64))],
        "verified_dims": [{"batch": 64}],
        "serving": {"batch_dim": "batch", "max_batch": 12, "source": "declared"},
    }
    assert serving_limits(meta).max_batch == 12


def test_override_rules_are_the_same_for_every_flag():
    lim = ServingLimits("batch", 16, "declared", declared=16, verified=16)
    assert lim.resolve(None, "--max-batch") == 16
    assert lim.resolve(8, "--max-batch") == 8
    assert lim.resolve(0, "--max-batch-size", zero_disables=True) == 0
    for flag in ("--max-batch", "--max-batch-size"):
        with pytest.raises(ConfigError, match=f"{flag} 32 is above the declared batch maximum 16"):
            lim.resolve(32, flag)
    with pytest.raises(ConfigError, match="must be >= 1"):
        lim.resolve(0, "--max-batch")
    unbounded = ServingLimits("batch", None, "none")
    assert unbounded.resolve(40, "--max-batch") == 40 and unbounded.resolve(None, "--max-batch") is None


# -- the same release through every consumer ---------------------------------------------------------------------


class _Tiny:
    @staticmethod
    def build():
        import torch

        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def _ship(root: Path, spec: str, name: str):
    from onnxship.ship import ship
    from onnxship.spec import ShipConfig

    cfg = ShipConfig()
    cfg.model.name = name
    cfg.paths.releases = str(root / "releases")
    cfg.export.strategy = "torchscript"
    cfg.export.inputs = [spec]
    cfg.verify.golden_samples = 2
    cfg.verify.sample_count = 4
    cfg.package.triton.repo = str(root / "triton")  # ship --triton-repo
    return ship(_Tiny.build(), config=cfg)


@pytest.fixture(scope="module")
def undeclared(tmp_path_factory):
    """batch=2 with no declared max: the sweep verifies 1, 2, 3 and 5."""
    return _ship(tmp_path_factory.mktemp("lim"), "x:batch=2 x 4:float32", "undeclared")


@pytest.fixture(scope="module")
def declared(tmp_path_factory):
    return _ship(tmp_path_factory.mktemp("lim"), "x:batch=2..16 x 4:float32", "declared")


def _served(release_path: Path, max_batch: int | None = None):
    from onnxship.serve import ServeConfig
    from onnxship.serve._locate import locate
    from onnxship.serve._model import load_model

    return load_model(locate(release_path), ServeConfig(model_path=str(release_path), max_batch=max_batch))


def _status(model, rows: int) -> int:
    from onnxship.serve._signature import RequestError

    try:
        model.signature.check({"x": np.zeros((rows, 4), np.float32)}, {"x": "FP32"})
    except RequestError as exc:
        assert "outside the verified range" in exc.message
        return exc.status
    return 200


class _Server:
    """A real ``onnxship serve`` process on 127.0.0.1 (port 0), stopped by PID."""

    def __init__(self, release: Path, work: Path, *args: str) -> None:
        exe = Path(sys.executable).with_name("onnxship")
        self.out = work / "serve.out"
        env = {k: v for k, v in os.environ.items() if k not in ("MODEL_PATH", "ONNXSHIP_TOKEN")}
        with open(self.out, "wb") as fh:
            self.proc = subprocess.Popen(
                [str(exe), "serve", "--port", "0", "--model-path", str(release), *args],
                cwd=work,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        self.url = ""
        while time.monotonic() < deadline and not self.url:
            m = re.search(r"http://127\.0\.0\.1:(\d+)", self.out.read_text(errors="replace"))
            if m:
                self.url = m.group(0)
            elif self.proc.poll() is not None:
                break
            time.sleep(0.05)
        while self.url and time.monotonic() < deadline and self.get("/v2/health/ready")[0] != 200:
            time.sleep(0.05)

    def get(self, path: str, body: dict | None = None) -> tuple[int, dict]:
        req = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode() if body is not None else None
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")
        except urllib.error.URLError:
            return 0, {}

    def infer(self, name: str, rows: int) -> int:
        body = {"inputs": [{"name": "x", "shape": [rows, 4], "datatype": "FP32", "data": [0.5] * (rows * 4)}]}
        return self.get(f"/v2/models/{name}/infer", body)[0]

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.out.read_text(errors="replace")


@contextlib.contextmanager
def _serve(release: Path, work: Path, *args: str):
    server = _Server(release, work, *args)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize(("which", "top"), [("undeclared", 5), ("declared", 16)])
def test_every_consumer_reads_the_release_limit(which, top, request, tmp_path):
    from onnxship.package import TritonConfig, package_triton, read_release

    shipped = request.getfixturevalue(which)
    release = read_release(shipped.path)
    assert release.meta["serving"]["max_batch"] == top  # recorded in the release by ship
    assert serving_limits(release.meta).max_batch == top
    # ship --triton-repo and package triton
    assert shipped.triton is not None and shipped.triton.max_batch_size == top
    assert package_triton(shipped.path, TritonConfig(repo=tmp_path / "t")).max_batch_size == top
    # serve: accepts the largest batch, refuses one more, reports the same number
    model = _served(shipped.path)
    assert model.signature.batch_max == top
    assert _status(model, top) == 200 and _status(model, top + 1) == 400 and _status(model, top + 3) == 400
    with _serve(shipped.path, tmp_path) as server:
        assert server.url, server.stop()
        status, meta = server.get(f"/v2/models/{which}")
        assert status == 200 and meta["parameters"]["max_batch"] == top
        assert server.infer(which, top) == 200 and server.infer(which, top + 1) == 400
    # MLflow's parameters of the release
    from onnxship.publish._bundle import open_bundle
    from onnxship.publish._record import PARAM_PREFIX, _params

    view = open_bundle(shipped.path)
    assert _params(view, {"inputs": [], "outputs": []})[PARAM_PREFIX + "max_batch"] == str(top)


@pytest.mark.slow
def test_flags_lower_the_limit_alike_and_cannot_raise_it(declared, tmp_path):
    from onnxship import PackagingError
    from onnxship.package import TritonConfig, package_triton

    assert (
        package_triton(declared.path, TritonConfig(repo=tmp_path / "a", max_batch_size=8)).max_batch_size == 8
    )
    model = _served(declared.path, max_batch=8)
    assert model.signature.batch_max == 8
    assert _status(model, 8) == 200 and _status(model, 9) == 400  # not merged-only: the request itself
    with _serve(declared.path, tmp_path, "--max-batch", "8") as server:
        assert server.url, server.stop()
        assert server.get("/v2/models/declared")[1]["parameters"]["max_batch"] == 8
        assert server.infer("declared", 8) == 200 and server.infer("declared", 9) == 400
    (tmp_path / "w").mkdir()
    server = _Server(declared.path, tmp_path / "w", "--max-batch", "32")
    out = server.stop()
    assert (
        server.proc.returncode not in (0, None)
        and "--max-batch 32 is above" in out
        and "Traceback" not in out
    )
    msg = "32 is above the declared batch maximum 16"
    with pytest.raises(PackagingError, match=f"--max-batch-size {msg}"):
        package_triton(declared.path, TritonConfig(repo=tmp_path / "b", max_batch_size=32))
    from onnxship._errors import ServeError

    with pytest.raises(ServeError, match=f"--max-batch {msg}"):
        _served(declared.path, max_batch=32)
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


@pytest.mark.slow
def test_mlflow_model_carries_the_limit(undeclared, tmp_path):
    pytest.importorskip("mlflow")
    import mlflow

    from onnxship.publish import publish, resolve_tracking

    result = publish(undeclared.path, store_dir=tmp_path / "store")
    mlflow.set_tracking_uri(resolve_tracking(store_dir=tmp_path / "store").uri)
    try:
        info = mlflow.models.get_model_info(result.model_uri)
        assert info.metadata["onnxship_serving"]["max_batch"] == 5
        run = mlflow.MlflowClient().get_run(result.run_id)
        from onnxship.publish._record import PARAM_PREFIX

        assert run.data.params[PARAM_PREFIX + "max_batch"] == "5"
    finally:
        mlflow.set_tracking_uri(None)

"""auto and fastest run dynamo and TorchScript side by side (a worker process each) and choose by policy.

Concurrency is asserted on the candidates' recorded start/finish timestamps (wall clock, comparable across the
worker processes), never on absolute times. These tests run the dynamo exporter: seconds each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import onnxship
from onnxship import ExportError
from onnxship.testing import SmallCNN


@pytest.fixture(autouse=True)
def _concurrency_on(monkeypatch):
    monkeypatch.delenv("ONNXSHIP_EXPORT_CONCURRENCY", raising=False)  # the default: concurrent candidates


pytestmark = pytest.mark.slow

SPEC = ["x:batch=2 x 4:float32"]


class Plain(torch.nn.Module):
    """Both exporters verify it."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).relu()


class TraceOnly(Plain):
    """torch.export (dynamo) cannot take it; tracing (TorchScript) can."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting():
            raise NotImplementedError("this layer has no torch.export support")
        return self.lin(x).relu()


def _overlap(a, b) -> bool:
    return a.started_at < b.finished_at and b.started_at < a.finished_at


def test_auto_prefers_dynamo_when_both_verify(tmp_path):
    torch.manual_seed(0)
    result = onnxship.export(Plain().eval(), inputs=SPEC, out=tmp_path, name="plain")
    assert result.strategy == "dynamo"
    dyn, ts = result.candidates
    assert (dyn.strategy, dyn.outcome) == ("dynamo", "accepted")
    assert ts.strategy == "torchscript" and ts.outcome == "skipped"
    assert "auto prefers" in ts.reason and "dynamo/opset18" in ts.reason
    assert _overlap(dyn, ts)  # TorchScript ran while dynamo was still exporting
    side = json.loads(result.meta_path.read_text())
    assert [c["outcome"] for c in side["candidates"]] == ["accepted", "skipped"]
    assert side["candidates"][0]["started_at"] > 0 and side["candidates"][0]["finished_at"] > 0


def test_auto_falls_back_to_torchscript_without_paying_in_sequence(tmp_path):
    torch.manual_seed(0)
    result = onnxship.export(TraceOnly().eval(), inputs=SPEC, out=tmp_path / "a", name="t")
    assert result.strategy == "torchscript"
    dyn, ts = result.candidates
    assert (dyn.strategy, dyn.outcome) == ("dynamo", "failed") and "torch.export support" in dyn.reason
    assert (ts.strategy, ts.outcome) == ("torchscript", "accepted")
    assert _overlap(dyn, ts)  # the fallback was verified while dynamo was failing, not after it
    assert ts.started_at < dyn.finished_at
    # the cache still remembers the dynamo failure: the next export skips it and runs TorchScript alone
    again = onnxship.export(TraceOnly().eval(), inputs=SPEC, out=tmp_path / "b", name="t")
    assert again.strategy == "torchscript"
    assert again.candidates[0].outcome == "skipped" and again.candidates[0].reason.startswith(
        "cached: failed"
    )


def test_fastest_tries_the_cheaper_exporter_first_and_stops_there(tmp_path):
    torch.manual_seed(0)
    result = onnxship.export(Plain().eval(), inputs=SPEC, out=tmp_path, name="plain", strategy="fastest")
    assert [c.strategy for c in result.candidates] == ["dynamo", "torchscript"]  # preference order kept
    dyn, ts = result.candidates
    assert result.accepted is ts and ts.outcome == "accepted"
    assert (
        dyn.outcome == "skipped"
        and dyn.reason.startswith("not run: torchscript/opset")
        and "fastest" in dyn.reason
    )


def test_fastest_runs_the_expensive_exporter_only_when_the_cheap_one_fails(tmp_path):
    class ScriptOnlyFails(Plain):
        """Tracing (TorchScript) freezes the branch and is refused; dynamo keeps it as a graph condition."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.lin(x)
            return torch.cond(y.sum() > 0, lambda t: t.relu(), lambda t: -t, (y,))

    torch.manual_seed(0)
    result = onnxship.export(
        ScriptOnlyFails().eval(), inputs=SPEC, out=tmp_path, name="c", strategy="fastest", use_cache=False
    )
    dyn, ts = result.candidates
    assert result.accepted is dyn and dyn.outcome == "accepted"
    assert ts.outcome in ("failed", "rejected")
    assert ts.finished_at <= dyn.started_at  # one after another, cheapest first


def test_auto_with_a_forkserver_worker(tmp_path, monkeypatch):
    """The spawn-safe path: the job is pickled to a fresh interpreter (the model class must be importable)."""
    monkeypatch.setenv("ONNXSHIP_EXPORT_START_METHOD", "forkserver")
    torch.manual_seed(0)
    result = onnxship.export(SmallCNN().eval(), inputs=["image:batch=2 x 3 x 16 x 16:float32"], out=tmp_path)
    assert result.accepted.outcome == "accepted" and len(result.candidates) == 2
    assert _overlap(*result.candidates)


_MODELS = """
import os, sys
import torch

print("model module imported")  # a chatty module: must not reach --json's stdout


class Quits(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x):
        if torch.compiler.is_exporting():
            print("quitting from forward")
            sys.exit(3)
        print("forward ran")
        return self.lin(x)


class Dies(Quits):
    def forward(self, x):
        if torch.jit.is_tracing():  # TorchScript: the fallback, in a worker process
            os._exit(7)
        if torch.compiler.is_exporting():  # dynamo: the preferred candidate, in the exporting process
            raise NotImplementedError("this layer has no torch.export support")
        return self.lin(x)


def quits():
    return Quits()


def dies():
    return Dies()
"""


def _cli(tmp_path, factory: str, *extra: str) -> subprocess.CompletedProcess:
    (tmp_path / "models.py").write_text(_MODELS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "300"}
    cmd = [sys.executable, "-c", "from onnxship.cli import main; main()", "export", "-m"]
    cmd += [f"{tmp_path / 'models.py'}:{factory}", "-i", SPEC[0], "-o", str(tmp_path / factory), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_user_code_that_exits_in_a_worker_stays_inside_the_boundary(tmp_path):
    r = _cli(tmp_path, "quits", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)  # the model's prints went to stderr, not into the JSON
    assert doc["strategy"] == "torchscript"
    dyn = doc["candidates"][0]
    assert dyn["outcome"] == "failed" and "SystemExit: 3" in dyn["reason"]
    assert "Traceback" not in r.stderr


def test_a_worker_that_dies_gives_one_clear_error(tmp_path):
    r = _cli(tmp_path, "dies")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr + r.stdout
    assert "exited with code 7" in r.stderr  # the fallback says its worker ended the process
    assert "torch.export support" in r.stderr  # the preferred candidate's own failure
    assert not list((tmp_path / "dies").glob("*.onnx"))
    with pytest.raises(ExportError, match="no export candidate"):
        onnxship.export(
            _load(tmp_path, "dies"),
            inputs=SPEC,
            out=tmp_path / "api",
            name="dies",
            use_cache=False,  # the CLI run above cached dynamo's failure: TorchScript alone would run in-process
        )


def _load(tmp_path, factory: str):
    from onnxship.spec import parse_model_spec

    return parse_model_spec(f"{tmp_path / 'models.py'}:{factory}")


def test_the_verdict_waits_for_the_preferred_candidate(tmp_path):
    from onnxship.export._candidates import CandidateOutcome
    from onnxship.export._concurrent import _decide

    ok = CandidateOutcome([], path=tmp_path / "ok.onnx")
    bad = CandidateOutcome([])
    assert _decide([None, ok]) is None  # dynamo still running: TorchScript's pass must wait
    assert _decide([bad, ok]) == 1  # dynamo failed: the fallback, already verified
    assert _decide([ok, ok]) == 0  # both verified: the preferred one
    assert _decide([bad, bad]) is None


_TRAINED_IN_PROCESS = """
import sys, tempfile, torch, onnxship
from onnxship.testing import SmallCNN

torch.set_num_threads(2)
model = SmallCNN()
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for _ in range(3):  # training runs OpenMP parallel regions in this process before the workers are forked
    loss = model(torch.randn(16, 3, 32, 32)).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
model.eval()
result = onnxship.export(
    model, inputs=["image:batch=2 x 3 x 16 x 16:float32"], out=tempfile.mkdtemp(), name="m", use_cache=False
)
print("exported", result.strategy, [c.outcome for c in result.candidates])
"""


def test_workers_of_a_process_that_trained_the_model_do_not_hang():
    """GNU OpenMP's pool does not survive fork(): the workers must not enter a parallel region with its threads."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run(
        [sys.executable, "-c", _TRAINED_IN_PROCESS], capture_output=True, text=True, env=env, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "exported dynamo ['accepted', 'skipped']" in r.stdout

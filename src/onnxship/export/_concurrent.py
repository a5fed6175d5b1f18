"""Export candidates by policy: at once, fallbacks in worker processes (``auto``), or cheapest first (``fastest``).

- ``preference`` (``auto``): ``auto`` used to pay for the dynamo attempt before TorchScript could start, so a
  fallback cost both exporters in sequence. Here the candidates of a group (dynamo and TorchScript at one
  dynamic/static mode) run at once, each through the full gate (export/_candidates.py): the preferred one in this
  process with every core (the verdict waits for it in any case), the fallbacks in a worker process each beside it.
  The first candidate in preference order that verifies wins, decided as soon as every candidate before it has
  failed; the others are stopped.
- ``fastest``: the first candidate to pass the full gate. The exporters' costs are far apart (TorchScript's call
  took 1/20 to 1/70 of dynamo's on every architecture of benchmarks/export_time.py and wherever both were correct
  in the zoo), so the candidates run one after another in this process, cheapest first (``EXPECTED_COST``), with
  every core: a concurrent pair would split the cores and pay for worker processes on every export, while the
  cheap candidate failing first costs a few percent of the expensive one. Like a single ``--strategy``, user code
  that ends the process here ends the export.

Workers start with ``fork`` where the platform has it (nothing to pickle, no torch import to pay); with
``ONNXSHIP_EXPORT_START_METHOD=spawn`` or ``forkserver`` the job is pickled, and a job that cannot be pickled (a model
class defined inside a function) runs in-process instead. Every worker runs torch with one intra-op thread: the
candidates share the cores, and GNU OpenMP's thread pool does not survive ``fork()`` (a worker of a parent that
already ran a parallel region, e.g. one that trained the model, would hang in its first parallel region with more
threads). ``ONNXSHIP_EXPORT_CONCURRENCY=0`` runs the candidates one after another in the parent (preference order,
stopping at the first verified one), as does an export inside a daemonic process (a multiprocessing Pool worker),
which may not start children.

User code runs inside the same error boundary in a worker as in this process: anything it raises, ``sys.exit()``
included, becomes that candidate's "failed" record, and a worker that dies without answering is recorded as such;
what it prints goes to stderr, never into a ``--json`` result on stdout.

DO NOT import torch at module level.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from onnxship import _progress
from onnxship._errors import ExportError
from onnxship.export._candidates import CandidateJob, CandidateOutcome, try_candidate
from onnxship.export._config import CandidateRecord

__all__ = ["GroupResult", "run_group", "start_method"]

POLICIES = ("preference", "fastest")
_FALLBACK_NICENESS = 10
# fastest runs the cheaper exporters first (lower first; unlisted ones last, in preference order)
EXPECTED_COST = {"torchscript": 0, "dynamo": 1}


@dataclass
class GroupResult:
    """Each job's outcome in job order, and the index of the chosen one (None: none verified)."""

    outcomes: list[CandidateOutcome]
    chosen: int | None


def start_method() -> str:
    """The multiprocessing start method for candidate workers (ONNXSHIP_EXPORT_START_METHOD, else fork)."""
    methods = multiprocessing.get_all_start_methods()
    asked = os.environ.get("ONNXSHIP_EXPORT_START_METHOD", "").strip()
    if asked in methods:
        return asked
    return "fork" if "fork" in methods else "spawn"


def _concurrent_enabled() -> bool:
    if multiprocessing.current_process().daemon:  # a daemonic process (a Pool worker) may not start children
        return False
    # ONNXSHIP_EXPORT_CONCURRENCY=0 opts out (one candidate at a time, in this process)
    return os.environ.get("ONNXSHIP_EXPORT_CONCURRENCY", "1").strip().lower() not in (
        "0",
        "false",
        "no",
        "off",
    )


def run_group(jobs: list[CandidateJob], policy: str = "preference") -> GroupResult:
    """Run the jobs (in preference order) and choose one by ``policy``; a single job runs in-process."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}")
    if policy == "fastest" and len(jobs) > 1:
        return _cheapest_first(jobs)
    if len(jobs) <= 1 or not _concurrent_enabled():
        return _sequential(jobs)
    method = start_method()
    if method != "fork" and not _picklable(jobs[1:]):  # the preferred job runs here
        return _sequential(jobs)
    return _concurrent(jobs, multiprocessing.get_context(method))


def _picklable(jobs: list[CandidateJob]) -> bool:
    """A spawned worker unpickles the job in a fresh interpreter: every model class must be importable there."""
    import importlib.util

    try:
        pickle.dumps(jobs)
        for job in jobs:
            for mod in job.module.modules():
                name = type(mod).__module__
                if name == "__main__" or importlib.util.find_spec(name) is None:
                    return False
    except Exception:  # a class defined in a function, a model file loaded by path
        return False
    return True


def _sequential(jobs: list[CandidateJob]) -> GroupResult:
    outcomes: list[CandidateOutcome] = []
    for i, job in enumerate(jobs):
        started = time.time()
        try:
            outcome = try_candidate(job)
        except SystemExit as exc:  # the model's code called sys.exit() while exporting: that candidate failed
            outcome = _crashed_outcome(job, f"export failed: SystemExit: {exc}", started)
        outcomes.append(outcome)
        if outcome.path is not None:
            return GroupResult(outcomes, i)
    return GroupResult(outcomes, None)


def _cheapest_first(jobs: list[CandidateJob]) -> GroupResult:
    """fastest: one candidate at a time in this process, cheapest first; the rest are skipped once one verifies."""
    order = sorted(range(len(jobs)), key=lambda i: EXPECTED_COST.get(jobs[i].strategy, len(EXPECTED_COST)))
    ran = _sequential([jobs[i] for i in order])
    results: list[CandidateOutcome | None] = [None] * len(jobs)
    for i, outcome in zip(order, ran.outcomes, strict=False):
        results[i] = outcome
    chosen = None if ran.chosen is None else order[ran.chosen]
    return GroupResult(_settle(results, jobs, chosen, "fastest", [time.time()] * len(jobs)), chosen)


def _worker(conn: Connection, job: CandidateJob) -> None:
    """A candidate in its own process: user code inside the boundary, one message back, stdout kept clean."""
    try:
        os.dup2(2, 1)  # the model's prints go to stderr: stdout may carry the parent's --json result
        sys.stdout = sys.stderr
        # the parent's progress reporter (and its lock, perhaps held by its thread at fork time) stay with the
        # parent: the parent reports the concurrent stage as a whole
        _progress._lock = threading.Lock()
        _progress._reporter = None
        import torch

        # One intra-op thread: the fallbacks are the cheap exporters, and a forked child must not enter a parallel
        # region: GNU OpenMP's thread pool does not survive fork(), so a worker of a parent that already ran a
        # parallel region (it trained the model, or ran a convolution) hangs in its first one with more threads.
        torch.set_num_threads(1)
        with contextlib.suppress(OSError):
            # a fallback uses the cores the preferred candidate (which the verdict waits for) leaves idle: dynamo's
            # export is mostly one Python thread, its gate's PyTorch runs take every core
            os.nice(_FALLBACK_NICENESS)
        message: tuple[Any, ...] = ("done", try_candidate(job))
    except ExportError as exc:  # a full disk: no candidate would fit
        message = ("export_error", exc.message, exc.hint)
    except BaseException as exc:  # noqa: BLE001 - the worker's boundary: sys.exit() and KeyboardInterrupt too
        message = ("crashed", f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=3))
    try:
        conn.send(message)
    except Exception as exc:  # an outcome that cannot be pickled is still an answer
        conn.send(("crashed", f"the worker's result could not be sent back: {type(exc).__name__}: {exc}", ""))
    finally:
        conn.close()
        os._exit(0)  # no atexit hooks or finalizers of the parent's objects run twice


def _crashed_outcome(job: CandidateJob, reason: str, started: float) -> CandidateOutcome:
    opset = job.config.opsets_for(job.strategy)[0]
    rec = CandidateRecord(
        strategy=job.strategy, opset=opset, outcome="failed", dynamic=job.dynamic, reason=reason
    )
    rec.started_at, rec.finished_at = started, time.time()
    return CandidateOutcome([rec])


def _concurrent(jobs: list[CandidateJob], ctx: Any) -> GroupResult:
    """The preferred job here with every core, the others in forked workers; answers collected as they come."""
    procs: list[Any] = [None] * len(jobs)
    conns: list[Any] = [None] * len(jobs)
    started: list[float] = [0.0] * len(jobs)
    results: list[CandidateOutcome | None] = [None] * len(jobs)
    try:
        for i in range(1, len(jobs)):
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker, args=(child, jobs[i]), daemon=True)
            started[i] = time.time()
            proc.start()
            child.close()
            procs[i], conns[i] = proc, parent
        label = " + ".join(job.strategy for job in jobs) + " (concurrently)"
        with _progress.stage(label):
            started[0] = time.time()
            results[0] = _sequential(jobs[:1]).outcomes[0]
            for i in range(1, len(jobs)):  # answers already waiting are recorded (verified too, or failed)
                if conns[i].poll(0):
                    results[i] = _receive(conns[i], procs[i], jobs[i], started[i])
            chosen = _wait(jobs, procs, conns, started, results)
        return GroupResult(_settle(results, jobs, chosen, "preference", started), chosen)
    finally:
        _stop([p for p in procs if p is not None])
        for conn in conns:
            if conn is not None:
                conn.close()


def _stop(procs: list[Any]) -> None:
    """End the workers still running (candidates the policy no longer needs) without waiting for them to exit."""
    running = [p for p in procs if p.is_alive()]
    for proc in running:
        proc.kill()  # nothing of theirs is kept: their files are in the export's scratch folder
    for proc in procs:
        if proc not in running:
            proc.join(timeout=10)
    if running:  # reaped in the background: the verdict does not wait for the kernel to tear them down
        threading.Thread(target=lambda: [p.join() for p in running], daemon=True).start()


def _wait(
    jobs: list[CandidateJob],
    procs: list[Any],
    conns: list[Connection],
    started: list[float],
    results: list[CandidateOutcome | None],
) -> int | None:
    """Collect answers as they come until the verdict is decided (or every candidate has answered)."""
    chosen = _decide(results)
    while chosen is None and any(r is None for r in results):
        waiting = {c: i for i, c in enumerate(conns) if results[i] is None}
        sentinels = {procs[i].sentinel: i for i in waiting.values()}
        for ready in wait([*waiting, *sentinels]):
            i = waiting.get(ready, sentinels.get(ready))  # type: ignore[arg-type]
            if i is None or results[i] is not None:
                continue
            results[i] = _receive(conns[i], procs[i], jobs[i], started[i])
        chosen = _decide(results)
    return chosen


def _receive(conn: Connection, proc: Any, job: CandidateJob, started: float) -> CandidateOutcome:
    message: tuple[Any, ...] | None = None
    try:
        if conn.poll(0.5 if not proc.is_alive() else None):
            message = conn.recv()
    except (EOFError, OSError):
        message = None
    if message is None:
        proc.join(timeout=5)
        return _crashed_outcome(
            job,
            f"export failed: the worker process exited with code {proc.exitcode} before answering "
            "(the model's code ended the process); strategy='torchscript' runs it in-process",
            started,
        )
    if message[0] == "done":
        return message[1]
    if message[0] == "export_error":
        raise ExportError(message[1], hint=message[2])
    return _crashed_outcome(job, f"export failed: {message[1]}", started)


def _decide(results: list[CandidateOutcome | None]) -> int | None:
    """The first verified candidate in preference order, once every candidate before it has answered."""
    for i, r in enumerate(results):
        if r is None:
            return None  # a preferred candidate is still running
        if r.path is not None:
            return i
    return None


def _settle(
    results: list[CandidateOutcome | None],
    jobs: list[CandidateJob],
    chosen: int | None,
    policy: str,
    started: list[float],
) -> list[CandidateOutcome]:
    """Every job gets an outcome: candidates stopped or passed over are recorded as skipped, with why."""
    winner = results[chosen].accepted.label if chosen is not None else ""  # type: ignore[union-attr]
    why = "auto prefers it" if policy == "preference" else "it verified first (fastest)"
    if policy == "preference":
        unfinished = f"stopped: {winner} verified and auto prefers it"
    else:
        unfinished = f"not run: {winner} verified first (fastest tries the cheaper exporter first)"
    out: list[CandidateOutcome] = []
    for i, r in enumerate(results):
        if r is None:
            job = jobs[i]
            rec = CandidateRecord(
                strategy=job.strategy,
                opset=job.config.opsets_for(job.strategy)[0],
                outcome="skipped",
                dynamic=job.dynamic,
                reason=unfinished,
            )
            rec.started_at, rec.finished_at = started[i], time.time()
            r = CandidateOutcome([rec])
        elif i != chosen and r.path is not None:
            acc = r.records[-1]
            acc.outcome, acc.reason = "skipped", f"verified too, but {winner} won: {why}"
            r = CandidateOutcome(r.records)
        out.append(r)
    return out

"""Several worker processes serving one port: each has its own session, batcher and event loop (so its own GIL).

The process `onnxship serve` started is the supervisor. It reserves the ports (SO_REUSEPORT: every worker listens
on the same port and the kernel spreads connections over them), starts the workers and coordinates them over one
pipe each:

- startup: worker 0 selects the model (MODEL_PATH -> latest -> checkpoint, the same rules as one process); the
  others load exactly the model it chose, with the same version number, before any of them is announced.
- reload: the worker that received ``POST /reload`` loads and golden-checks the model first (so its refusals are
  the same 400/403/404/422 as with one process); then every other worker loads and checks it, and only when all
  have does the supervisor tell them to swap, with one new version number, before the reload is answered. A
  failure anywhere changes nothing anywhere, and ``/version`` names the same version on every worker.
- metrics: ``/metrics`` on any worker sums the counters of all workers.
- a worker that dies is restarted with the model currently served.

DO NOT import onnxruntime or torch at module level.

Size: over 400 lines: the supervisor and its workers speak one pipe protocol (startup, reload, metrics,
restart); both sides live together so the protocol changes in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from onnxship._errors import OnnxshipError, ServeError
from onnxship.serve._config import ServeConfig
from onnxship.serve._locate import _error
from onnxship.serve._manager import ModelManager
from onnxship.serve._metrics import Metrics
from onnxship.serve._model import ServedModel, load_torch_model

__all__ = ["Cluster", "WorkerLink", "default_workers", "run_cluster"]

log = logging.getLogger("onnxship.serve")

_ASK_TIMEOUT_S = 600.0  # a reload loads and golden-checks a model in every worker
_SNAPSHOT_TIMEOUT_S = 10.0
_START_TIMEOUT_S = 600.0


def default_workers(cgroup_cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """One worker per usable core (CPU affinity, capped by a cgroup v2 CPU quota)."""
    from onnxship._util import usable_cores

    return usable_cores(cgroup_cpu_max)


# -- the worker's side -------------------------------------------------------------------------------------------


class WorkerLink:
    """A worker's end of its control pipe: what ``ServeApp`` uses as ``cluster`` (reload, metrics)."""

    def __init__(self, conn: Any, manager: ModelManager, index: int) -> None:
        self.conn = conn
        self.manager = manager
        self.index = index
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._prepared: dict[str, ServedModel] = {}
        self._count = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def attach(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.conn.fileno(), self._readable)

    async def detach(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.conn.fileno())

    def _send(self, msg: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError, ValueError):  # the supervisor is gone: _readable stops this worker
            self.conn.send(msg)

    def _readable(self) -> None:
        try:
            while self.conn.poll():
                self._handle(self.conn.recv())
        except (EOFError, OSError):  # the supervisor died: stop serving (uvicorn shuts down gracefully)
            assert self._loop is not None
            self._loop.remove_reader(self.conn.fileno())
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(ServeError("the server's supervisor process is gone"))
            os.kill(os.getpid(), signal.SIGTERM)

    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind, rid = msg[0], msg[1]
        if kind == "reply":
            fut = self._waiting.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_result(msg[2])
        elif kind == "prepare":
            asyncio.ensure_future(self._prepare(rid, msg[2]))
        elif kind == "commit":
            self.manager._install(self._prepared.pop(rid), msg[2])
            self._send(("committed", rid))
        elif (
            kind == "note"
        ):  # another worker's reload outcome: /version shows the same last_reload everywhere
            self.manager.last_reload = msg[2]
            self._send(("noted", rid))
        elif kind == "abort":
            self._prepared.pop(rid, None)
        elif kind == "snapshot":
            self._send(("snapshot", rid, self.manager.metrics.snapshot()))

    async def _prepare(self, rid: str, spec: tuple[str, ...]) -> None:
        manager = self.manager
        try:
            model = await asyncio.get_running_loop().run_in_executor(
                manager.loader, _load_spec, manager, spec
            )
        except OnnxshipError as exc:
            self._send(("prepared", rid, False, exc.message, int(getattr(exc, "status", 422))))
            return
        except Exception as exc:  # an unexpected failure must still answer (the reload then fails everywhere)
            log.exception("worker %d could not load %s", self.index, spec)
            self._send(("prepared", rid, False, f"{type(exc).__name__}: {exc}", 422))
            return
        self._prepared[rid] = model
        self._send(("prepared", rid, True, None, 200))

    async def _ask(self, kind: str, *args: Any) -> Any:
        self._count += 1
        rid = f"{self.index}:{self._count}"
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        self._send((kind, rid, *args))
        try:
            return await asyncio.wait_for(fut, _ASK_TIMEOUT_S)
        finally:
            self._waiting.pop(rid, None)

    async def agree(self, model: ServedModel) -> int:
        """The manager's reload hook: ``model`` passed its checks here; have every other worker load and check
        it too and return the version all of them swap to.

        Raises:
            ServeError: another worker refused it (its reason, its status); no worker swapped.
        """
        reply = await self._ask("reload", spec_of(model))
        if not reply["ok"]:
            raise _error(reply["error"], int(reply.get("status", 422)))
        return int(reply["version"])

    async def reloaded(self) -> None:
        """After a reload on this worker (done or refused): every worker records the same ``last_reload``."""
        try:
            await self._ask("note", self.manager.last_reload)
        except Exception as exc:  # the reload itself is done: its answer must not fail over bookkeeping
            log.warning("could not share the reload outcome with the other workers: %s", exc)

    async def metrics_text(self) -> str:
        """The Prometheus text of every worker's counters, summed."""
        snaps = await self._ask("metrics")
        manager = self.manager
        current = manager.current
        return Metrics.merge(snaps).render(
            current[0].name if current else None, manager.version, manager.ready
        )


Cluster = WorkerLink  # what ServeApp talks to


def spec_of(model: ServedModel) -> tuple[Any, ...]:
    """How another worker loads exactly ``model``: its path (the model root applies) and the sha256 it had."""
    if model.engine == "torch":
        return ("torch",)
    return ("path", model.source, model.meta.get("onnx_sha256"))


def _load_spec(manager: ModelManager, spec: tuple[Any, ...]) -> ServedModel:
    if spec[0] == "torch":
        return load_torch_model(manager.config)
    model = manager._load(spec[1])  # through the model root, as any reload
    want, got = spec[2], model.meta.get("onnx_sha256")
    if want and got and want != got:
        raise _error(
            f"{spec[1]} changed on disk while the server's workers loaded it (sha256 {got[:12]}, expected "
            f"{want[:12]})",
            409,
            hint="retry the reload once the release is no longer being written",
        )
    return model


def _worker_main(
    config: ServeConfig,
    index: int,
    select: bool,
    rest: Any,
    grpc_port: int | None,
    conn: Any,
    slots: Any = None,
) -> None:
    """Entry point of one worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the supervisor stops us
    from onnxship.serve._api import listen_reuseport, uvicorn_server
    from onnxship.serve._app import create_app

    manager = ModelManager(config)
    try:
        if select:
            model = manager.start()
        else:
            kind, spec, selection, version = conn.recv()
            assert kind == "load"
            model = _load_spec(manager, spec)
            manager.selection = selection
            manager._install(model, version)
        sock = listen_reuseport(config.host, rest) if isinstance(rest, int) else rest
    except OnnxshipError as exc:
        conn.send(("failed", exc.message, exc.hint))
        return
    except EOFError:
        return
    except Exception as exc:
        conn.send(("failed", f"worker {index}: {type(exc).__name__}: {exc}", None))
        raise
    link = WorkerLink(conn, manager, index)
    manager.agree = link.agree
    app = create_app(manager, link)
    app.on_startup.append(link.attach)
    app.on_shutdown.append(link.detach)
    grpc_address = None
    if grpc_port is not None:
        from onnxship.serve._grpc import attach_grpc

        grpc_address = attach_grpc(app, config.host, grpc_port)
    spec = spec_of(model)
    conn.send(
        (
            "ready",
            {
                "spec": spec,
                "selection": manager.selection,
                "version": manager.version,
                "name": model.name,
                "release": model.release,
                "engine": model.engine,
                "golden": model.golden,
                "grpc_address": grpc_address,
                "pid": os.getpid(),
            },
        )
    )
    server = uvicorn_server(app, config, signals=(signal.SIGTERM,), slots=slots)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        manager.close()


# -- the supervisor ----------------------------------------------------------------------------------------------


@dataclass
class ModelSummary:
    """What the supervisor knows of the served model (the workers hold the model itself)."""

    name: str
    version: int
    release: str | None
    engine: str
    golden: dict[str, Any]


@dataclass
class ClusterView:
    """Passed to ``on_ready`` in place of a ModelManager: ``current[0]`` describes the served model."""

    current: tuple[ModelSummary, None]
    workers: int
    grpc_address: str | None = None
    pids: list[int] = field(default_factory=list)


class _Worker:
    def __init__(self, index: int, proc: Any, conn: Any) -> None:
        self.index = index
        self.proc = proc
        self.conn = conn
        self.alive = True


class _Supervisor:
    def __init__(self, config: ServeConfig) -> None:
        import multiprocessing

        self.config = config
        self.ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
        self.workers: list[_Worker] = []
        # --max-inflight is the server's cap: one semaphore shared by every worker
        cap = getattr(config, "max_inflight", None)
        self.slots = self.ctx.BoundedSemaphore(cap) if cap else None
        self.rest: Any = None
        self.grpc_port: int | None = None
        self.info: dict[str, Any] = {}
        self.version = 0
        self.stopping = False
        self._waiters: dict[tuple[str, str, int], asyncio.Future[Any]] = {}
        self._lock: asyncio.Lock | None = None
        self._count = 0
        self._stop: asyncio.Event | None = None

    # startup (blocking, before the control loop runs)
    def spawn(self, index: int, select: bool) -> _Worker:
        parent, child = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(
            target=_worker_main,
            args=(self.config, index, select, self.rest, self.grpc_port, child, self.slots),
            name=f"onnxship-serve-{index}",
        )
        proc.start()
        child.close()
        return _Worker(index, proc, parent)

    def handshake(self, worker: _Worker, pin: bool) -> dict[str, Any]:
        if pin:
            worker.conn.send(("load", self.info["spec"], self.info["selection"], self.version))
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if worker.conn.poll(0.1):
                try:
                    msg = worker.conn.recv()
                except EOFError:
                    break
                if msg[0] == "failed":
                    raise ServeError(msg[1], hint=msg[2])
                return msg[1]
            if not worker.proc.is_alive():
                break
        code = worker.proc.exitcode
        raise ServeError(
            f"server worker {worker.index} "
            + (f"exited with code {code}" if code is not None else "did not start in time")
            + " before it was ready",
            hint="run with --workers 1 --log-level info to see why",
        )

    def terminate_all(self, timeout: float | None = None) -> None:
        if timeout is None:  # the workers' own graceful shutdown, then a margin
            timeout = float(getattr(self.config, "shutdown_timeout_s", 20) or 20) + 10
        for w in self.workers:
            if w.proc.is_alive():
                w.proc.terminate()
        deadline = time.monotonic() + timeout
        for w in self.workers:
            w.proc.join(max(0.1, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(5)
            with contextlib.suppress(Exception):
                w.conn.close()

    # the control loop
    async def control(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        for w in self.workers:
            self._watch(w)
        await self._stop.wait()
        self.stopping = True
        snaps = await self._snapshots()
        return Metrics.merge(snaps).snapshot()

    def _watch(self, w: _Worker) -> None:
        asyncio.get_running_loop().add_reader(w.conn.fileno(), self._readable, w)

    def _readable(self, w: _Worker) -> None:
        try:
            while w.conn.poll():
                self._handle(w, w.conn.recv())
        except (EOFError, OSError):
            self._lost(w)

    def _send(self, w: _Worker, msg: tuple[Any, ...]) -> bool:
        try:
            w.conn.send(msg)
            return True
        except (OSError, ValueError):
            return False

    def _handle(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        kind, rid = msg[0], msg[1]
        if kind == "reload":
            asyncio.ensure_future(self._reload(w, rid, msg[2]))
        elif kind == "note":
            asyncio.ensure_future(self._note(w, rid, msg[2]))
        elif kind == "metrics":
            asyncio.ensure_future(self._metrics(w, rid))
        else:  # an answer: prepared / committed / snapshot
            fut = self._waiters.pop((kind, rid, w.index), None)
            if fut is not None and not fut.done():
                fut.set_result(msg[2:])

    def _lost(self, w: _Worker) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            loop.remove_reader(w.conn.fileno())
        w.alive = False
        for (_kind, _rid, index), fut in list(self._waiters.items()):
            if index == w.index and not fut.done():
                fut.set_exception(ServeError(f"server worker {w.index} exited"))
        if not self.stopping:
            w.proc.join(1)
            log.warning("server worker %d exited with code %s; starting a new one", w.index, w.proc.exitcode)
            asyncio.ensure_future(self._respawn(w.index))

    async def _respawn(self, index: int) -> None:
        assert self._lock is not None
        async with self._lock:  # no reload while the new worker loads the current model
            if self.stopping:
                return
            loop = asyncio.get_running_loop()
            worker = self.spawn(index, select=False)
            try:
                await loop.run_in_executor(None, self.handshake, worker, True)
            except ServeError as exc:
                log.error("server worker %d could not be restarted: %s", index, exc.message)
                worker.proc.kill()
                return
            self.workers[index] = worker
            self._watch(worker)

    async def _ask(self, w: _Worker, kind: str, answer: str, rid: str, *args: Any, timeout: float) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[(answer, rid, w.index)] = fut
        if not self._send(w, (kind, rid, *args)):
            self._waiters.pop((answer, rid, w.index), None)
            raise ServeError(f"server worker {w.index} is gone")
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiters.pop((answer, rid, w.index), None)

    async def _reload(self, origin: _Worker, rid: str, spec: tuple[str, ...]) -> None:
        assert self._lock is not None
        async with self._lock:
            others = [w for w in self.workers if w is not origin and w.alive]
            results = await asyncio.gather(
                *(self._ask(w, "prepare", "prepared", rid, spec, timeout=_ASK_TIMEOUT_S) for w in others),
                return_exceptions=True,
            )
            failure = None
            for w, res in zip(others, results, strict=True):
                if isinstance(res, BaseException):
                    failure = (f"server worker {w.index} could not load it: {res}", 422)
                elif not res[0]:
                    failure = (res[1], res[2])
                if failure:
                    break
            if failure is not None:
                for w in others:
                    self._send(w, ("abort", rid))
                self._send(origin, ("reply", rid, {"ok": False, "error": failure[0], "status": failure[1]}))
                return
            version = self.version + 1
            await asyncio.gather(
                *(self._ask(w, "commit", "committed", rid, version, timeout=_ASK_TIMEOUT_S) for w in others),
                return_exceptions=True,
            )
            self.version = version
            self.info["spec"] = spec
            self._send(origin, ("reply", rid, {"ok": True, "version": version}))

    async def _note(self, origin: _Worker, rid: str, record: Any) -> None:
        assert self._lock is not None
        async with self._lock:  # after the reload it describes has been committed everywhere
            others = [w for w in self.workers if w is not origin and w.alive]
            await asyncio.gather(
                *(self._ask(w, "note", "noted", rid, record, timeout=_SNAPSHOT_TIMEOUT_S) for w in others),
                return_exceptions=True,
            )
        self._send(origin, ("reply", rid, None))

    async def _snapshots(self) -> list[dict[str, Any]]:
        self._count += 1
        rid = f"s:{self._count}"
        alive = [w for w in self.workers if w.alive]
        results = await asyncio.gather(
            *(self._ask(w, "snapshot", "snapshot", rid, timeout=_SNAPSHOT_TIMEOUT_S) for w in alive),
            return_exceptions=True,
        )
        return [r[0] for r in results if not isinstance(r, BaseException)]

    async def _metrics(self, origin: _Worker, rid: str) -> None:
        self._send(origin, ("reply", rid, await self._snapshots()))


def run_cluster(config: ServeConfig, *, on_ready: Callable[[str, Any], None] | None = None) -> Any:
    """Serve with ``config.workers`` processes until SIGINT/SIGTERM (see the module docstring).

    Raises:
        ServeError: no model could be selected and checked, a worker failed to start, or a port cannot be bound.
    """
    from onnxship.serve._api import ServeResult, bind_socket, reserve_port

    start = time.perf_counter()
    sup = _Supervisor(config)
    holds: list[socket.socket] = []
    try:
        if hasattr(socket, "SO_REUSEPORT"):
            hold = reserve_port(config.host, config.port)
            sup.rest = hold.getsockname()[1]
        else:  # one listening socket shared by every worker
            hold = bind_socket(config.host, config.port)
            sup.rest = hold
        holds.append(hold)
        host, port = hold.getsockname()[:2]
        if config.grpc_port is not None:
            ghold = reserve_port(config.host, config.grpc_port, "--grpc-port")
            holds.append(ghold)
            sup.grpc_port = ghold.getsockname()[1]
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        sup.workers = [sup.spawn(i, select=i == 0) for i in range(config.workers)]
        info = sup.handshake(sup.workers[0], pin=False)
        sup.info = info
        sup.version = int(info["version"])
        pids = [info["pid"]]
        for w in sup.workers[1:]:
            pids.append(sup.handshake(w, pin=True)["pid"])
        if on_ready is not None:
            summary = ModelSummary(info["name"], sup.version, info["release"], info["engine"], info["golden"])
            on_ready(url, ClusterView((summary, None), config.workers, info.get("grpc_address"), pids))
        log.info(
            "serving %s version %d on %s with %d workers", info["name"], sup.version, url, config.workers
        )
        totals = asyncio.run(sup.control())
    finally:
        sup.stopping = True
        sup.terminate_all()
        for h in holds:
            h.close()
    return ServeResult(
        url=url,
        model_name=str(sup.info.get("name")),
        model_version=sup.version,
        requests=sum(n for _m, ep, _s, n in totals["requests"] if ep == "infer"),
        reloads=dict(totals["reloads"]),
        seconds=time.perf_counter() - start,
    )

"""``detect``: a DeepLog release + parsed logs -> per-window anomaly decisions, with ONNX Runtime only.

A window is anomalous when its true next event is not among the model's top-g predictions (or when a template is
not in the release's vocabulary). With alert labels (BGL) precision/recall/F1 are reported; when torch and the
checkpoint are available, PyTorch's decisions on the same windows are reported next to them (torch is imported
only for that comparison). ``golden_out`` writes a set of windows as template strings with the Python decisions,
for consumers in other runtimes (examples/deeplog/node/).

DO NOT import torch at module level; the detection path itself never imports it.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxship._errors import ConfigError, PackagingError
from onnxship._util import atomic_write_json

__all__ = ["GOLDEN_SCHEMA", "DetectConfig", "DetectResult", "detect_anomalies", "prf", "top_g_decisions"]

GOLDEN_SCHEMA = "onnxship.deeplog-golden-windows/1"
_COMPARE = ("auto", "always", "never")


@dataclass
class DetectConfig:
    """What to score and how."""

    release: Path  # releases/deeplog/latest (or a version folder)
    parsed: Path  # parsed.parquet from parse
    top_g: int | None = None  # DeepLog's g (default: the release metadata's top_g, else 9)
    session: str = "auto"  # must match build: auto | block | node | time | stream
    time_window: int = 3600  # seconds per session for session == "time"
    compare_torch: str = "auto"  # auto (when torch + checkpoint exist) | always | never
    checkpoint: Path | None = None  # for the comparison (default: the checkpoint named in the metadata)
    out: Path | None = None  # per-window decisions as parquet
    golden_out: Path | None = None  # golden windows JSON for other runtimes
    golden_count: int = 32  # windows in golden_out (half anomalous when there are enough)
    batch_size: int = 64  # windows per ONNX Runtime call (at most the verified batch maximum)

    def __post_init__(self) -> None:
        self.release, self.parsed = Path(self.release), Path(self.parsed)
        if self.top_g is not None and self.top_g < 1:
            raise ConfigError(f"--top-g {self.top_g} must be >= 1", hint="DeepLog uses 9")
        if self.compare_torch not in _COMPARE:
            raise ConfigError(f"compare_torch={self.compare_torch!r}", hint=f"valid: {', '.join(_COMPARE)}")
        if self.batch_size < 1 or self.golden_count < 1:
            raise ConfigError("batch_size and golden_count must be >= 1", hint="e.g. --batch-size 64")


@dataclass
class DetectResult:
    """Decisions and how they score."""

    release: str  # version
    windows: int
    scored: int  # windows the model scored (all templates known)
    unknown: int  # windows flagged because a template is not in the vocabulary
    anomalies: int
    top_g: int
    seq_len: int
    session: str
    metrics: dict[str, Any] | None  # onnx decisions vs alert labels (None without labels)
    session_metrics: (
        dict[str, Any] | None
    )  # per session: any window flagged vs any alert (None: one stream/no labels)
    torch: dict[str, Any] | None  # {"metrics", "agreement"} (None: no comparison)
    providers: list[str]
    out: Path | None = None
    golden: Path | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "windows": self.windows,
            "scored": self.scored,
            "unknown": self.unknown,
            "anomalies": self.anomalies,
            "anomaly_rate": self.anomalies / max(self.windows, 1),
            "top_g": self.top_g,
            "seq_len": self.seq_len,
            "session": self.session,
            "metrics": self.metrics,
            "session_metrics": self.session_metrics,
            "torch": self.torch,
            "providers": self.providers,
            "out": str(self.out) if self.out else None,
            "golden": str(self.golden) if self.golden else None,
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }


def prf(pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Precision, recall and F1 of boolean predictions against boolean truth (0.0 where undefined).

    Example:
        >>> prf(np.array([True, True, False]), np.array([True, False, False]))["precision"]
        0.5
    """
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    tp, fp = int((pred & truth).sum()), int((pred & ~truth).sum())
    fn, tn = int((~pred & truth).sum()), int((~pred & ~truth).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {
        "precision": p,
        "recall": r,
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "samples": len(pred),
    }


def top_g_decisions(logits: np.ndarray, nxt: np.ndarray, g: int) -> tuple[np.ndarray, np.ndarray]:
    """(anomalous [N] bool, top-g ids [N, g]): anomalous when the next event is not among the g largest logits.

    The order is a stable sort of the negated logits, the same rule ``onnxship.verify`` uses.
    """
    k = min(g, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return ~(top == nxt[:, None]).any(axis=1), top


def _infer(runner: Any, x: np.ndarray, batch: int) -> np.ndarray:
    name = runner.input_names[0]
    out = [next(iter(runner.infer({name: x[i : i + batch]}).values())) for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def _torch_logits(meta: dict[str, Any], checkpoint: Path, x: np.ndarray, batch: int) -> np.ndarray:
    """PyTorch logits on the same windows (the only place detect imports torch)."""
    from onnxship.runtime._runners import TorchRunner
    from onnxship.spec._binding import bind_inputs
    from onnxship.spec._model import parse_model_spec

    loaded = parse_model_spec(str(meta["model_spec"]), checkpoint=checkpoint).load()
    if meta.get("weights_sha256") and loaded.weights_sha256 != meta["weights_sha256"]:
        raise PackagingError(
            f"checkpoint {str(checkpoint)!r} is not the one this release was exported from "
            "(weights sha256 differs)",
            hint="pass --checkpoint with the shipped checkpoint, or --no-compare-torch",
        )
    name = meta["inputs"][0]["name"] if meta.get("inputs") else "input_sequence"
    runner = TorchRunner(loaded.model, bind_inputs(loaded.model, [name]))
    out = [next(iter(runner.infer({name: x[i : i + batch]}).values())) for i in range(0, len(x), batch)]
    return np.concatenate(out)


def _pick_golden(anomalous: np.ndarray, count: int) -> np.ndarray:
    idx_a, idx_n = np.flatnonzero(anomalous), np.flatnonzero(~anomalous)
    n_a = min(len(idx_a), count // 2)
    n_n = min(len(idx_n), count - n_a)
    n_a = min(len(idx_a), count - n_n)
    return np.sort(np.concatenate([idx_a[:n_a], idx_n[:n_n]]))


def _write_golden(
    path: Path,
    release: Any,
    vocab: dict[str, int],
    x: np.ndarray,
    nxt: np.ndarray,
    anomalous: np.ndarray,
    top: np.ndarray,
    g: int,
    seq_len: int,
    count: int,
) -> Path:
    names = {i: t for t, i in vocab.items()}
    rows = []
    for i in _pick_golden(anomalous, count):
        rows.append(
            {
                "templates": [names[int(v)] for v in x[i]],
                "next_template": names[int(nxt[i])],
                "ids": [int(v) for v in x[i]],
                "next": int(nxt[i]),
                "top_g": [int(v) for v in top[i]],
                "anomaly": bool(anomalous[i]),
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        path,
        {
            "schema": GOLDEN_SCHEMA,
            "release": release.version,
            "model_file": release.model_path.name,
            "top_g": g,
            "seq_len": seq_len,
            "windows": rows,
        },
    )
    return path


def detect_anomalies(config: DetectConfig) -> DetectResult:
    """Score every window of the parsed log with the release's ONNX model.

    Raises:
        PackagingError: not a DeepLog release (no vocab asset, no seq_len), or a vocab that does not fit it.
        ConfigError: a parsed file without the needed columns, or no window to score.

    Example:
        >>> detect_anomalies(DetectConfig(Path("releases/deeplog/latest"), Path("work/parsed.parquet")))  # doctest: +SKIP
    """
    from onnxship.package._assets import ModelSizes, validate_vocab
    from onnxship.package._release import read_release
    from onnxship.recipes.deeplog._build import NEXT_COL, UNKNOWN_ID, WINDOW_COL, session_windows
    from onnxship.recipes.deeplog._parse import _write_parquet, read_parsed
    from onnxship.runtime._runners import OnnxRuntimeRunner
    from onnxship.verify._tasks import sequence_agreement

    start = time.perf_counter()
    cfg = config
    release = read_release(cfg.release)
    meta = release.meta
    vocab_path = release.asset("vocab")
    seq_len = meta.get("seq_len")
    if vocab_path is None or not isinstance(seq_len, int):
        raise PackagingError(
            f"release {release.version} is not a DeepLog release (vocab asset: "
            f"{'yes' if vocab_path else 'missing'}, seq_len: {seq_len!r})",
            hint="ship it with `onnxship recipes deeplog ship` (it adds both)",
        )
    import json

    vocab, _ = validate_vocab(
        json.loads(vocab_path.read_text(encoding="utf-8")),
        ModelSizes(declared=meta.get("vocab_size")),
        what=f"release {release.version} vocab",
    )
    g = cfg.top_g or int(meta.get("top_g") or 9)
    df = read_parsed(cfg.parsed)
    windows, counts = session_windows(df, vocab, seq_len, session=cfg.session, time_window=cfg.time_window)
    if windows.empty:
        raise ConfigError(
            f"no {counts['session']} session is longer than the model's window {seq_len} "
            f"(longest: {counts['longest_session']})",
            hint="use --session stream, or more logs",
        )
    x = np.stack([np.asarray(w, dtype=np.int64) for w in windows[WINDOW_COL]])
    nxt = windows[NEXT_COL].to_numpy(dtype=np.int64)
    known = (x != UNKNOWN_ID).all(axis=1) & (nxt != UNKNOWN_ID)
    max_batch = next((d.get("max") for d in (meta.get("inputs") or [{}])[0].get("dims", [])[:1]), None)
    batch = min(cfg.batch_size, int(max_batch)) if max_batch else cfg.batch_size
    runner = OnnxRuntimeRunner(release.model_path)
    logits = _infer(runner, x[known], batch)
    anomalous = np.ones(len(x), dtype=bool)
    reason = np.where(known, "normal", "unknown_template").astype(object)
    anom_k, top = (
        top_g_decisions(logits, nxt[known], g) if known.any() else (np.zeros(0, bool), np.zeros((0, g)))
    )
    anomalous[known] = anom_k
    reason[np.flatnonzero(known)[anom_k]] = "not_in_top_g"
    has_labels = windows["is_alert"].notna().any()
    truth = windows["is_alert"].fillna(False).to_numpy(dtype=bool)
    metrics = prf(anomalous, truth) if has_labels else None
    session_metrics = None
    if has_labels and counts["session"] != "stream":
        per = windows.assign(
            _pred=anomalous, _truth=windows["window_alert"].fillna(False).to_numpy(dtype=bool)
        )
        grouped = per.groupby("session", sort=True)[["_pred", "_truth"]].any()
        session_metrics = prf(grouped["_pred"].to_numpy(), grouped["_truth"].to_numpy())
    notes = []
    torch_part = _compare(
        cfg,
        meta,
        x[known],
        nxt[known],
        logits,
        anom_k,
        truth[known],
        batch,
        g,
        has_labels,
        notes,
        sequence_agreement,
    )
    if torch_part is not None and has_labels:
        # the unknown-template windows are flagged identically by both engines
        t_anom = anomalous.copy()
        t_anom[known] = torch_part.pop("_anomalous")
        torch_part["metrics"] = prf(t_anom, truth)
    elif torch_part is not None:
        torch_part.pop("_anomalous")
    out = None
    if cfg.out is not None:
        res = windows.assign(anomaly=anomalous, reason=reason.astype(str))
        _write_parquet(res, cfg.out)
        out = cfg.out
    golden = None
    if cfg.golden_out is not None and known.any():
        count = min(cfg.golden_count, batch)  # one batch the release was verified at
        if count < cfg.golden_count:
            notes.append(f"golden windows capped at {count}, the largest batch the release was verified at")
        golden = _write_golden(
            cfg.golden_out, release, vocab, x[known], nxt[known], anom_k, top, g, seq_len, count
        )
    if (~known).any():
        notes.append(
            f"{int((~known).sum())} window(s) hold templates the release's vocabulary does not know; "
            "they are flagged without scoring"
        )
    return DetectResult(
        release=release.version,
        windows=len(x),
        scored=int(known.sum()),
        unknown=int((~known).sum()),
        anomalies=int(anomalous.sum()),
        top_g=g,
        seq_len=seq_len,
        session=counts["session"],
        metrics=metrics,
        session_metrics=session_metrics,
        torch=torch_part,
        providers=runner.providers,
        out=out,
        golden=golden,
        seconds=time.perf_counter() - start,
        notes=notes,
    )


def _compare(
    cfg: DetectConfig,
    meta: dict[str, Any],
    x: np.ndarray,
    nxt: np.ndarray,
    logits: np.ndarray,
    anom: np.ndarray,
    truth: np.ndarray,
    batch: int,
    g: int,
    has_labels: bool,
    notes: list[str],
    sequence_agreement: Any,
) -> dict[str, Any] | None:
    if cfg.compare_torch == "never" or len(x) == 0:
        return None
    ckpt = cfg.checkpoint or (Path(meta["checkpoint"]) if meta.get("checkpoint") else None)
    missing = []
    if importlib.util.find_spec("torch") is None:
        missing.append("torch is not installed (pip install 'onnxship[torch]')")
    if ckpt is None or not Path(ckpt).is_file():
        missing.append(
            f"the checkpoint {str(ckpt) if ckpt else '(none recorded)'} is not here (pass --checkpoint)"
        )
    if not meta.get("model_spec"):
        missing.append("the release metadata names no model_spec")
    if missing:
        if cfg.compare_torch == "always":
            raise ConfigError(
                "cannot compare with PyTorch: " + "; ".join(missing), hint="or pass --no-compare-torch"
            )
        notes.append("PyTorch comparison skipped: " + "; ".join(missing))
        return None
    ref = _torch_logits(meta, Path(ckpt), x, batch)  # type: ignore[arg-type]
    t_anom, _ = top_g_decisions(ref, nxt, g)
    agreement = sequence_agreement(ref, logits, labels=nxt, top_g=g).to_dict()
    return {
        "checkpoint": str(ckpt),
        "anomalies": int(t_anom.sum()),
        "agreement": agreement,
        "_anomalous": t_anom,
    }

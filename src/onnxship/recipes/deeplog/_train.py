"""``train``: the DeepLog LSTM (Embedding -> LSTM -> Linear) on the build windows, CPU, a bounded number of steps.

The model is ``examples/deeplog/model.py:build_model`` (the same factory ``onnxship export``/``ship`` and the README
use), loaded through the model-spec loader. Every optimizer step appends one JSON object to the training log:
``{"step", "epoch", "loss", "grad_norm", "learning_rate"}`` (``onnxship doctor train-log`` reads it). The checkpoint
is ``{"state_dict", "model_kwargs", "vocab_size", "seq_len", ...plain values}``: the export core rebuilds the model
from ``model_kwargs`` and keeps the plain values as metadata.

DO NOT import torch at module level.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxship import _progress
from onnxship._errors import ConfigError, ModelLoadError, require
from onnxship._util import atomic_write

__all__ = ["TrainConfig", "TrainResult", "default_model_spec", "train_deeplog", "window_arrays"]


def default_model_spec() -> str:
    """``<repo>/examples/deeplog/model.py:build_model`` (present in a source checkout)."""
    import onnxship

    return (
        str(Path(onnxship.__file__).resolve().parents[2] / "examples" / "deeplog" / "model.py")
        + ":build_model"
    )


@dataclass
class TrainConfig:
    """One bounded CPU training run."""

    sequences: Path  # sequences.parquet from build
    vocab: Path  # vocab.json from build
    out: Path = Path("work/deeplog.pt")  # the checkpoint
    log: Path | None = None  # JSON-lines training log (default: <out>.train.jsonl)
    model: str | None = None  # factory spec (default: examples/deeplog/model.py:build_model)
    embed_dim: int = 32  # factory keyword arguments, saved as model_kwargs
    hidden: int = 64
    layers: int = 2
    epochs: int = 5  # passes over the windows
    max_steps: int | None = None  # stop after this many optimizer steps (None: epochs decide)
    batch_size: int = 64
    learning_rate: float = 2e-3
    clip_grad_norm: float = 5.0  # gradient clipping (grad_norm is logged before clipping)
    train_on: str = "normal"  # normal (windows without alerts, when labels exist) | all
    top_g: int = 9  # for the reported training top-g hit rate
    seed: int = 0
    threads: int | None = None  # torch intra-op threads while training (None: torch's default)

    def __post_init__(self) -> None:
        self.sequences, self.vocab, self.out = Path(self.sequences), Path(self.vocab), Path(self.out)
        self.log = Path(self.log) if self.log else self.out.with_name(self.out.name + ".train.jsonl")
        for name in ("embed_dim", "hidden", "layers", "epochs", "batch_size", "top_g"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"{name}={getattr(self, name)} must be >= 1", hint=f"pass a positive --{name}"
                )
        if self.threads is not None and self.threads < 1:
            raise ConfigError(
                f"threads={self.threads} must be >= 1", hint="or leave it out (torch's default)"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps={self.max_steps} must be >= 1", hint="or leave it out")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate={self.learning_rate} must be > 0", hint="e.g. 2e-3")
        if self.train_on not in ("normal", "all"):
            raise ConfigError(f"train_on={self.train_on!r}", hint="valid: normal, all")


@dataclass
class TrainResult:
    """The checkpoint, the log and how training went."""

    checkpoint: Path
    log: Path
    vocab_size: int
    seq_len: int
    windows: int  # windows trained on
    steps: int
    epochs: int
    first_loss: float
    final_loss: float  # mean loss of the last epoch
    train_top_g_hit_rate: float  # fraction of training windows whose next event is in the top g
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.checkpoint),
            "log": str(self.log),
            "vocab_size": self.vocab_size,
            "seq_len": self.seq_len,
            "windows": self.windows,
            "steps": self.steps,
            "epochs": self.epochs,
            "first_loss": self.first_loss,
            "final_loss": self.final_loss,
            "train_top_g_hit_rate": self.train_top_g_hit_rate,
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }


def window_arrays(df: Any) -> tuple[np.ndarray, np.ndarray]:
    """``sequences.parquet`` rows -> (windows [N, W] int64, next [N] int64); all windows must have one length."""
    from onnxship.recipes.deeplog._build import NEXT_COL, WINDOW_COL

    lengths = {len(w) for w in df[WINDOW_COL]}
    if len(lengths) != 1:
        raise ConfigError(
            f"windows have several lengths {sorted(lengths)[:5]}",
            hint="rebuild the sequences with one --window",
        )
    x = np.asarray(np.stack([np.asarray(w, dtype=np.int64) for w in df[WINDOW_COL]]), dtype=np.int64)
    return x, np.array(df[NEXT_COL].to_numpy(dtype=np.int64), copy=True)


def _vocab_sha256(vocab: dict[str, int]) -> str:
    return hashlib.sha256(json.dumps(vocab, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _build_model(spec_text: str, kwargs: dict[str, Any]) -> Any:
    from onnxship.spec._model import ensure_module, parse_model_spec

    spec = parse_model_spec(spec_text, kwargs=kwargs)
    fn = spec.factory()
    try:
        model = fn(**kwargs)
    except TypeError as exc:
        raise ModelLoadError(
            f"factory {spec_text!r} does not accept {sorted(kwargs)}: {exc}",
            hint="a DeepLog factory takes vocab_size, embed_dim, hidden, layers",
        ) from None
    return ensure_module(model, f"factory {spec_text!r}")


def train_deeplog(config: TrainConfig) -> TrainResult:
    """Train DeepLog on the windows and save a state_dict checkpoint with its metadata.

    Raises:
        ConfigError: bad sequences/vocab (id-keyed, ids outside the vocabulary), no windows to train on.

    Example:
        >>> train_deeplog(TrainConfig(Path("work/sequences.parquet"), Path("work/vocab.json")))  # doctest: +SKIP
    """
    from onnxship.recipes.deeplog._build import load_vocab, read_sequences

    torch = require("torch", "torch")
    start = time.perf_counter()
    cfg = config
    vocab = load_vocab(cfg.vocab)
    n_vocab = len(vocab)
    df = read_sequences(cfg.sequences)
    notes: list[str] = []
    if cfg.train_on == "normal" and "window_alert" in df.columns and df["window_alert"].notna().any():
        normal = df[~df["window_alert"].fillna(False).astype(bool)]
        notes.append(
            f"trained on {len(normal)} of {len(df)} windows without alerts (DeepLog learns normal flow)"
        )
        df = normal
    if df.empty:
        raise ConfigError("no windows left to train on", hint="pass --train-on all, or build more windows")
    x, y = window_arrays(df)
    seq_len = x.shape[1]
    lo, hi = int(min(x.min(), y.min())), int(max(x.max(), y.max()))
    if lo < 0 or hi >= n_vocab:
        raise ConfigError(
            f"sequences use ids {lo}..{hi} but the vocabulary has {n_vocab} entries (0..{n_vocab - 1})",
            hint="pass the vocab.json written by the same build as the sequences",
        )
    model_kwargs = {
        "vocab_size": n_vocab,
        "embed_dim": cfg.embed_dim,
        "hidden": cfg.hidden,
        "layers": cfg.layers,
    }
    spec_text = cfg.model or default_model_spec()
    model = _build_model(spec_text, model_kwargs)
    emb = next((m for m in model.modules() if isinstance(m, torch.nn.Embedding)), None)
    if emb is None or emb.num_embeddings != n_vocab:
        raise ModelLoadError(
            f"the model's nn.Embedding has {getattr(emb, 'num_embeddings', None)} entries, the "
            f"vocabulary {n_vocab}",
            hint="the factory must size its nn.Embedding from vocab_size",
        )
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(torch, cfg, model, x, y, vocab, seq_len, notes, start)
    finally:
        torch.set_num_threads(threads)


def _train(
    torch: Any,
    cfg: TrainConfig,
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    vocab: dict[str, int],
    seq_len: int,
    notes: list[str],
    start: float,
) -> TrainResult:
    n_vocab = len(vocab)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    step, first_loss, epoch_loss, epochs_done = 0, math.nan, math.nan, 0
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.log.parent.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
    with open(cfg.log, "w", encoding="utf-8") as log:  # type: ignore[arg-type]
        shown = _progress.begin("deeplog: training epoch", total=cfg.epochs)
        for epoch in range(cfg.epochs):
            shown.advance(detail=f"loss {epoch_loss:.4f}" if epochs_done else "")
            perm = torch.randperm(len(xt), generator=gen)
            total, batches = 0.0, 0
            for b in range(0, len(perm), cfg.batch_size):
                idx = perm[b : b + cfg.batch_size]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(xt[idx]), yt[idx])
                loss.backward()
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm))
                opt.step()
                step += 1
                value = float(loss.detach())
                first_loss = value if step == 1 else first_loss
                total, batches = total + value, batches + 1
                shown.note(f"step {step}  loss {value:.4f}")
                log.write(
                    json.dumps(
                        {
                            "step": step,
                            "epoch": epoch,
                            "loss": value,
                            "grad_norm": grad_norm,
                            "learning_rate": opt.param_groups[0]["lr"],
                        }
                    )
                    + "\n"
                )
                if cfg.max_steps is not None and step >= cfg.max_steps:
                    break
            epochs_done, epoch_loss = epoch + 1, total / max(batches, 1)
            if cfg.max_steps is not None and step >= cfg.max_steps:
                break
        shown.note(f"loss {epoch_loss:.4f}")
        shown.close()
    model.eval()
    with torch.inference_mode():
        logits = torch.cat([model(xt[b : b + 512]) for b in range(0, len(xt), 512)])
        k = min(cfg.top_g, n_vocab)
        hit = float((logits.topk(k, dim=1).indices == yt[:, None]).any(dim=1).float().mean())
    model_kwargs = {
        "vocab_size": n_vocab,
        "embed_dim": cfg.embed_dim,
        "hidden": cfg.hidden,
        "layers": cfg.layers,
    }
    ckpt = {
        "state_dict": model.state_dict(),
        "model_kwargs": model_kwargs,
        "vocab_size": n_vocab,
        "seq_len": int(seq_len),
        "model_type": "deeplog",
        "vocab_sha256": _vocab_sha256(vocab),
    }
    atomic_write(cfg.out, lambda tmp: torch.save(ckpt, tmp))
    return TrainResult(
        checkpoint=cfg.out,
        log=cfg.log,
        vocab_size=n_vocab,
        seq_len=int(seq_len),  # type: ignore[arg-type]
        windows=len(xt),
        steps=step,
        epochs=epochs_done,
        first_loss=first_loss,
        final_loss=epoch_loss,
        train_top_g_hit_rate=hit,
        seconds=time.perf_counter() - start,
        notes=notes,
    )

"""MSCRED beside DeepLog: train on signature matrices from the parsed log, ship through ``onnxship.ship``.

``train_mscred`` writes ``mscred.pt`` (state_dict + factory kwargs + signature settings + channel scaling + score
threshold) and ``mscred_windows.npz`` (the real windows, the verification data). ``ship_mscred`` exports, verifies
(golden + shape sweep over the batch dim + the real windows) and bundles the model, with the static window recorded
in the metadata.

DO NOT import torch at module level.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxship import _progress
from onnxship._errors import ConfigError
from onnxship._util import atomic_write, check_name
from onnxship.recipes.mscred._model import INPUT_NAME, OUTPUT_NAMES
from onnxship.recipes.mscred._signatures import SignatureConfig, signature_windows

__all__ = [
    "MSCRED_SPEC",
    "MscredShipConfig",
    "MscredTrainConfig",
    "MscredTrainResult",
    "ship_mscred",
    "train_mscred",
]

MSCRED_SPEC = "onnxship.recipes.mscred._model:build_mscred"
NOTES = (
    "MSCRED: the ConvLSTM runs a Python loop over the window, so the exported graph is unrolled and the window "
    "(dim 1 of 'signatures') is STATIC; only the batch dim is dynamic. score = mean squared residual of the "
    "reconstructed last signature matrix; a window is anomalous when score > score_threshold."
)


@dataclass
class MscredTrainConfig:
    """What to train on and for how long."""

    parsed: Path  # parsed.parquet from `recipes deeplog parse`
    out_dir: Path = Path("work")  # mscred.pt and mscred_windows.npz
    signatures: SignatureConfig = field(default_factory=SignatureConfig)
    hidden: int = 16
    steps: int = 200  # optimizer steps (a few CPU seconds)
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0

    def __post_init__(self) -> None:
        self.parsed, self.out_dir = Path(self.parsed), Path(self.out_dir)
        if not self.parsed.is_file():
            raise ConfigError(
                f"parsed log {str(self.parsed)!r} does not exist",
                hint="run `onnxship recipes deeplog parse` first",
            )
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f"steps={self.steps} and batch_size={self.batch_size} must be >= 1")


@dataclass
class MscredTrainResult:
    """The checkpoint, the windows, and how the residual separates alert windows from the rest."""

    checkpoint: Path
    windows: Path
    samples: int
    loss_first: float
    loss_last: float
    score_threshold: float  # p99 of the training (alert-free) windows' scores
    score_mean_normal: float
    score_mean_alert: float | None  # None when no window holds an alert
    flagged_alert_windows: int
    alert_windows: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def train_mscred(config: MscredTrainConfig) -> MscredTrainResult:
    """Train MSCRED on the alert-free windows (it learns normal co-occurrence) and calibrate the score threshold."""
    import torch

    from onnxship.recipes.mscred._model import build_mscred

    start = time.perf_counter()
    cfg, sc = config, config.signatures
    sig = signature_windows(cfg.parsed, sc)
    kwargs = {"scales": len(sc.scales), "features": sc.features, "window": sc.window, "hidden": cfg.hidden}
    torch.manual_seed(cfg.seed)
    model = build_mscred(**kwargs)
    x_all = torch.from_numpy(sig.windows)
    x = x_all[torch.from_numpy(~sig.alerts)]
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses = []
    model.train()
    shown = _progress.begin("mscred: training step", total=cfg.steps)
    for _ in range(cfg.steps):
        idx = torch.randint(0, x.shape[0], (min(cfg.batch_size, x.shape[0]),), generator=gen)
        _, score = model(x[idx])
        loss = score.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        shown.advance(detail=f"loss {losses[-1]:.4f}")
    shown.close()
    model.eval()
    with torch.no_grad():
        scores = model(x_all)[1].numpy()
    normal, alert = scores[~sig.alerts], scores[sig.alerts]
    threshold = float(np.percentile(normal, 99))
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    ckpt, windows = cfg.out_dir / "mscred.pt", cfg.out_dir / "mscred_windows.npz"
    state = {
        "state_dict": model.state_dict(),
        "model_kwargs": kwargs,
        "signatures": sc.to_dict(),
        "channels": sig.channels,
        "scale": sig.scale.tolist(),
        "score_threshold": threshold,
    }
    atomic_write(ckpt, lambda tmp: torch.save(state, tmp))

    def save_windows(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would add ".npz" to the temp name
            np.savez(fh, **{INPUT_NAME: sig.windows})

    atomic_write(windows, save_windows)
    return MscredTrainResult(
        checkpoint=ckpt,
        windows=windows,
        samples=int(x.shape[0]),
        loss_first=losses[0],
        loss_last=losses[-1],
        score_threshold=threshold,
        score_mean_normal=float(normal.mean()),
        score_mean_alert=float(alert.mean()) if alert.size else None,
        flagged_alert_windows=int((alert > threshold).sum()),
        alert_windows=int(alert.size),
        seconds=time.perf_counter() - start,
    )


@dataclass
class MscredShipConfig:
    """What to ship."""

    checkpoint: Path  # mscred.pt from train
    windows: Path | None = (
        None  # real windows for verification (default: mscred_windows.npz beside the checkpoint)
    )
    releases: Path = Path("releases")
    name: str = "mscred"
    max_batch: int = 64  # largest batch verified and allowed
    strategy: str = "auto"  # exporter chain: auto | dynamo | torchscript

    def __post_init__(self) -> None:
        check_name(self.name, "--name")  # becomes releases/<name>/
        self.checkpoint, self.releases = Path(self.checkpoint), Path(self.releases)
        if self.windows is None and (self.checkpoint.parent / "mscred_windows.npz").is_file():
            self.windows = self.checkpoint.parent / "mscred_windows.npz"
        self.windows = Path(self.windows) if self.windows else None


def ship_mscred(config: MscredShipConfig) -> Any:
    """Export + verify + bundle through ``onnxship.ship``; returns its ShipResult (``latest`` moves on a pass)."""
    import torch

    from onnxship.ship import ship
    from onnxship.spec._config import (
        ExportSection,
        ModelSection,
        PackageSection,
        PathsSection,
        ShipConfig,
        VerifySection,
    )

    cfg = config
    if not cfg.checkpoint.is_file():
        raise ConfigError(
            f"checkpoint {str(cfg.checkpoint)!r} does not exist", hint="run `recipes mscred train`"
        )
    meta = torch.load(cfg.checkpoint, map_location="cpu", weights_only=True)
    kw, sc = meta["model_kwargs"], meta["signatures"]
    dims = f"batch=2..{cfg.max_batch} x {kw['window']} x {kw['scales']} x {kw['features']} x {kw['features']}"
    metadata = {
        "model_type": "mscred",
        "window": kw["window"],
        "window_static": True,
        "dynamic_dims": ["batch"],
        "signatures": sc,
        "channels": meta["channels"],
        "scale": meta["scale"],
        "score_threshold": meta["score_threshold"],
        "notes": NOTES,
    }
    ship_cfg = ShipConfig(
        model=ModelSection(spec=MSCRED_SPEC, name=cfg.name, checkpoint=str(cfg.checkpoint), args=dict(kw)),
        paths=PathsSection(releases=str(cfg.releases)),
        export=ExportSection(
            strategy=cfg.strategy,
            inputs=[f"{INPUT_NAME}:{dims}:float32:0..1"],
            output_names=list(OUTPUT_NAMES),
            metadata=metadata,
        ),
        package=PackageSection(),
    )
    if cfg.windows is not None:
        ship_cfg.verify = VerifySection(mode="full", data=str(cfg.windows))
    return ship(config=ship_cfg)

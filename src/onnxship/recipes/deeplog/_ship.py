"""``ship``: a trained DeepLog checkpoint + its vocabulary -> a verified release bundle (through ``onnxship.ship``).

The vocabulary is validated against the model before anything is exported (id-keyed vocabularies and size
mismatches with the model's nn.Embedding are refused with the fix), shipped as the ``vocab`` asset (and, with
``portable``, its ``{"0": "template"}`` engine form). The bundle is verified by ``ship`` itself (golden inputs + the
shape sweep); then the real windows go through ``onnxship.verify`` with the sequence task: the next-event top-g
decisions of PyTorch and ONNX Runtime must agree on 100% of them before ``latest`` moves.

DO NOT import torch at module level.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxship._errors import ConfigError, PackagingError, VerificationError
from onnxship._util import check_name

if TYPE_CHECKING:
    from onnxship.ship import ShipResult

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "DeepLogShipConfig", "DeepLogShipResult", "ship_deeplog"]

INPUT_NAME = "input_sequence"
OUTPUT_NAME = "predictions"
NOTES = (
    "ONNX model supports dynamic sequence lengths via dynamic_axes. seq_len is the recommended value from "
    "training. Output: next-event logits over the vocabulary; an event is anomalous when it is not among the "
    "top_g predictions."
)


@dataclass
class DeepLogShipConfig:
    """What to ship and how."""

    checkpoint: Path  # deeplog.pt from train ({"state_dict", "model_kwargs", "vocab_size", "seq_len"})
    vocab: Path  # vocab.json {"template": id} from build
    releases: Path = Path("releases")  # releases/<name>/<version>/
    name: str = "deeplog"
    seq_len: int | None = None  # the export window (default: the checkpoint's seq_len)
    max_seq: int = 64  # largest sequence length verified and allowed
    max_batch: int = 64  # largest batch verified and allowed
    portable: bool = False  # also write assets/vocab.portable.json {"0": "template"} for non-Python engines
    sequences: Path | None = (
        None  # real windows for the sequence-task check (default: sequences.parquet beside vocab)
    )
    top_g: int = 9  # DeepLog's g (stored in the metadata; detect uses it by default)
    strategy: str = "auto"  # exporter chain: auto | dynamo | torchscript
    model: str | None = None  # factory spec (default: examples/deeplog/model.py:build_model)

    def __post_init__(self) -> None:
        check_name(self.name, "--name")  # becomes releases/<name>/
        self.checkpoint, self.vocab, self.releases = (
            Path(self.checkpoint),
            Path(self.vocab),
            Path(self.releases),
        )
        self.sequences = Path(self.sequences) if self.sequences else None
        if self.top_g < 1:
            raise ConfigError(f"top_g={self.top_g} must be >= 1", hint="DeepLog uses 9")
        if self.seq_len is not None and not 1 <= self.seq_len <= self.max_seq:
            raise ConfigError(
                f"--seq-len {self.seq_len} is outside 1..{self.max_seq}",
                hint="use the window the model was trained with",
            )


@dataclass
class DeepLogShipResult:
    """The release and the real-window agreement."""

    release: ShipResult
    vocab_size: int
    seq_len: int
    sequence_check: (
        dict[str, Any] | None
    )  # the verify report's task metrics on the real windows (None: no windows)
    latest_moved: bool
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "release": self.release.to_dict(),
            "vocab_size": self.vocab_size,
            "seq_len": self.seq_len,
            "sequence_check": self.sequence_check,
            "latest_moved": self.latest_moved,
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }


def _read_vocab(path: Path) -> Any:
    if not path.is_file():
        raise PackagingError(
            f"vocab {str(path)!r} does not exist", hint="pass the vocab.json written by build"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise PackagingError(f"vocab {str(path)!r} is not valid JSON ({exc})", hint="re-run build") from None


def _check_vocab(cfg: DeepLogShipConfig, loaded: Any) -> tuple[dict[str, int], int]:
    """Validate the vocabulary against the model before exporting (fail fast, nothing written)."""
    from torch import nn

    from onnxship.package._assets import ModelSizes, validate_vocab
    from onnxship.recipes.deeplog._train import _vocab_sha256

    module = loaded.model
    emb = next((m.num_embeddings for m in module.modules() if isinstance(m, nn.Embedding)), None)
    out = next((m.out_features for m in reversed(list(module.modules())) if isinstance(m, nn.Linear)), None)
    declared = loaded.checkpoint_meta.get("vocab_size")
    vocab, _ = validate_vocab(
        _read_vocab(cfg.vocab),
        ModelSizes(embedding=emb, output=out, declared=declared),
        what=f"vocab {str(cfg.vocab)!r}",
    )
    expected = loaded.checkpoint_meta.get("vocab_sha256")
    if expected and expected != _vocab_sha256(vocab):
        raise PackagingError(
            f"vocab {str(cfg.vocab)!r} has the model's size ({len(vocab)}) but not the "
            "templates/ids it was trained with",
            hint="ship the vocab.json from the build the checkpoint was trained on, or retrain with this one",
        )
    seq_len = cfg.seq_len or loaded.checkpoint_meta.get("seq_len")
    if not isinstance(seq_len, int) or not 1 <= seq_len <= cfg.max_seq:
        raise ConfigError(
            f"no usable seq_len (checkpoint says {loaded.checkpoint_meta.get('seq_len')!r})",
            hint=f"pass --seq-len N (1..{cfg.max_seq}), the window the model was trained with",
        )
    return vocab, seq_len


def _sequence_check(
    cfg: DeepLogShipConfig, sequences: Path, result: ShipResult, module: Any
) -> dict[str, Any]:
    """The real windows' top-g agreement: from the bundle's own report when ship used the same g, else a
    separate ``onnxship.verify`` run with the sequence task on the same windows."""
    from onnxship.verify import VerifyConfig, verify

    metrics = dict(getattr(result.report, "task_metrics", None) or {})
    if metrics.get("task") == "sequence" and metrics.get("top_g") == cfg.top_g:
        metrics["source"] = "release report.json"
        return metrics
    report = verify(
        result.release.model_path,
        model=module,
        config=VerifyConfig(
            mode="full",
            task="sequence",
            data=sequences,
            top_g=cfg.top_g,
            batch_size=cfg.max_batch,
            sweep=False,
            thresholds={"decision_disagreement": 0.0},
        ),
    )
    metrics = dict(report.task_metrics or {})
    metrics["source"] = "onnxship.verify"
    return metrics


def _check_windows(sequences: Path, seq_len: int, n_vocab: int) -> None:
    from onnxship.recipes.deeplog._build import read_sequences
    from onnxship.recipes.deeplog._train import window_arrays

    x, y = window_arrays(read_sequences(sequences))
    if x.shape[1] != seq_len:
        raise ConfigError(
            f"the sequences have windows of {x.shape[1]} events, the model ships with seq_len {seq_len}",
            hint="pass the sequences.parquet of the build the model was trained on",
        )
    if int(min(x.min(), y.min())) < 0 or int(max(x.max(), y.max())) >= n_vocab:
        raise ConfigError(
            f"the sequences use ids outside the vocabulary 0..{n_vocab - 1}",
            hint="pass the sequences.parquet and vocab.json of the same build",
        )


def ship_deeplog(config: DeepLogShipConfig) -> DeepLogShipResult:
    """Export, verify and bundle a DeepLog checkpoint with its vocabulary; ``latest`` moves only when the real
    windows' top-g decisions agree 100% between PyTorch and ONNX Runtime.

    Raises:
        PackagingError: an id-keyed vocabulary, or one that does not fit the model (nothing is written).
        ExportError / VerificationError: no verified export, or disagreement on the real windows (the release
            folder stays, unpublished: ``latest`` is not moved).

    Example:
        >>> ship_deeplog(DeepLogShipConfig(Path("work/deeplog.pt"), Path("work/vocab.json"), portable=True))  # doctest: +SKIP
    """
    from onnxship.package._release import set_latest
    from onnxship.recipes.deeplog._train import default_model_spec
    from onnxship.ship import ship
    from onnxship.spec._config import (
        ExportSection,
        ModelSection,
        PackageSection,
        PathsSection,
        ShipConfig,
        VerifySection,
    )
    from onnxship.spec._model import parse_model_spec

    start = time.perf_counter()
    cfg = config
    spec_text = cfg.model or default_model_spec()
    spec = parse_model_spec(spec_text, checkpoint=cfg.checkpoint)
    loaded = spec.load()
    vocab, seq_len = _check_vocab(cfg, loaded)
    n = len(vocab)
    notes: list[str] = []
    sequences = cfg.sequences
    if sequences is None and (cfg.vocab.parent / "sequences.parquet").is_file():
        sequences = cfg.vocab.parent / "sequences.parquet"
        notes.append(f"real windows for the top-g check: {sequences} (found beside the vocab)")
    if sequences is not None:
        _check_windows(sequences, seq_len, n)
    metadata = {
        "model_type": "deeplog",
        "vocab_size": n,
        "seq_len": seq_len,
        "top_g": cfg.top_g,
        "model_spec": spec_text,
        "notes": NOTES,
    }
    ship_cfg = ShipConfig(
        model=ModelSection(spec=spec_text, name=cfg.name, checkpoint=str(cfg.checkpoint)),
        paths=PathsSection(releases=str(cfg.releases)),
        export=ExportSection(
            strategy=cfg.strategy,
            inputs=[f"{INPUT_NAME}:batch=2..{cfg.max_batch} x seq={seq_len}..{cfg.max_seq}:int64:0..{n}"],
            output_names=[OUTPUT_NAME],
            metadata=metadata,
        ),
        package=PackageSection(assets={"vocab": str(cfg.vocab)}, portable=cfg.portable, update_latest=False),
    )
    if sequences is not None:  # ship's own verification then runs on the real windows with the sequence task
        ship_cfg.verify = VerifySection(mode="full", task="sequence", data=str(sequences))
    result = ship(config=ship_cfg)
    notes += result.notes
    check = None
    if sequences is not None:
        check = _sequence_check(cfg, sequences, result, loaded.model)
        if check.get("decision_agreement") != 1.0:
            raise VerificationError(
                f"release {result.version}: PyTorch and ONNX Runtime disagree on the real windows "
                f"({check.get('decision_disagreement_count')} of {check.get('samples')} top-{cfg.top_g} "
                "decisions differ; DeepLog needs 100% agreement)",
                hint="latest was not moved; the release folder is kept for inspection — see the export candidates "
                "in its report.json",
            )
    else:
        notes.append(
            "no --sequences given: the real-window top-g check was skipped (ship's golden + sweep "
            "verification still ran)"
        )
    set_latest(result.path.parent, result.version)
    return DeepLogShipResult(
        release=result,
        vocab_size=n,
        seq_len=seq_len,
        sequence_check=check,
        latest_moved=True,
        seconds=time.perf_counter() - start,
        notes=notes,
    )

"""DeepLog recipe fixtures: the real loghub samples, and one tiny end-to-end run (parse -> build -> train -> ship ->
detect on BGL_2k) shared by the whole session, because training and shipping are the slow parts."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# The repo's sibling folder ../shared holds the loghub samples (present in CI).
LOGHUB = Path(__file__).resolve().parents[2].parent / "shared/data/loghub"
NODE_DIR = Path(__file__).resolve().parents[2] / "examples/deeplog/node"
TINY = {"embed_dim": 8, "hidden": 16, "layers": 1}


@pytest.fixture(scope="session")
def loghub(require_component) -> Path:
    require_component(
        (LOGHUB / "BGL_2k.log").is_file() and (LOGHUB / "HDFS_2k.log").is_file(),
        f"loghub samples missing: expected HDFS_2k.log and BGL_2k.log in {LOGHUB}",
    )
    return LOGHUB


@pytest.fixture(scope="session")
def drain3_available(require_component) -> None:
    require_component(
        importlib.util.find_spec("drain3") is not None,
        "drain3 is not installed (scripts/components.sh component_drain3)",
    )


@pytest.fixture(scope="session")
def node_ort(require_component) -> str:
    node = shutil.which("node") or ("/usr/bin/node" if Path("/usr/bin/node").exists() else None)
    require_component(
        node is not None and (NODE_DIR / "node_modules/onnxruntime-node/package.json").is_file(),
        "node + onnxruntime-node missing (scripts/components.sh component_node_ort)",
    )
    return str(node)


@dataclass
class Pipeline:
    work: Path
    parse: Any
    build: Any
    train: Any
    ship: Any
    detect: Any


@pytest.fixture(scope="session")
def bgl_pipeline(loghub: Path, drain3_available: None, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """BGL_2k end to end with a tiny DeepLog (TorchScript exporter, 40 training steps)."""
    import torch

    from onnxship.recipes.deeplog import (
        BuildConfig,
        DeepLogShipConfig,
        DetectConfig,
        ParseConfig,
        TrainConfig,
        build_sequences,
        detect_anomalies,
        parse_logs,
        ship_deeplog,
        train_deeplog,
    )

    work = tmp_path_factory.mktemp("deeplog-bgl")
    # One intra-op thread: on a loaded 2-core machine torch's spinning threads made a tiny LSTM step 50x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        parsed = parse_logs(ParseConfig(loghub / "BGL_2k.log", "bgl", work / "parsed.parquet"))
        built = build_sequences(BuildConfig(work / "parsed.parquet", work, window=10))
        trained = train_deeplog(
            TrainConfig(
                built.sequences, built.vocab, work / "deeplog.pt", max_steps=40, learning_rate=1e-2, **TINY
            )
        )
        shipped = ship_deeplog(
            DeepLogShipConfig(
                trained.checkpoint,
                built.vocab,
                releases=work / "releases",
                portable=True,
                strategy="torchscript",
            )
        )
        detected = detect_anomalies(
            DetectConfig(
                work / "releases/deeplog/latest",
                work / "parsed.parquet",
                out=work / "detections.parquet",
                golden_out=work / "golden_windows.json",
            )
        )
    finally:
        torch.set_num_threads(threads)
    return Pipeline(work, parsed, built, trained, shipped, detected)

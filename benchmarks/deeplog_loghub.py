"""DeepLog on the loghub samples, end to end: parse quality, training, shipping and detection quality per log.

For HDFS_2k and BGL_2k: Drain3 grouping accuracy against loghub's reference templates; then, on BGL_2k (the sample
with alert labels), build -> train (the default examples/deeplog model) -> ship (exporter chain ``auto``) -> detect,
recording stage times, the real-window torch/ONNX top-g agreement and precision/recall/F1 against the alert labels
at several g. The model is trained on the normal windows of the same log it is evaluated on (the 2k sample has no
separate test split): the F1 figures are in-sample.

Usage: python benchmarks/deeplog_loghub.py [--out benchmarks/results/deeplog_loghub.json] [--loghub DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/deeplog_loghub.json")
    ap.add_argument("--loghub", type=Path, default=ROOT.parent / "shared/data/loghub")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = ap.parse_args()

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

    torch.set_num_threads(args.threads)
    result: dict = {
        "load_avg_start": os.getloadavg(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "threads": args.threads,
        "parse": {},
    }
    with tempfile.TemporaryDirectory(prefix="deeplog-bench-") as tmp:
        work = Path(tmp)
        for fmt in ("hdfs", "bgl"):
            r = parse_logs(ParseConfig(args.loghub / f"{fmt.upper()}_2k.log", fmt, work / f"{fmt}.parquet"))
            result["parse"][fmt] = {
                "grouping_accuracy": r.grouping_accuracy,
                "templates": r.templates,
                "reference_templates": r.reference_templates,
                "seconds": r.seconds,
            }
        t0 = time.perf_counter()
        b = build_sequences(BuildConfig(work / "bgl.parquet", work, window=10))
        result["build"] = b.to_dict() | {"seconds": time.perf_counter() - t0}
        t = train_deeplog(TrainConfig(b.sequences, b.vocab, work / "deeplog.pt", epochs=args.epochs))
        result["train"] = {k: v for k, v in t.to_dict().items() if k not in ("checkpoint", "log")}
        t0 = time.perf_counter()
        s = ship_deeplog(DeepLogShipConfig(t.checkpoint, b.vocab, releases=work / "releases", portable=True))
        result["ship"] = {
            "seconds": time.perf_counter() - t0,
            "exporter": s.release.export.strategy,
            "opset": s.release.export.opset,
            "sequence_check": s.sequence_check,
        }
        result["detect"] = {}
        for g in (5, 9, 15):
            d = detect_anomalies(
                DetectConfig(work / "releases/deeplog/latest", work / "bgl.parquet", top_g=g)
            )
            result["detect"][f"g={g}"] = {
                "onnx": d.metrics,
                "torch": d.torch["metrics"] if d.torch else None,
                "torch_onnx_decision_agreement": d.torch["agreement"]["decision_agreement"]
                if d.torch
                else None,
                "anomalies": d.anomalies,
                "windows": d.windows,
                "seconds": d.seconds,
            }
    result["load_avg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(
        json.dumps(
            {"parse": result["parse"], "detect": {k: v["onnx"] for k, v in result["detect"].items()}},
            indent=1,
            default=str,
        )
    )


if __name__ == "__main__":
    main()

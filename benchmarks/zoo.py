"""A zoo of real architectures through ``onnxship.export``, judged by an independent checker.

Every model is built from code or config with random weights (timm, transformers and Ultralytics when installed,
plain torch otherwise; nothing is downloaded). ``onnxship.export`` runs with its default gate; then this script,
not onnxship, decides whether what shipped is right: it opens the ONNX file with its own ONNX Runtime session and
compares it with eager PyTorch at several shapes inside the dim ranges the release declares (the shapes a server
would accept), with realistic inputs (token ids in range, padding-style masks with at least one valid token,
images in [0, 1]). Verdicts:

* shipped-correct: every checked shape agrees (finite, within tolerance), at least 2 shapes checked;
* shipped-wrong: ONNX Runtime fails, answers non-finite values, or disagrees at a shape the release accepts;
* refused: ``onnxship.export`` raised (its reason is recorded);
* skipped: the family's package is not installed here.

Goal: 0 shipped-wrong.

Usage:
    python benchmarks/zoo.py [--quick] [--only NAME ...] [--out benchmarks/results/zoo.json]

``--quick`` uses the TorchScript exporter (the gate is the same; dynamo adds minutes per model on 2 cores); a model
it refuses is re-run with the full ``auto`` chain (dynamo first) and judged by the same checker (``with_auto``), so
the counts say whether a refusal was deserved.
timm and Ultralytics import torchvision, made importable here by ``tests/_torchvision_shim.py`` (see its docstring).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RTOL, ATOL = 1e-3, 1e-4  # fp32 agreement: |ort - torch| <= ATOL + RTOL * |torch|, elementwise


def _shim() -> bool:
    spec = importlib.util.spec_from_file_location(
        "_torchvision_shim", ROOT / "tests" / "_torchvision_shim.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return bool(mod.install_torchvision_shim())


def _have(*mods: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in mods)


# -- the zoo -------------------------------------------------------------------------------------------------------


@dataclass
class Entry:
    name: str
    family: str
    build: Callable[[], Any]
    inputs: list[str]  # onnxship input specs
    check: list[dict[str, int]]  # dim values the checker tries (filtered to the shipped ranges)
    needs: tuple[str, ...] = ()
    kinds: dict[str, str] = field(default_factory=dict)  # input -> ids:<high> | mask | image
    tolerance: tuple[float, float] | None = (
        None  # (atol, rtol) the user would declare; used by export and checker
    )


def _timm(name: str, **kw: Any) -> Callable[[], Any]:
    def build() -> Any:
        import timm

        return timm.create_model(name, pretrained=False, **kw)

    return build


def _hf(config_cls: str, model_cls: str, **cfg: Any) -> Callable[[], Any]:
    def build() -> Any:
        import torch
        import transformers

        config = getattr(transformers, config_cls)(**cfg)
        inner = getattr(transformers, model_cls)(config)

        class LastHidden(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
                return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

        return LastHidden()

    return build


def _yolo() -> Any:
    from onnxship.recipes.two_stage._data import make_scenes
    from onnxship.recipes.two_stage._models import build_yolo_detector
    from onnxship.recipes.two_stage._train import calibrate_batchnorm

    model = build_yolo_detector("yolov8n.yaml", num_classes=3, image_size=64)
    calibrate_batchnorm(model, make_scenes(16, size=64, seed=3).images)
    return model


def _unet() -> Any:
    import torch
    from torch import nn

    def block(i: int, o: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.d1, self.d2, self.mid = block(3, 8), block(8, 16), block(16, 16)
            self.u2, self.u1, self.head = block(32, 8), block(16, 8), nn.Conv2d(8, 2, 1)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            a = self.d1(image)
            b = self.d2(nn.functional.max_pool2d(a, 2))
            m = self.mid(nn.functional.max_pool2d(b, 2))
            b2 = self.u2(torch.cat([nn.functional.interpolate(m, scale_factor=2.0), b], 1))
            return self.head(self.u1(torch.cat([nn.functional.interpolate(b2, scale_factor=2.0), a], 1)))

    return UNet()


def _lstm() -> Any:
    from onnxship.testing import DeepLogLSTM

    return DeepLogLSTM(vocab=30, embed=16, hidden=32)


def _gru() -> Any:
    from onnxship.testing import GRUTagger

    return GRUTagger()


def _torch_encoder() -> Any:
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(100, 32)
            layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
            self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.enc(self.emb(tokens))

    return Encoder()


IMG = "image:batch=2 x 3 x 64 x 64:float32:0..1"
IMG_POINTS = [{"batch": 1}, {"batch": 3}, {"batch": 4}]
TXT = ["input_ids:batch=2 x seq=8..32:int64:0..100", "attention_mask:batch=2 x seq=8..32:int64:0..2"]
TXT_POINTS = [
    {"batch": 1, "seq": 8},
    {"batch": 3, "seq": 13},
    {"batch": 2, "seq": 32},
    {"batch": 4, "seq": 20},
]
TXT_KINDS = {"input_ids": "ids:100", "attention_mask": "mask"}
_TINY_BERT = dict(
    vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
)

ZOO: list[Entry] = [
    Entry("timm/resnet10t", "timm", _timm("resnet10t", num_classes=10), [IMG], IMG_POINTS, ("timm",)),
    Entry("timm/convnext_atto", "timm", _timm("convnext_atto", num_classes=10), [IMG], IMG_POINTS, ("timm",)),
    Entry(
        "timm/tf_efficientnetv2_b0",
        "timm",
        _timm("tf_efficientnetv2_b0", num_classes=10),
        [IMG],
        IMG_POINTS,
        ("timm",),
    ),
    Entry(
        "timm/mobilenetv3_small_050",
        "timm",
        _timm("mobilenetv3_small_050", num_classes=10),
        [IMG],
        IMG_POINTS,
        ("timm",),
    ),
    Entry(
        "timm/vit_tiny_patch16",
        "timm",
        _timm("vit_tiny_patch16_224", num_classes=10, img_size=64),
        [IMG],
        IMG_POINTS,
        ("timm",),
    ),
    Entry("timm/regnetx_002", "timm", _timm("regnetx_002", num_classes=10), [IMG], IMG_POINTS, ("timm",)),
    Entry(
        "transformers/bert",
        "transformers",
        _hf("BertConfig", "BertModel", **_TINY_BERT),
        TXT,
        TXT_POINTS,
        ("transformers",),
        TXT_KINDS,
    ),
    Entry(
        "transformers/distilbert",
        "transformers",
        _hf(
            "DistilBertConfig",
            "DistilBertModel",
            vocab_size=100,
            dim=32,
            n_layers=2,
            n_heads=4,
            hidden_dim=64,
        ),
        TXT,
        TXT_POINTS,
        ("transformers",),
        TXT_KINDS,
    ),
    Entry(
        "transformers/gpt2",
        "transformers",
        _hf(
            "GPT2Config",
            "GPT2Model",
            vocab_size=100,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=64,
            bos_token_id=0,
            eos_token_id=0,
        ),
        TXT,
        TXT_POINTS,
        ("transformers",),
        TXT_KINDS,
    ),
    Entry(
        "transformers/roberta",
        "transformers",
        _hf("RobertaConfig", "RobertaModel", max_position_embeddings=64, **_TINY_BERT),
        TXT,
        TXT_POINTS,
        ("transformers",),
        TXT_KINDS,
    ),
    Entry(
        "ultralytics/yolov8n",
        "ultralytics",
        _yolo,
        [IMG],
        IMG_POINTS,
        ("ultralytics",),
        # raw boxes are pixels through a 16-bin softmax times strides up to 32: 0.05 px absolute, as the
        # two-stage recipe declares (at the default atol 1e-4 the gate refuses it on float32 rounding alone)
        tolerance=(0.05, 3e-3),
    ),
    Entry(
        "torch/lstm",
        "torch",
        _lstm,
        ["input_sequence:batch=2 x seq=10..32:int64:0..30"],
        [{"batch": 1, "seq": 10}, {"batch": 3, "seq": 17}, {"batch": 2, "seq": 32}],
        kinds={"input_sequence": "ids:30"},
    ),
    Entry(
        "torch/gru_tagger",
        "torch",
        _gru,
        ["tokens:batch=2 x seq=10..32:int64:0..20"],
        [{"batch": 1, "seq": 10}, {"batch": 3, "seq": 17}, {"batch": 2, "seq": 32}],
        kinds={"tokens": "ids:20"},
    ),
    Entry(
        "torch/transformer_encoder",
        "torch",
        _torch_encoder,
        ["tokens:batch=2 x seq=8..32:int64:0..100"],
        [{"batch": 1, "seq": 8}, {"batch": 3, "seq": 13}, {"batch": 2, "seq": 32}],
        kinds={"tokens": "ids:100"},
    ),
    Entry(
        "torch/unet_dynamic_hw",
        "torch",
        _unet,
        ["image:batch=2 x 3 x height=32..64 x width=32..64:float32:0..1"],
        [
            {"batch": 1, "height": 32, "width": 32},
            {"batch": 2, "height": 48, "width": 64},
            {"batch": 3, "height": 64, "width": 40},
        ],
    ),
]


# -- the independent checker ---------------------------------------------------------------------------------------


def _inputs(meta: dict[str, Any], point: dict[str, int], kinds: dict[str, str], rng: np.random.Generator):
    """Realistic inputs at ``point`` from the shipped metadata's input records; None when outside the ranges."""
    feeds: dict[str, np.ndarray] = {}
    for rec in meta["inputs"]:
        shape = []
        for d in rec["dims"]:
            if d.get("name"):
                v = point.get(d["name"], d["value"])
                lo, hi = d.get("min") or 1, d.get("max")
                if v < lo or (hi is not None and v > hi):
                    return None
                shape.append(v)
            else:
                shape.append(d["value"])
        kind = kinds.get(rec["name"], "image" if rec["dtype"].startswith("float") else "ids:10")
        if kind == "mask":
            lengths = rng.integers(1, shape[1] + 1, shape[0])  # padding masks, >= 1 valid token per row
            lengths[0] = shape[1]
            arr = (np.arange(shape[1])[None, :] < lengths[:, None]).astype(rec["dtype"])
        elif kind.startswith("ids:"):
            arr = rng.integers(0, int(kind[4:]), shape).astype(rec["dtype"])
        else:
            arr = rng.uniform(0, 1, shape).astype(rec["dtype"])
        feeds[rec["name"]] = arr
    return feeds


def _torch_outputs(model: Any, feeds: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        out = model(*[torch.from_numpy(feeds[n]) for n in names])
    flat = list(out) if isinstance(out, (tuple, list)) else [out]
    return [o.detach().float().numpy() for o in flat if isinstance(o, torch.Tensor)]


def check(model: Any, onnx_path: Path, meta: dict[str, Any], entry: Entry) -> dict[str, Any]:
    """Our own ORT-vs-PyTorch comparison at the entry's shapes; never uses onnxship's verifier."""
    import onnxruntime as ort

    atol, rtol = entry.tolerance or (ATOL, RTOL)

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    rng = np.random.default_rng(1234)
    shapes: list[dict[str, Any]] = []
    wrong: list[str] = []
    for point in entry.check:
        feeds = _inputs(meta, point, entry.kinds, rng)
        if feeds is None:
            shapes.append({"point": point, "status": "outside the shipped range"})
            continue
        try:
            ref = _torch_outputs(model, feeds, [n for n in names])
        except Exception as exc:  # noqa: BLE001  PyTorch itself cannot run this shape: not the export's fault
            shapes.append({"point": point, "status": f"pytorch failed: {type(exc).__name__}"})
            continue
        try:
            got = sess.run(None, feeds)
        except Exception as exc:  # noqa: BLE001
            wrong.append(f"{point}: onnxruntime failed: {str(exc).splitlines()[0][:200]}")
            shapes.append({"point": point, "status": "onnxruntime failed"})
            continue
        worst = 0.0
        ok = len(got) == len(ref)
        for r, g in zip(ref, got, strict=False):
            g = np.asarray(g, np.float64)
            if g.shape != r.shape or not np.isfinite(g).all() or not np.isfinite(r).all():
                ok = False
                worst = float("inf")
                continue
            err = np.abs(g - r)
            worst = max(worst, float(err.max(initial=0.0)))
            ok = ok and bool((err <= atol + rtol * np.abs(r)).all())
        shapes.append({"point": point, "status": "agree" if ok else "disagree", "max_abs_err": worst})
        if not ok:
            wrong.append(f"{point}: max abs err {worst:.3g}")
    agreed = sum(s["status"] == "agree" for s in shapes)
    if wrong:
        verdict = "shipped-wrong"
    elif agreed >= 2:
        verdict = "shipped-correct"
    else:
        verdict = "shipped-unchecked"  # fewer than 2 shapes could be compared: no evidence either way
    return {"verdict": verdict, "shapes": shapes, "shapes_agreeing": agreed, "problems": wrong}


def run_entry(entry: Entry, strategy: str, work: Path) -> dict[str, Any]:
    import torch

    import onnxship
    from onnxship import ExportConfig, OnnxshipError
    from onnxship.verify._compare import Tolerance

    rec: dict[str, Any] = {"name": entry.name, "family": entry.family, "inputs": entry.inputs}
    if entry.tolerance:
        rec["tolerance"] = {"atol": entry.tolerance[0], "rtol": entry.tolerance[1]}
    if entry.needs and not _have(*entry.needs):
        return rec | {"verdict": "skipped", "reason": f"{', '.join(entry.needs)} not installed"}
    torch.manual_seed(0)
    t0 = time.perf_counter()
    try:
        model = entry.build().eval()
    except Exception as exc:  # noqa: BLE001
        return rec | {"verdict": "skipped", "reason": f"cannot build here: {type(exc).__name__}: {exc}"}
    out = work / entry.name.replace("/", "_")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = onnxship.export(
                model,
                inputs=entry.inputs,
                out=out,
                name="model",
                config=ExportConfig(
                    strategy=strategy, tolerance=Tolerance(*entry.tolerance) if entry.tolerance else None
                ),
            )
    except OnnxshipError as exc:
        return rec | {
            "verdict": "refused",
            "reason": exc.message.splitlines()[0][:400]
            + (f" | {exc.message.splitlines()[1][:300]}" if len(exc.message.splitlines()) > 1 else ""),
            "seconds": round(time.perf_counter() - t0, 2),
        }
    export_s = time.perf_counter() - t0
    meta = json.loads(Path(str(result.path) + ".meta.json").read_text())
    try:
        checked = check(model, result.path, meta, entry)
    except Exception as exc:  # noqa: BLE001  the checker's own failure is reported, never counted as correct
        checked = {"verdict": "shipped-wrong", "problems": [f"checker could not run the file: {exc}"]}
    return rec | {
        "strategy": result.strategy,
        "opset": result.opset,
        "static": result.static,
        "shipped_dims": {
            r["name"]: [(d.get("name"), d.get("min"), d.get("max")) for d in r["dims"] if d.get("name")]
            for r in meta["inputs"]
        },
        **checked,
        "seconds": round(export_s, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="TorchScript exporter (same gate, much faster here)")
    ap.add_argument(
        "--strategy", default=None, help="auto | dynamo | torchscript (default: auto, --quick: torchscript)"
    )
    ap.add_argument("--only", nargs="*", default=None, help="entry names (or prefixes) to run")
    ap.add_argument(
        "--no-retry", action="store_true", help="do not re-run refused models with the full auto chain"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "zoo.json")
    args = ap.parse_args()
    strategy = args.strategy or ("torchscript" if args.quick else "auto")
    shim = _shim() if _have("torchvision") else False
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch

    torch.set_num_threads(2)
    entries = [e for e in ZOO if not args.only or any(e.name.startswith(o) for o in args.only)]
    results = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for e in entries:
            print(f"[zoo] {e.name} ...", end=" ", flush=True)
            try:
                r = run_entry(e, strategy, Path(tmp))
            except Exception as exc:  # noqa: BLE001  a crash of the benchmark itself is recorded, not hidden
                r = {
                    "name": e.name,
                    "family": e.family,
                    "verdict": "benchmark-error",
                    "reason": traceback.format_exception_only(exc)[-1].strip(),
                }
            if r["verdict"] == "refused" and strategy != "auto" and not args.no_retry:
                # was the refusal deserved? the full chain (dynamo first) on the same model, same checker
                retry = run_entry(e, "auto", Path(tmp) / "auto")
                r["with_auto"] = {
                    k: retry.get(k) for k in ("verdict", "strategy", "reason", "problems", "seconds")
                }
            print(
                r["verdict"],
                r.get("seconds", ""),
                (r.get("reason") or "; ".join(r.get("problems") or []))[:160],
                f"(auto: {r['with_auto']['verdict']})" if "with_auto" in r else "",
                flush=True,
            )
            results.append(r)
    counts: dict[str, int] = {}
    for r in results:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    # refused by the quick run but shipped correct by the full chain: not wrong, but a refusal one exporter avoids
    counts["refused_but_auto_ships_correct"] = sum(
        1 for r in results if r.get("with_auto", {}).get("verdict") == "shipped-correct"
    )
    counts["refused_and_auto_ships_wrong"] = sum(
        1 for r in results if r.get("with_auto", {}).get("verdict") == "shipped-wrong"
    )
    import onnxruntime

    doc = {
        "benchmark": "zoo",
        "strategy": strategy,
        "quick": args.quick,
        "counts": counts,
        "goal": "0 shipped-wrong",
        "models": results,
        "seconds": round(time.perf_counter() - start, 1),
        "tolerance": {"rtol": RTOL, "atol": ATOL},
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "torchvision_shim": shim,
            "cpu_count": os.cpu_count(),
        },
    }
    if not args.only:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"[zoo] wrote {args.out}")
    print(json.dumps(counts))
    return 1 if counts.get("shipped-wrong") or counts["refused_and_auto_ships_wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())

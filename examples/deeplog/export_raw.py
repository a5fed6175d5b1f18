"""Export the example model with ``torch.onnx.export`` directly (not onnxship), printing the exporter's own output.

    python examples/deeplog/export_raw.py > export.log 2>&1
    onnxship doctor export-log export.log

This is what a log from an export script outside onnxship looks like; ``doctor export-log`` explains its warnings
with the same classifier ``onnxship export`` uses.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model import SEQ_LEN, VOCAB_SIZE, build_model  # noqa: E402

warnings.simplefilter("always")
model = build_model().eval()
sample = torch.randint(0, VOCAB_SIZE, (2, SEQ_LEN))
with tempfile.TemporaryDirectory() as tmp:
    print("exporting DeepLog (torchscript)", flush=True)
    torch.onnx.export(
        model,
        (sample,),
        str(Path(tmp) / "deeplog.onnx"),
        dynamo=False,
        opset_version=17,
        input_names=["input_sequence"],
        dynamic_axes={"input_sequence": {0: "batch", 1: "seq"}},
    )
print("done")

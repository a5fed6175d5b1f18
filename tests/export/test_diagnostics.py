"""Exporter messages classified into codes with advice (the same classifier serves `doctor export-log`)."""

from __future__ import annotations

import warnings

import pytest

from onnxship.export import RULES, classify, classify_log
from onnxship.export._diagnostics import capture_diagnostics

MESSAGES = [
    (
        "Converting a tensor to a Python boolean might cause the trace to be incorrect.",
        "TracerWarning",
        "ONX101",
    ),
    ("torch.tensor results are registered as constants in the trace.", "TracerWarning", "ONX102"),
    (
        "Failed to convert the model to the target version 17 using the ONNX C API. The model was not modified",
        None,
        "ONX123",
    ),
    (
        "[ONNXRuntimeError] : 10 : INVALID_GRAPH : ... Error Unrecognized attribute: num_outputs for operator Split",
        None,
        "ONX122",
    ),
    ("Iterating over a tensor might cause the trace to be incorrect.", "TracerWarning", "ONX103"),
    (
        "You are using the legacy TorchScript-based ONNX export. Starting in PyTorch 2.9, ...",
        "DeprecationWarning",
        "ONX104",
    ),
    (
        "Exporting a model to ONNX with a batch_size other than 1, with a variable length with LSTM can cause an error",
        "UserWarning",
        "ONX105",
    ),
    (
        "Constant folding - Only steps=1 can be constant folded for opset >= 10 onnx::Slice op.",
        "UserWarning",
        "ONX106",
    ),
    (
        "DispatchError: No ONNX function found for <OpOverload(op='aten.index', overload='Tensor')>",
        None,
        "ONX107",
    ),
    ("GuardOnDataDependentSymNode: Could not guard on data-dependent expression Eq(u0, 1)", None, "ONX108"),
    (
        "Constraints violated (L['x'].size()[1])! Not all values of seq satisfy the generated guard",
        None,
        "ONX109",
    ),
    (
        "To copy construct from a tensor, use sourceTensor.clone().detach() rather than torch.tensor(sourceTensor).",
        "UserWarning",
        "ONX110",
    ),
    (
        "_check_is_size will be removed in a future PyTorch release along with guard_size_oblivious.",
        "FutureWarning",
        "ONX111",
    ),
    ("`isinstance(treespec, LeafSpec)` is deprecated", "FutureWarning", "ONX111"),
    (
        "Setting ONNX exporter to use operator set version 18 because the requested opset_version 17 is lower",
        None,
        "ONX112",
    ),
    (
        "The tensor attributes self.l._flat_weights[0] were assigned during export. Such attributes must be registered "
        "as buffers",
        "UserWarning",
        "ONX113",
    ),
    ("torchvision is not installed. Skipping torchvision::nms", None, "ONX115"),
    ("forward() got multiple values for argument 'use_cache'", "TypeError", "ONX117"),
    # dynamo's per-step failure summaries (rules added for `doctor export-log`; see tests/doctor/data/)
    (
        "torch.onnx._internal.exporter._errors.TorchExportError: Failed to export the model with torch.export. "
        "This is step 1/3 of exporting the model to ONNX. Next steps:",
        None,
        "ONX118",
    ),
    (
        "Failed to decompose the FX graph for ONNX compatibility. This is step 2/3 of exporting the model to ONNX.",
        None,
        "ONX119",
    ),
    (
        "Failed to convert the exported program to an ONNX model. This is step 3/3 of exporting the model to ONNX.",
        None,
        "ONX120",
    ),
]


@pytest.mark.parametrize(("message", "category", "code"), MESSAGES)
def test_known_messages(message, category, code):
    d = classify(message, category)
    assert d.code == code
    assert d.advice and d.severity in ("error", "warning", "info", "noise")


def test_every_rule_is_exercised_or_documented():
    covered = {code for _, _, code in MESSAGES}
    assert {r.code for r in RULES} - covered <= {"ONX114", "ONX116"}
    assert len({r.code for r in RULES}) == len(RULES)


def test_unknown_message_is_kept_verbatim():
    d = classify("something entirely new happened", "UserWarning")
    assert d.code == "ONX199" and d.message == "something entirely new happened"


def test_capture_counts_repeats_and_silences_console(capsys):
    with capture_diagnostics(stage="t") as cap:
        for _ in range(3):
            warnings.warn(
                "Converting a tensor to a Python boolean might cause the trace to be incorrect.",
                UserWarning,
                stacklevel=1,
            )
        print("progress line")
    diags = cap.diagnostics()
    assert len(diags) == 1 and diags[0].count == 3 and diags[0].stage == "t"
    assert "progress line" in cap.printed
    assert capsys.readouterr().out == ""


def test_classify_log_reads_saved_stderr():
    log = (
        "/x/torch/onnx/utils.py:12: TracerWarning: Converting a tensor to a Python boolean might cause the trace\n"
        "  if x.sum() > 0:\n"
        "W1123 11:50:08.672000 2998 torch/onnx/_internal/exporter/_compat.py:133] Setting ONNX exporter to use "
        "operator set version 18 because the requested opset_version 17 is a lower version\n"
        "[torch.onnx] Run decompositions... ✅\n"
    )
    codes = [d.code for d in classify_log(log)]
    assert "ONX101" in codes and "ONX112" in codes
    assert "ONX199" not in codes  # progress lines are not diagnostics

"""`doctor export-log` explains saved logs of real torch.onnx.export runs with the export core's classifier."""

from __future__ import annotations

import pytest

from onnxship._errors import DoctorError
from onnxship.doctor import explain_export_log
from onnxship.export import classify_log


def test_torchscript_log(data):
    # stdout+stderr of torch.onnx.export(dynamo=False) on DeepLogLSTM and ShapeArithmetic (torch 2.13)
    result = explain_export_log(data / "export_torchscript.log")
    assert [c.code for c in result.codes] == ["ONX101", "ONX105", "ONX104"]
    assert result.counts == {"error": 0, "warning": 1, "info": 1, "noise": 2}
    assert bool(result)
    tracer = result.codes[0]
    assert "Converting a tensor to a Python float" in tracer.examples[0] and "shape sweep" in tracer.advice


def test_dynamo_failure_log(data):
    # torch.onnx.export(dynamo=True) on DataDependentBranch: a traceback, the exception summary, exporter noise
    result = explain_export_log(data / "export_dynamo_datadep.log")
    codes = {c.code: c for c in result.codes}
    assert {"ONX108", "ONX118", "ONX115"} <= set(codes)
    assert codes["ONX118"].severity == "error" and "step 1/3" in codes["ONX118"].title
    assert codes["ONX115"].count == 4 and codes["ONX115"].severity == "noise"
    assert not result  # the log holds errors
    assert [c.code for c in result.codes][:2] == ["ONX108", "ONX118"]  # errors first


def test_one_classifier(data):
    text = (data / "export_dynamo_datadep.log").read_text()
    result = explain_export_log(data / "export_dynamo_datadep.log")
    assert [d.to_dict() for d in result.diagnostics] == [d.to_dict() for d in classify_log(text)]


def test_log_without_diagnostics(tmp_path):
    path = tmp_path / "export.log"
    path.write_text("[torch.onnx] Run decompositions...\n[torch.onnx] Run decompositions... ✅\n")
    result = explain_export_log(path)
    assert result.codes == [] and bool(result) and result.lines == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\x08\x07\x12\x00\x00onnx", "binary file"),
    ],
)
def test_bad_export_logs(tmp_path, content, message):
    path = tmp_path / "export.log"
    path.write_bytes(content)
    with pytest.raises(DoctorError, match=message):
        explain_export_log(path)
    with pytest.raises(DoctorError, match="does not exist"):
        explain_export_log(tmp_path / "missing.log")

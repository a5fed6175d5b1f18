"""The export core on real tiny models with real onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

import onnxship
from onnxship import ConfigError, ExportError, InputSpecError, ModelLoadError
from onnxship.testing import (
    DataDependentBranch,
    DeepLogLSTM,
    DictInputModel,
    ShapeArithmetic,
    TupleOutputModel,
)
from onnxship.verify import OnnxRuntimeRunner


def _ort(path):
    return OnnxRuntimeRunner(path)


def test_lstm_dynamic_batch_and_seq(deeplog_export):
    model, result = deeplog_export
    assert result.strategy == "torchscript" and not result.static
    assert result.path.is_file() and result.meta_path.is_file()
    info = onnxship.inspect_model(result.path)
    assert info.inputs[0]["shape"] == ["batch", "seq"]
    assert info.outputs[0]["shape"][0] == "batch"
    # verified at the export shape and at least two others
    passed = [c for c in result.accepted.parity.checks if c.status == "passed"]
    assert len(passed) >= 3
    assert {"batch": 1, "seq": 1} in [c.dims for c in passed]
    # run it at a shape never seen by the exporter
    x = np.random.default_rng(5).integers(0, 30, size=(7, 23)).astype(np.int64)
    got = _ort(result.path).infer({"input_sequence": x})["output_0"]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-4)


def test_ids_default_to_embedding_range(deeplog_export):
    _, result = deeplog_export
    spec = result.inputs[0]
    assert (spec.low, spec.high) == (0, 30)
    assert spec.meta["range_source"] == "nn.Embedding.num_embeddings"


def test_metadata_embedded_and_sidecar(deeplog_export):
    _, result = deeplog_export
    model = onnx.load(str(result.path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    for key in (
        "onnxship_version",
        "model_name",
        "torch_version",
        "onnx_version",
        "exporter",
        "opset",
        "inputs",
        "dynamic_axes",
        "git_sha",
        "exported_at_utc",
        "weights_sha256",
        "vocab_size",
        "seq_len",
    ):
        assert key in props, key
    assert json.loads(props["dynamic_axes"])["input_sequence"] == {"0": "batch", "1": "seq"}
    assert json.loads(props["dynamic_axes"])["output_0"] == {"0": "batch"}
    side = json.loads(result.meta_path.read_text())
    assert side["onnx_sha256"] == result.sha256
    assert side["vocab_size"] == 30 and side["seq_len"] == 10
    assert side["exporter"] == "torchscript"
    assert [c["outcome"] for c in side["candidates"]] == ["accepted"]
    assert not list(result.path.parent.glob("*.data"))
    assert not list(result.path.parent.glob(".*"))  # no temp leftovers


def test_dict_inputs_bind_by_name_and_tuple_outputs(tmp_path):
    torch.manual_seed(0)
    model = DictInputModel()
    # given in the opposite order of forward(tokens, mask)
    samples = {"mask": torch.ones(2, 6, dtype=torch.int64), "tokens": torch.randint(0, 50, (2, 6))}
    result = onnxship.export(
        model,
        samples,
        dynamic={"tokens": {0: "batch", 1: "seq"}, "mask": {0: "batch", 1: "seq"}},
        out=tmp_path,
        name="dictmodel",
        strategy="torchscript",
        output_names=("logits", "emb"),
    )
    info = onnxship.inspect_model(result.path)
    assert [i["name"] for i in info.inputs] == ["tokens", "mask"]
    assert [o["name"] for o in info.outputs] == ["logits", "emb"]
    tokens = np.random.default_rng(1).integers(0, 50, size=(3, 9)).astype(np.int64)
    mask = np.ones((3, 9), dtype=np.int64)
    mask[0, 5:] = 0
    got = _ort(result.path).infer({"mask": mask, "tokens": tokens})
    with torch.no_grad():
        ref = model(torch.from_numpy(tokens), torch.from_numpy(mask))
    np.testing.assert_allclose(got["logits"], ref[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(got["emb"], ref[1].numpy(), atol=1e-5)


def test_nested_tuple_outputs_flattened(tmp_path):
    result = onnxship.export(
        TupleOutputModel(),
        torch.randn(3, 4),
        dynamic={"input_0": {0: "batch"}},
        out=tmp_path,
        name="tuple",
        strategy="torchscript",
    )
    assert [o["name"] for o in result.outputs] == ["output_0", "output_1", "output_2"]
    shapes = [o["shape"] for o in result.outputs]
    assert shapes[0] == ["batch", 3] and shapes[1] == ["batch", 2] and shapes[2] == ["batch"]


def test_batch1_dummy_is_bumped_and_batch1_still_verified(tmp_path):
    torch.manual_seed(0)
    result = onnxship.export(
        DeepLogLSTM(),
        inputs=["input_sequence:batch=1 x 10:int64"],
        out=tmp_path,
        name="b1",
        strategy="torchscript",
    )
    assert any("instead of 1" in n for n in result.notes)
    assert any(d.code == "ONX140" for d in result.diagnostics)
    dims = [c.dims for c in result.accepted.parity.checks if c.status == "passed"]
    assert {"batch": 1} in dims and {"batch": 2} in dims


def test_shape_arithmetic_frozen_by_torchscript_is_rejected(tmp_path):
    with pytest.raises(ExportError) as info:
        onnxship.export(
            ShapeArithmetic(),
            inputs=["x:batch=2 x seq=8:float32"],
            out=tmp_path,
            name="arith",
            strategy="torchscript",
        )
    err = info.value
    assert err.candidates[0].outcome == "rejected"
    assert "parity check failed" in err.candidates[0].reason
    assert "--allow-static" in (err.hint or "")
    assert any(d.code == "ONX101" for d in err.candidates[0].diagnostics)
    assert not (tmp_path / "arith.onnx").exists()
    assert not [p for p in tmp_path.iterdir()]  # nothing half-written


def test_allow_static_records_loudly(tmp_path):
    result = onnxship.export(
        ShapeArithmetic(),
        inputs=["x:batch=2 x seq=8:float32"],
        out=tmp_path,
        name="arith",
        strategy="torchscript",
        allow_static=True,
    )
    assert result.static
    assert [c.outcome for c in result.candidates] == ["rejected", "accepted"]
    assert any(d.code == "ONX150" and d.severity == "error" for d in result.diagnostics)
    assert json.loads(result.meta_path.read_text())["static"] is True
    assert onnxship.inspect_model(result.path).inputs[0]["shape"] == [2, 8]


def test_data_dependent_branch_torchscript_rejected(tmp_path):
    with pytest.raises(ExportError) as info:
        onnxship.export(
            DataDependentBranch(),
            inputs=["x:batch=2 x 4:float32"],
            out=tmp_path,
            name="dd",
            strategy="torchscript",
            seed=3,
        )
    cand = info.value.candidates[0]
    assert cand.outcome == "rejected" and "Python branch on tensor values" in cand.reason
    assert "`if x.sum() > 0:`" in cand.reason and "torch.cond" in info.value.hint


def test_factory_returning_tuple(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import torch\ndef build():\n    return torch.nn.Linear(2, 2), {'x': 1}\n")
    with pytest.raises(ModelLoadError, match=r"returned a tuple \(Linear, dict\)"):
        onnxship.export(f"{f}:build", inputs=["x:2x2:float32"], out=tmp_path / "o")


def test_pickled_checkpoint_needs_trust(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import torch\nclass Net(torch.nn.Linear):\n    pass\ndef build():\n    return Net(2, 3)\n")
    spec = onnxship.parse_model_spec(f"{f}:build")
    module = spec.factory()().eval()
    ckpt = tmp_path / "full.pt"
    torch.save({"model": module, "epoch": 3}, ckpt)  # a full pickle of a class defined in user code
    bad = onnxship.parse_model_spec(f"{f}:build", checkpoint=ckpt)
    with pytest.raises(ModelLoadError) as info:
        bad.load()
    assert "--trust-checkpoint" in info.value.hint
    ok = onnxship.parse_model_spec(f"{f}:build", checkpoint=ckpt, trust_checkpoint=True).load()
    torch.testing.assert_close(ok.model.weight, module.weight)
    assert ok.checkpoint_meta["epoch"] == 3


def test_unknown_opset_and_strategy():
    with pytest.raises(ConfigError, match="unknown opset 99"):
        onnxship.ExportConfig(opsets=(99,))
    with pytest.raises(ConfigError, match="valid strategies"):
        onnxship.ExportConfig(strategy="magic")


def test_bad_sample_inputs(tmp_path):
    with pytest.raises(ConfigError, match="must be tensors"):
        onnxship.export(TupleOutputModel(), {"x": [1, 2, 3]}, out=tmp_path)
    with pytest.raises(InputSpecError):
        onnxship.export(TupleOutputModel(), inputs=["x:2 x four:float32"], out=tmp_path)


@pytest.mark.parametrize(
    "value",
    [
        "2381546",
        "true",
        "null",
        "deeplog",
        '"quoted"',
        "[abc",
        18,
        0.5,
        True,
        None,
        {"a": [1, "2"]},
        ["x", 3],
    ],
)
def test_metadata_values_round_trip(value):
    from onnxship.onnxfile import decode_meta_value, encode_meta_value

    assert decode_meta_value(encode_meta_value(value)) == value
    if isinstance(value, str) and value in ("deeplog", "[abc"):
        assert encode_meta_value(value) == value  # plain strings stay plain for non-Python readers


def test_all_digit_git_sha_stays_a_string(tmp_path):
    """A short git sha can be all digits (seen in CI: 2381546); it must read back as a string everywhere."""
    from onnxship.verify import verify

    result = onnxship.export(
        TupleOutputModel(),
        torch.randn(3, 4),
        dynamic={"input_0": {0: "batch"}},
        out=tmp_path,
        name="digits",
        strategy="torchscript",
        metadata={"git_sha": "2381546"},
    )
    assert onnxship.inspect_model(result.path).metadata["git_sha"] == "2381546"
    report = verify(result.path, model=TupleOutputModel())
    assert report.to_dict()["git_sha"] == "2381546"

"""Model specs: file and dotted factories, bad factories, checkpoints, meta tensors, large-model external data."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import onnxship
from onnxship import ConfigError, ModelLoadError, onnxfile
from onnxship.spec import parse_model_spec
from onnxship.testing import TupleOutputModel
from onnxship.verify import OnnxRuntimeRunner


def test_dotted_module_factory(tmp_path):
    spec = parse_model_spec("onnxship.testing:DeepLogLSTM", kwargs={"vocab": 12})
    assert spec.default_name() == "testing"
    loaded = spec.load()
    assert loaded.model.embedding.num_embeddings == 12 and not loaded.model.training


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("return {'w': torch.zeros(2)}", "returned a dict with keys ['w']"),
        ("return 'weights/model.pt'", "returned a path 'weights/model.pt'"),
        ("return None", "returned NoneType"),
        ("raise RuntimeError('CUDA out of memory')", "raised RuntimeError: CUDA out of memory"),
        ("return torch.nn.Linear(2, 2, device='meta')", "on the 'meta' device"),
    ],
)
def test_bad_factories(tmp_path, body, message):
    f = tmp_path / "m.py"
    f.write_text(f"import torch\ndef build():\n    {body}\n")
    with pytest.raises(
        ModelLoadError,
        match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]"),
    ):
        parse_model_spec(f"{f}:build").load()


@pytest.mark.parametrize("text", ["model.py", "model.py:", ":build", "model.py:not-a-name"])
def test_bad_model_spec_strings(text):
    with pytest.raises(ConfigError):
        parse_model_spec(text)


def test_missing_factory_lists_callables(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import torch\ndef build_model():\n    return torch.nn.Linear(2, 2)\n")
    with pytest.raises(ModelLoadError) as info:
        parse_model_spec(f"{f}:build").load()
    assert "build_model" in info.value.hint


def test_checkpoint_wrappers_and_mismatch(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import torch\ndef build(n=3):\n    return torch.nn.Linear(2, n)\n")
    src = torch.nn.Linear(2, 5)
    wrapped = tmp_path / "wrapped.pt"
    torch.save(
        {
            "state_dict": {"module." + k: v for k, v in src.state_dict().items()},
            "model_kwargs": {"n": 5},
            "seq_len": 7,
        },
        wrapped,
    )
    loaded = parse_model_spec(f"{f}:build", checkpoint=wrapped).load()
    torch.testing.assert_close(loaded.model.weight, src.weight)
    assert loaded.checkpoint_meta == {"seq_len": 7, "n": 5}
    plain = tmp_path / "plain.pt"
    torch.save(src.state_dict(), plain)
    with pytest.raises(ModelLoadError, match="does not fit the model"):
        parse_model_spec(f"{f}:build", checkpoint=plain).load()  # factory default n=3
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(plain.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match="cannot be read"):
        parse_model_spec(f"{f}:build", checkpoint=trunc).load()


def test_fp16_export(tmp_path):
    torch.manual_seed(0)
    model = TupleOutputModel()
    result = onnxship.export(
        model,
        torch.randn(3, 4),
        dynamic={"input_0": {0: "batch"}},
        out=tmp_path,
        name="half",
        strategy="torchscript",
        fp16=True,
    )
    info = onnxship.inspect_model(result.path)
    assert info.inputs[0]["dtype"] == "float16" and info.metadata["precision"] == "fp16"
    assert model.a.weight.dtype == torch.float32  # the caller's model is left as it was


def test_python_api_restores_training_mode(tmp_path):
    model = TupleOutputModel().train()
    onnxship.export(model, torch.randn(3, 4), out=tmp_path, name="t", strategy="torchscript")
    assert model.training


def test_large_models_use_external_data(tmp_path, monkeypatch):
    monkeypatch.setattr(onnxfile, "PROTO_LIMIT", 1000)  # treat anything above 1 kB as "above 2 GB"
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 64)
    result = onnxship.export(model, torch.randn(2, 64), out=tmp_path, name="big", strategy="torchscript")
    data = tmp_path / "big.onnx.data"
    assert data.is_file() and data.stat().st_size >= 64 * 64 * 4
    proto = onnx.load(str(result.path), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert onnxship.inspect_model(result.path).external_data == ["big.onnx.data"]
    x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(
        OnnxRuntimeRunner(result.path).infer({"input_0": x})["output_0"], ref, atol=1e-5
    )


def test_external_data_outside_folder_is_refused(tmp_path):
    from onnxship import CheckError

    model = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["w"], ["y"])],
            "g",
            [],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])],
            [onnx.helper.make_tensor("w", onnx.TensorProto.FLOAT, [2], [1.0, 2.0])],
        )
    )
    t = model.graph.initializer[0]
    t.ClearField("float_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", "../../etc/passwd"), ("offset", "0"), ("length", "8")):
        e = t.external_data.add()
        e.key, e.value = k, v
    path = tmp_path / "evil.onnx"
    onnx.save(model, str(path))
    with pytest.raises(CheckError, match="leaves the model folder"):
        onnxship.inspect_model(path)
    t.external_data[0].value = "/etc/passwd"
    onnx.save(model, str(path))
    with pytest.raises(CheckError, match="leaves the model folder"):
        onnxship.inspect_model(path)

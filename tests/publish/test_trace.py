"""@trace_pytorch and log_onnx_model against the embedded sqlite store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from onnxship._errors import CheckError, ConfigError, ExportError, VerificationError
from onnxship.publish import log_onnx_model, resolve_tracking, trace_pytorch
from onnxship.testing import DictInputModel

mlflow = pytest.importorskip("mlflow")


def runs(store: Path, experiment: str):
    client = mlflow.MlflowClient(tracking_uri=resolve_tracking(store_dir=store).uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def test_dict_sample_bound_by_name_user_metrics_in_run_mode_restored(store, monkeypatch):
    monkeypatch.setenv("MODEL_ID", "m7")
    torch.manual_seed(0)
    model = DictInputModel()
    # keys in the opposite order of forward(tokens, mask): binding by name, never by insertion order
    sample = {"mask": torch.ones(1, 6), "tokens": torch.randint(0, 50, (1, 6))}

    @trace_pytorch("dict-model", sample, store_dir=store, strategy="torchscript")
    def train():
        model.train()
        mlflow.log_metric("train_loss", 0.25, step=0)
        mlflow.log_params({"lr": 0.001})
        return model

    returned = train()
    assert returned is model and model.training  # the trained model, in the mode it had
    result = train.last_result
    assert result.experiment_name == "m7_dict-model"
    (run,) = runs(store, "m7_dict-model")
    assert run.info.run_id == result.run_id and run.info.status == "FINISHED"
    assert run.data.metrics["train_loss"] == 0.25 and run.data.params["lr"] == "0.001"
    assert run.data.params["onnxship.input.tokens"].startswith("batch=")
    assert "onnxship.input.mask" in run.data.params
    assert run.data.metrics["golden.passed"] == 1.0
    assert run.data.tags["onnxship.source"] == "trace_pytorch"
    # the logged model answers like PyTorch for named inputs given in any order
    mlflow.set_tracking_uri(resolve_tracking(store_dir=store).uri)
    try:
        pyfunc = mlflow.pyfunc.load_model(result.model_uri)
        sig = {s.name: s.shape for s in pyfunc.metadata.get_input_schema().inputs}
        assert sig == {"tokens": (-1, 6), "mask": (-1, 6)}
        feeds = {
            "mask": np.ones((3, 6), np.float32),
            "tokens": np.arange(18, dtype=np.int64).reshape(3, 6) % 50,
        }
        got = pyfunc.predict(feeds)
    finally:
        mlflow.set_tracking_uri(None)
    model.eval()
    with torch.no_grad():
        ref = model(tokens=torch.from_numpy(feeds["tokens"]), mask=torch.from_numpy(feeds["mask"]))
    np.testing.assert_allclose(got["output_0"], ref[0].numpy(), atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize(
    "returned, shown",
    [
        (lambda m: (m, 0.9), "a tuple (Linear, float)"),
        (lambda m: {"model": m, "accuracy": 0.95}, "a dict with keys ['model', 'accuracy']"),
        (lambda m: "model_saved.pth", "a str ('model_saved.pth')"),
        (lambda m: None, "None"),
    ],
)
def test_wrong_return_value_is_named_and_run_failed(store, returned, shown, monkeypatch):
    monkeypatch.delenv("MODEL_ID", raising=False)
    name = f"bad-return-{len(shown)}"

    @trace_pytorch(name, torch.randn(1, 4), store_dir=store, strategy="torchscript")
    def train():
        return returned(nn.Linear(4, 2))

    with pytest.raises(ConfigError) as info:
        train()
    assert shown in info.value.message and "torch.nn.Module" in info.value.message
    (run,) = runs(store, name)
    assert run.info.status == "FAILED"


def test_bad_samples_are_refused_before_training(store):
    called = []
    for sample, match in [
        ((torch.randn(1, 4), torch.randn(1, 4)), "tuple"),
        (torch.randn(1, 4, dtype=torch.complex64), "dtype"),
        ("image.png", "expected a torch.Tensor"),
        ({"x": torch.randn(1, 4)}, None),
    ]:
        if match is None:
            with pytest.raises(ConfigError, match="not an input"):
                trace_pytorch("m", sample, dynamic_axes={"y": {0: "batch"}}, store_dir=store)
            continue
        with pytest.raises(ConfigError, match=match):

            @trace_pytorch("m", sample, store_dir=store)
            def train():
                called.append(1)
                return nn.Linear(4, 2)

    assert called == []


def test_failed_export_marks_run_failed(store, monkeypatch):
    monkeypatch.delenv("MODEL_ID", raising=False)

    @trace_pytorch("broken-export", torch.randn(1, 3), store_dir=store, strategy="torchscript")
    def train():
        mlflow.log_metric("epoch_loss", 1.0)
        return nn.Linear(4, 2)  # does not accept the [1, 3] sample

    with pytest.raises(ExportError):
        train()
    (run,) = runs(store, "broken-export")
    assert run.info.status == "FAILED" and run.data.metrics["epoch_loss"] == 1.0


def test_autolog_off_logs_no_model(store, monkeypatch):
    monkeypatch.delenv("MODEL_ID", raising=False)
    torch.manual_seed(1)

    @trace_pytorch(
        "no-autolog",
        torch.randn(2, 4),
        dynamic_axes={"input_0": {0: "batch"}, "output_0": {0: "batch"}},
        enable_autolog=False,
        store_dir=store,
        strategy="torchscript",
    )
    def train():
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

    train()
    result = train.last_result
    assert result.model_uri is None and result.pytorch_model_uri is None and result.verdict == "passed"
    (run,) = runs(store, "no-autolog")
    assert run.info.status == "FINISHED"
    assert run.data.params["onnxship.input.input_0"] == "batch=2 x 4 : float32"
    # without a logged model the run's one ONNX copy is in bundle/
    arts = {
        a.path
        for a in mlflow.MlflowClient(resolve_tracking(store_dir=store).uri).list_artifacts(
            result.run_id, "bundle"
        )
    }
    assert "bundle/no-autolog.onnx" in arts and result.onnx_uri.endswith("/bundle/no-autolog.onnx")
    with pytest.raises(ConfigError, match="enable_autolog"):
        trace_pytorch("x", torch.randn(1, 4), enable_autolog=False, register="x", store_dir=store)


@pytest.fixture(scope="module")
def foreign_onnx(tmp_path_factory):
    """An ONNX file not made by onnxship (built with onnx.helper, like another framework's exporter would)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y0"]), helper.make_node("Relu", ["y0"], ["y"])],
        "tf_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tf2onnx")
    model.ir_version = 8
    folder = tmp_path_factory.mktemp("foreign")
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    from onnxship.verify import write_golden

    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    good = write_golden(folder / "golden.npz", {"x": x}, {"y": np.maximum(x @ w, 0)})
    bad = write_golden(folder / "bad.npz", {"x": x}, {"y": np.maximum(x @ w, 0) + 1})
    return path, good, bad


def test_log_onnx_model_any_framework(store, foreign_onnx):
    path, good, _ = foreign_onnx
    result = log_onnx_model(
        "tf-export",
        path,
        {"framework": "tensorflow", "model_type": "classification"},
        golden=good,
        store_dir=store,
        register="tf-model",
        alias="staging",
    )
    (run,) = runs(store, "tf-export")
    assert run.info.status == "FINISHED"
    assert run.data.params["onnxship.meta.framework"] == "tensorflow"
    assert run.data.params["onnxship.input.x"] == "N x 4 : float32"
    assert run.data.metrics["golden.y.max_abs"] < 1e-5 and result.verdict == "passed"
    assert result.model_version == "1"
    mlflow.set_tracking_uri(resolve_tracking(store_dir=store).uri)
    try:
        pyfunc = mlflow.pyfunc.load_model("models:/tf-model@staging")
        assert pyfunc.metadata.get_input_schema().inputs[0].shape == (-1, 4)
        from onnxship.verify import read_golden

        g = read_golden(good)
        np.testing.assert_allclose(pyfunc.predict(dict(g.inputs))["y"], g.outputs["y"], atol=1e-5)
    finally:
        mlflow.set_tracking_uri(None)


def test_log_onnx_model_refusals_log_nothing(store, foreign_onnx, tmp_path):
    path, _, bad = foreign_onnx
    with pytest.raises(VerificationError, match="does not reproduce"):
        log_onnx_model("refused", path, golden=bad, store_dir=store)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(CheckError):
        log_onnx_model("refused", junk, store_dir=store)
    with pytest.raises(CheckError, match="does not exist"):
        log_onnx_model("refused", tmp_path / "missing.onnx", store_dir=store)
    with pytest.raises(ConfigError, match="secret"):
        log_onnx_model("refused", path, {"api_key": "abc"}, store_dir=store)
    assert runs(store, "refused") == []


def test_training_error_propagates_and_marks_run_failed(store, monkeypatch):
    monkeypatch.delenv("MODEL_ID", raising=False)

    @trace_pytorch("train-crash", torch.randn(1, 4), store_dir=store, strategy="torchscript")
    def train():
        mlflow.log_metric("loss", 3.0)
        raise RuntimeError("CUDA out of memory (simulated by the training code)")

    with pytest.raises(RuntimeError, match="simulated"):
        train()
    (run,) = runs(store, "train-crash")
    assert run.info.status == "FAILED" and run.data.metrics["loss"] == 3.0
    assert mlflow.active_run() is None


def test_user_params_named_like_onnxship_ones_do_not_clash(store, monkeypatch):
    monkeypatch.delenv("MODEL_ID", raising=False)

    @trace_pytorch("param-clash", torch.randn(2, 4), store_dir=store, strategy="torchscript")
    def train():
        mlflow.log_params({"opset": "my-own-value", "precision": "bf16-mixed", "name": "resnet-ish"})
        return nn.Linear(4, 2)

    train()
    (run,) = runs(store, "param-clash")
    p = run.data.params
    assert run.info.status == "FINISHED"
    assert (p["opset"], p["precision"], p["name"]) == ("my-own-value", "bf16-mixed", "resnet-ish")
    assert (p["onnxship.opset"], p["onnxship.precision"], p["onnxship.name"]) == ("17", "fp32", "param-clash")
    assert all(k.startswith("onnxship.") for k in p if k not in ("opset", "precision", "name"))

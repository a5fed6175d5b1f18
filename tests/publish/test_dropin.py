"""@trace_pytorch as a drop-in for a keynet-train style decorator: what comes back, what the run holds, and every
check that must happen before the training function runs."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from onnxship._errors import ConfigError, PublishError
from onnxship.publish import (
    build_event,
    last_result,
    log_onnx_model,
    notification_schema,
    resolve_tracking,
    trace_pytorch,
)

mlflow = pytest.importorskip("mlflow")
jsonschema = pytest.importorskip("jsonschema")


def client(store: Path):
    uri = resolve_tracking(store_dir=store).uri
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


class Heads(nn.Module):
    """A detector-like model whose forward() returns a dict of two heads (with dropout: mode matters)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Dropout(0.5))
        self.cls = nn.Linear(12, 3)
        self.box = nn.Linear(12, 4)

    def forward(self, x):
        h = self.body(x)
        return {"scores": self.cls(h).softmax(-1), "boxes": self.box(h)}


class TwoOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(5, 3)
        self.b = nn.Linear(5, 2)

    def forward(self, x):
        return self.a(x), self.b(x).relu()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dict_run(store):
    """One traced training run of a dict-output model with dict_output_keys=True and max_batch_size=16."""
    torch.manual_seed(0)
    model = Heads()
    ids = {id(p): p.data_ptr() for p in model.parameters()}

    @trace_pytorch(
        "heads",
        torch.randn(1, 6),
        store_dir=store,
        strategy="torchscript",
        dict_output_keys=True,
        max_batch_size=16,
    )
    def train():
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        model.train()
        for _ in range(3):
            opt.zero_grad()
            out = model(torch.randn(8, 6))
            (out["boxes"].pow(2).mean() - out["scores"][:, 0].mean()).backward()
            opt.step()
        mlflow.log_params({"precision": "fp32-user", "name": "user-name"})
        model.body[2].eval()  # a submodule the user keeps in eval (like a frozen BatchNorm)
        return model

    returned = train()
    return store, model, ids, returned, train


def test_returns_the_trained_model_in_its_mode_with_its_tensors(dict_run):
    store, model, ids, returned, train = dict_run
    assert returned is model and model.training  # as trained: train mode, nothing replaced
    assert [m.training for m in model.modules()] == [True, True, True, True, False, True, True]
    assert {id(p): p.data_ptr() for p in model.parameters()} == ids
    assert all(p.device.type == "cpu" for p in model.parameters())
    result = train.last_result
    assert result is last_result() and result.verdict == "passed"
    returned(torch.randn(2, 6))["boxes"].sum().backward()  # still a trainable module after the call


def test_dict_outputs_keep_their_keys_everywhere(dict_run):
    store, model, _, _, train = dict_run
    result = train.last_result
    c = client(store)
    run = c.get_run(result.run_id)
    assert run.data.params["onnxship.output_names_from"] == "dict keys"
    assert {"onnxship.output.scores", "onnxship.output.boxes"} <= set(run.data.params)
    # the user's own params named like onnxship's are untouched
    assert run.data.params["precision"] == "fp32-user" and run.data.params["onnxship.precision"] == "fp32"
    # parity record: golden metrics and the report hold every output
    assert result.metrics["golden.scores.max_abs"] < 1e-4 and result.metrics["golden.boxes.max_abs"] < 1e-4
    assert (
        "report.outputs.scores.max_abs" in result.metrics and "report.outputs.boxes.max_abs" in result.metrics
    )
    # signature: every output
    mlflow.set_tracking_uri(resolve_tracking(store_dir=store).uri)
    try:
        onnx_model = mlflow.pyfunc.load_model(result.model_uri)
        outs = {s.name: s.shape for s in onnx_model.metadata.get_output_schema().inputs}
        assert outs == {"scores": (-1, 3), "boxes": (-1, 4)}
        x = np.random.default_rng(1).normal(size=(3, 6)).astype(np.float32)
        got = onnx_model.predict({"input_0": x})
        # the PyTorch artifact is logged beside it and answers like the trained model
        torch_model = mlflow.pytorch.load_model(result.pytorch_model_uri)
    finally:
        mlflow.set_tracking_uri(None)
    model.eval()
    try:
        with torch.no_grad():
            ref = model(torch.from_numpy(x))
            again = torch_model.eval()(torch.from_numpy(x))
    finally:
        model.train()
    np.testing.assert_allclose(got["boxes"], ref["boxes"].numpy(), atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(again["scores"].numpy(), ref["scores"].numpy(), atol=1e-6)
    # Triton config: every output by name, the asked max batch size
    text = Path(c.download_artifacts(result.run_id, result.triton_config, str(store))).read_text()
    assert "max_batch_size: 16" in text
    assert 'name: "scores"' in text and 'name: "boxes"' in text and "dims: [4]" in text


def test_onnx_file_is_stored_once_and_the_message_points_at_it(dict_run):
    store, _, _, _, train = dict_run
    result = train.last_result
    c = client(store)

    def files(run_id, path=None):
        out = []
        for a in c.list_artifacts(run_id, path):
            out += files(run_id, a.path) if a.is_dir else [a.path]
        return out

    run_files = files(result.run_id)
    model_root = Path(result.onnx_uri.removeprefix("file://")).parent
    onnx_files = [f for f in run_files if f.endswith(".onnx")] + [str(p) for p in model_root.rglob("*.onnx")]
    assert len(onnx_files) == 1, onnx_files  # not in bundle/ and again in the logged model
    assert "bundle/release.json" in run_files and "bundle/golden.npz" in run_files
    import hashlib

    assert result.onnx_uri.endswith("/model.onnx")
    sha = hashlib.sha256(Path(result.onnx_uri.removeprefix("file://")).read_bytes()).hexdigest()
    event = build_event(result)
    jsonschema.validate(event, notification_schema())
    assert event["model"]["onnx_sha256"] == sha and event["model"]["uri"] == result.onnx_uri
    assert [o["name"] for o in event["io"]["outputs"]] == ["scores", "boxes"]
    assert event["io"]["inputs"] == [
        {"name": "input_0", "dtype": "float32", "dims": [-1, 6], "dim_names": ["batch", None]}
    ]
    assert event["verification"] == {
        "verdict": "passed",
        "golden_passed": True,
        "metrics": {k: v for k, v in result.metrics.items() if k.startswith("golden.")},
    }


def test_tuple_outputs_all_appear_and_pytorch_logging_can_be_off(store, tmp_path):
    torch.manual_seed(2)

    @trace_pytorch("two-out", torch.randn(2, 5), store_dir=store, strategy="torchscript", log_pytorch=False)
    def train():
        return TwoOut()

    model = train()
    assert isinstance(model, TwoOut)
    result = train.last_result
    assert result.pytorch_model_uri is None and result.model_uri
    assert [o["name"] for o in result.io["outputs"]] == ["output_0", "output_1"]
    assert result.metrics["golden.output_1.max_abs"] < 1e-4
    c = client(store)
    run = c.get_run(result.run_id)
    assert run.data.params["onnxship.output_names_from"] == "position (output_N)"
    text = Path(c.download_artifacts(result.run_id, result.triton_config, str(tmp_path))).read_text()
    assert 'name: "output_0"' in text and 'name: "output_1"' in text


def test_return_result_opt_in(store):
    @trace_pytorch(
        "as-result",
        torch.randn(2, 5),
        store_dir=store,
        strategy="torchscript",
        return_result=True,
        enable_autolog=False,
    )
    def train():
        return TwoOut()

    result = train()
    assert result.run_id == train.last_result.run_id and result.model_uri is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sample": {"image": [[1.0, 2.0]]}}, "sample_input\\['image'\\] is a list"),
        ({"sample": {"x": torch.randn(1, 4), "n": 3}}, "sample_input\\['n'\\] is an int"),
        ({"sample": torch.randn(1, 4, dtype=torch.bfloat16)}, "bfloat16"),
        ({"sample": {"a": torch.randn(1, 4).bfloat16()}}, "bfloat16"),
        ({"output_names": ["logits"]}, "unknown keyword argument"),
        ({"input_names": ["x"]}, "unknown keyword argument"),
        ({"registr": "m"}, "unknown keyword argument"),
        ({"dynamic_axes": {"input_0": {0: "batch size"}}}, "not a dim name"),
        ({"dynamic_axes": {"input_0": {0: 7}}}, "not a dim name"),
        ({"dynamic_axes": {"input_0": {5: "seq"}}}, "rank 2"),
        ({"dynamic_axes": {"input_0": {"0": "batch"}}}, "not an int"),
        ({"dynamic_axes": {"logits": {0: "batch"}}}, "not an input"),
        ({"dynamic_axes": {"input_0": {}}}, "must map axis numbers"),
        (
            {
                "sample": {"a": torch.randn(1, 4), "b": torch.randn(3, 4)},
                "dynamic_axes": {"a": {0: "batch"}, "b": {0: "batch"}},
            },
            "one dynamic name is one size",
        ),
        ({"max_batch_size": -1}, "max_batch_size"),
        ({"max_batch_size": 8, "dynamic_axes": {"input_0": {1: "feat"}}}, "dynamic axis 0"),
        ({"strategy": "onnx"}, "unknown export strategy"),
        ({"register": 5}, "must be a string"),
        ({"log_pytorch": "no"}, "True or False"),
        ({"notify": 42}, "notify must be a URL"),
        ({"notify": "ftp://x"}, "scheme"),
    ],
)
def test_bad_arguments_fail_when_the_decorator_is_applied(kwargs, match, tmp_path):
    kwargs = dict(kwargs)
    sample = kwargs.pop("sample", torch.randn(1, 4))
    called = []
    with pytest.raises(ConfigError, match=match) as info:

        @trace_pytorch("m", sample, store_dir=tmp_path, **kwargs)
        def train():
            called.append(1)
            return nn.Linear(4, 2)

    assert called == [] and info.value.hint
    assert not (tmp_path / "mlflow.db").exists()  # nothing created


def test_dynamic_axes_list_form_is_accepted(tmp_path):
    from onnxship.publish._sample import _validate_sample

    dyn = _validate_sample({"tokens": torch.ones(1, 9, dtype=torch.int64)}, {"tokens": [0, 1]}, 8)
    assert dyn == {"tokens": {0: "batch..8", 1: "tokens_dim1"}}
    assert _validate_sample(torch.randn(1, 3), {"input_0": {-1: "feat"}}, None) == {"input_0": {1: "feat"}}
    # with dict_output_keys=True the outputs' own names may appear (output dims come from the verified model)
    assert _validate_sample(torch.randn(1, 3), {"scores": {0: "batch"}}, None, True) == {}
    with pytest.raises(ConfigError, match="not an input"):
        _validate_sample(torch.randn(1, 3), {"scores": {0: "batch"}}, None)


def test_output_names_gets_a_pointer_to_dict_output_keys(tmp_path):
    with pytest.raises(ConfigError) as info:
        trace_pytorch("m", torch.randn(1, 4), output_names=["logits"], store_dir=tmp_path)
    assert "dict_output_keys" in info.value.hint


def test_environment_is_checked_before_the_training_function_runs(store, tmp_path, monkeypatch, caplog):
    called = []

    def make(**kw):
        @trace_pytorch("env-check", torch.randn(1, 4), strategy="torchscript", **kw)
        def train():
            called.append(1)
            return nn.Linear(4, 2)

        return train

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # a production profile: no tracking URI is an error naming the variables
    monkeypatch.setenv("ONNXSHIP_REQUIRE_REMOTE", "1")
    with pytest.raises(ConfigError, match="ONNXSHIP_REQUIRE_REMOTE") as info:
        make(store_dir=tmp_path)()
    assert "MLFLOW_TRACKING_URI" in info.value.hint and "AWS_ACCESS_KEY_ID" in info.value.hint
    monkeypatch.delenv("ONNXSHIP_REQUIRE_REMOTE")
    # an unreachable tracking server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(PublishError, match="unreachable"):
        make()()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    # an unreachable broker, a webhook header whose variable is unset
    from onnxship.publish import NotifyConfig

    down = NotifyConfig(f"amqp://127.0.0.1:{_closed_port()}/%2F", retries=2, retry_delay=0.1)
    with pytest.raises(PublishError, match="RabbitMQ broker .* is unreachable .*2 attempt"):
        make(store_dir=tmp_path, notify=down)()
    monkeypatch.setenv("ONNXSHIP_NOTIFY_URL", f"amqp://127.0.0.1:{_closed_port()}/%2F")
    with pytest.raises(PublishError, match="unreachable"):
        make(store_dir=tmp_path)()
    monkeypatch.delenv("ONNXSHIP_NOTIFY_URL")
    hook = NotifyConfig("http://127.0.0.1:9/hook", headers={"Authorization": "Bearer ${NO_SUCH_TOKEN_VAR}"})
    with pytest.raises(ConfigError, match="NO_SUCH_TOKEN_VAR"):
        make(store_dir=tmp_path, notify=hook)()
    assert called == []
    assert not (tmp_path / "mlflow.db").exists()
    # without MLFLOW_TRACKING_URI the local store is announced in one line: where, and how to change it
    caplog.set_level(logging.WARNING, logger="onnxship.publish")
    caplog.clear()
    model = make(store_dir=store, enable_autolog=False)()
    assert called == [1] and isinstance(model, nn.Linear)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "onnxship.publish"]
    assert str(store.resolve() / "mlflow.db") in line and "MLFLOW_TRACKING_URI" in line and "\n" not in line


def test_error_after_training_carries_the_model(store):
    trained = nn.Linear(4, 2)

    @trace_pytorch("late-error", torch.randn(1, 3), store_dir=store, strategy="torchscript")
    def train():
        return trained  # does not accept the [1, 3] sample: export fails after training

    with pytest.raises(Exception) as info:
        train()
    assert info.value.model is trained
    (run,) = client(store).search_runs([client(store).get_experiment_by_name("late-error").experiment_id])
    assert run.info.status == "FAILED"


def test_cpu_copy_for_export_leaves_the_model_alone():
    """The copy made for a model on an accelerator (forced here on the CPU): tensor by tensor, ties kept."""
    from onnxship.publish._sample import _cpu_model

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.out = nn.Linear(4, 10, bias=False)
            self.out.weight = self.emb.weight  # tied weights
            self.norm = nn.BatchNorm1d(4)

        def forward(self, x):
            return self.out(self.norm(self.emb(x).mean(1)))

    model = Tied().train()
    model.norm.eval()
    before = {n: (id(t), t.data_ptr()) for n, t in model.state_dict(keep_vars=True).items()}
    clone = _cpu_model(model, force_copy=True)
    assert clone is not model and clone.out.weight is clone.emb.weight
    assert (
        clone.emb.weight is not model.emb.weight
        and clone.emb.weight.data_ptr() != model.emb.weight.data_ptr()
    )
    assert [m.training for m in clone.modules()] == [m.training for m in model.modules()]
    for n, t in clone.state_dict().items():
        torch.testing.assert_close(t, model.state_dict()[n])
    assert {n: (id(t), t.data_ptr()) for n, t in model.state_dict(keep_vars=True).items()} == before
    assert _cpu_model(model) is model  # a CPU model is exported as is (nothing is moved)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_model_stays_on_its_device(tmp_path):
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 2)).cuda().train()
    ptrs = [p.data_ptr() for p in model.parameters()]

    @trace_pytorch("on-gpu", torch.randn(1, 4), store_dir=tmp_path, strategy="torchscript")
    def train():
        return model

    assert train() is model and model.training
    assert all(p.is_cuda for p in model.parameters()) and [p.data_ptr() for p in model.parameters()] == ptrs
    assert train.last_result.verdict == "passed"


def test_log_onnx_model_writes_the_same_checked_triton_config(store, tmp_path):
    """An ONNX file exported by hand (torch.onnx.export) gets the Triton config package triton would write."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(7, 5), nn.Tanh()).eval()
    path = tmp_path / "model.onnx"
    torch.onnx.export(
        model,
        (torch.randn(1, 7),),
        str(path),
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        dynamo=False,
    )
    upload_path = log_onnx_model(
        experiment_name="pytorch_manual",
        onnx_model_path=str(path),
        metadata={"framework": "pytorch", "conversion": "manual"},
        store_dir=store,
        max_batch_size=32,
    )
    assert str(upload_path).endswith("/model.onnx") and upload_path.triton_config
    c = client(store)
    text = Path(
        c.download_artifacts(upload_path.run_id, upload_path.triton_config, str(tmp_path))
    ).read_text()
    from onnxship.package import parse_triton_config

    cfg = parse_triton_config(text)
    assert cfg.max_batch_size == 32 and cfg.platform == "onnxruntime_onnx"
    assert [(t.name, list(t.dims)) for t in cfg.input] == [("input", [7])]
    assert [(t.name, list(t.dims)) for t in cfg.output] == [("output", [5])]
    event = build_event(upload_path)
    jsonschema.validate(event, notification_schema())
    assert event["source"] == "log_onnx_model"
    # a batch size the model was not verified at cannot be claimed: a static-batch export refuses batching
    static = tmp_path / "static.onnx"
    torch.onnx.export(model, (torch.randn(1, 7),), str(static), input_names=["x"], dynamo=False)
    from onnxship._errors import PackagingError

    with pytest.raises(PackagingError, match="cannot be batched"):
        log_onnx_model("static-batch", static, store_dir=store, max_batch_size=4)
    assert c.get_experiment_by_name("static-batch") is None  # refused before any run
    plain = log_onnx_model("static-batch", static, store_dir=store)
    text = Path(c.download_artifacts(plain.run_id, plain.triton_config, str(tmp_path / "p"))).read_text()
    static_cfg = parse_triton_config(text)  # protobuf's text format leaves out a zero max_batch_size
    assert static_cfg.max_batch_size == 0 and [list(t.dims) for t in static_cfg.input] == [[1, 7]]


def test_notification_schema_is_versioned_and_strict():
    schema = notification_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema"] == {"const": "onnxship.notification/1"}
    for field in ("run_id", "train_id", "model", "io", "verification"):
        assert field in schema["required"]
    assert json.dumps(schema)  # plain JSON, shipped in the package


def test_log_onnx_model_of_a_release_file_uses_its_verified_signature(released, store, tmp_path):
    from onnxship.package import TritonConfig, package_triton

    result = log_onnx_model("release-file", released.path / "deeplog.onnx", store_dir=store, log_model=False)
    text = Path(
        client(store).download_artifacts(result.run_id, result.triton_config, str(tmp_path))
    ).read_text()
    packaged = package_triton(released.latest, TritonConfig(repo=tmp_path / "repo"))
    assert text.replace('"deeplog"', "X") == packaged.config_text.replace('"deeplog"', "X")


class Unpicklable(nn.Linear):
    def __init__(self) -> None:
        super().__init__(4, 2)
        import threading

        self.lock = threading.Lock()  # a training helper left on the module


def test_a_module_mlflow_cannot_pickle_is_a_clear_error(store):
    @trace_pytorch("unpicklable", torch.randn(1, 4), store_dir=store, strategy="torchscript")
    def train():
        return Unpicklable()

    with pytest.raises(PublishError, match="cannot be saved by mlflow.pytorch.log_model") as info:
        train()
    assert "log_pytorch=False" in info.value.hint and isinstance(info.value.model, Unpicklable)

    @trace_pytorch(
        "unpicklable", torch.randn(1, 4), store_dir=store, strategy="torchscript", log_pytorch=False
    )
    def train_onnx_only():
        return Unpicklable()

    assert isinstance(train_onnx_only(), Unpicklable) and train_onnx_only.last_result.model_uri

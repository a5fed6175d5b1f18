"""A keynet-train user's training script, run against production-like services: a remote MLflow server (sqlite
backend), S3 artifacts (``rclone serve s3``) and RabbitMQ, all configured through the environment only.

Everything between the two ``# --- user script`` markers is the user's code as they would write it for keynet-train,
unchanged apart from the import line. The test functions below play the role of the deployment: they export the
environment variables and run the script's functions, then look at what landed where.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("mlflow")
pytest.importorskip("boto3")
pytest.importorskip("pika")
jsonschema = pytest.importorskip("jsonschema")

pytestmark = pytest.mark.component

# --- user script ------------------------------------------------------------------------------------------------
import mlflow  # noqa: E402
import torch  # noqa: E402

from onnxship.publish import log_onnx_model, trace_pytorch  # noqa: E402  (was: from keynet_train import ...)


class MNISTModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(28 * 28, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
        )

    def forward(self, x):
        return self.net(x)


def train_one_epoch(model, optimizer, steps=3):
    correct = total = 0
    loss = torch.tensor(0.0)
    for _ in range(steps):
        x, y = torch.randn(16, 28, 28), torch.randint(0, 10, (16,))
        optimizer.zero_grad()
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
        correct += int((logits.argmax(1) == y).sum())
        total += len(y)
    return float(loss), correct / total


@trace_pytorch("mnist-classifier", torch.randn(1, 28, 28))
def train_mnist():
    model = MNISTModel()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)

    mlflow.log_params({"learning_rate": 0.001, "batch_size": 32, "optimizer": "Adam", "epochs": 3})

    for epoch in range(3):
        train_loss, train_acc = train_one_epoch(model, optimizer)
        mlflow.log_metrics({"train_loss": train_loss, "train_accuracy": train_acc}, step=epoch)

    mlflow.log_metric("final_accuracy", train_acc)
    return model


class MultiInputModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.classifier = torch.nn.Linear(8, 5)

    def forward(self, image, mask):
        combined = torch.cat([image, mask], dim=1)
        return self.classifier(self.conv(combined).mean(dim=(2, 3)))


@trace_pytorch(
    "segmentation-model",
    {"image": torch.randn(1, 3, 32, 32), "mask": torch.randn(1, 1, 32, 32)},
)
def train_multi_input():
    model = MultiInputModel()
    mlflow.log_param("precision", "fp16")  # the user's own "precision": not onnxship's
    return model


class SequenceModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(16, 16)

    def forward(self, x):
        return torch.tanh(self.proj(x))


@trace_pytorch(
    "sequence-model",
    torch.randn(1, 12, 16),  # [batch, seq_len, hidden]
    dynamic_axes={
        "input_0": {0: "batch_size", 1: "sequence_length"},
        "output_0": {0: "batch_size", 1: "sequence_length"},
    },
)
def train_sequence_model():
    return SequenceModel()


@trace_pytorch("custom-model", torch.randn(1, 784), enable_autolog=False)
def train_with_manual_logging():
    model = torch.nn.Sequential(torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    mlflow.log_metric("accuracy", 0.95)
    return model


def export_manually(path):
    model = MNISTModel().eval()
    dummy_input = torch.randn(1, 28, 28)
    torch.onnx.export(model, dummy_input, path, input_names=["input"], output_names=["output"], dynamo=False)
    return log_onnx_model(
        experiment_name="pytorch_manual",
        onnx_model_path=path,
        metadata={"framework": "pytorch", "conversion": "manual"},
    )


# --- end of user script -----------------------------------------------------------------------------------------


@pytest.fixture
def production(mlflow_server, s3_env, rabbitmq, monkeypatch):
    """What the deployment exports (no code change): tracking server, S3/MinIO, the broker, a job id."""
    import pika

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("ONNXSHIP_REQUIRE_REMOTE", "1")
    monkeypatch.setenv("ONNXSHIP_NOTIFY_URL", rabbitmq.url)
    monkeypatch.setenv("ONNXSHIP_EXPORT_STRATEGY", "torchscript")  # the suite's fast exporter
    monkeypatch.setenv("MODEL_ID", "job7")
    conn = pika.BlockingConnection(pika.URLParameters(rabbitmq.url))
    ch = conn.channel()
    ch.exchange_declare(exchange="onnxship", exchange_type="topic", durable=True)
    queue = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.queue_bind(queue=queue, exchange="onnxship", routing_key="model.published")

    def messages():
        out = []
        while True:
            method, _, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            event = json.loads(body)
            jsonschema.validate(event, _schema())
            out.append(event)

    try:
        yield mlflow.MlflowClient(tracking_uri=mlflow_server), messages, s3_env
    finally:
        conn.close()


def _schema():
    from onnxship.publish import notification_schema

    return notification_schema()


def _s3_file(s3, uri: str) -> Path:
    assert uri.startswith(f"s3://{s3.bucket}/"), uri
    return s3.root / s3.bucket / uri.removeprefix(f"s3://{s3.bucket}/")


def test_mnist_script(production):
    client, messages, s3 = production
    model = train_mnist()

    # the model is used after the call, as with keynet
    assert isinstance(model, MNISTModel) and model.training
    assert model(torch.randn(4, 28, 28)).shape == (4, 10)
    result = train_mnist.last_result
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and result.experiment_name == "job7_mnist-classifier"
    assert run.data.params["optimizer"] == "Adam" and "final_accuracy" in run.data.metrics
    assert len(client.get_metric_history(result.run_id, "train_loss")) == 3
    (event,) = messages()
    assert event["run_id"] == result.run_id and event["train_id"] == "job7"
    assert event["model"]["name"] == "mnist-classifier" and event["verification"]["verdict"] == "passed"
    assert event["io"]["inputs"][0]["dims"] == [-1, 28, 28]
    assert _s3_file(s3, event["model"]["uri"]).read_bytes()[:2]  # the ONNX file is where the message says
    # the PyTorch artifact is logged beside the ONNX model (autolog on)
    assert event["model"]["pytorch_uri"] and event["model"]["mlflow_uri"]
    triton = client.download_artifacts(result.run_id, event["model"]["triton_config"], os.getcwd())
    try:
        assert "dims: [28, 28]" in Path(triton).read_text()
    finally:
        Path(triton).unlink()


def test_multi_input_and_dynamic_axes_scripts(production):
    client, messages, _ = production
    model = train_multi_input()
    out = model(torch.randn(2, 3, 32, 32), torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 5)
    result = train_multi_input.last_result
    params = client.get_run(result.run_id).data.params
    assert params["precision"] == "fp16" and params["onnxship.precision"] == "fp32"
    assert [t["name"] for t in result.io["inputs"]] == ["image", "mask"]

    seq = train_sequence_model()
    assert seq(torch.randn(3, 7, 16)).shape == (3, 7, 16)
    io = train_sequence_model.last_result.io
    assert io["inputs"][0]["dim_names"] == ["batch_size", "sequence_length", None]
    assert io["outputs"][0]["dims"] == [-1, -1, 16]
    assert len(messages()) == 2


def test_autolog_off_and_manual_onnx_scripts(production, tmp_path, monkeypatch):
    client, messages, s3 = production
    model = train_with_manual_logging()
    assert model(torch.randn(1, 784)).shape == (1, 10)
    result = train_with_manual_logging.last_result
    assert result.model_uri is None and result.pytorch_model_uri is None
    assert client.get_run(result.run_id).data.metrics["accuracy"] == 0.95

    monkeypatch.chdir(tmp_path)
    upload_path = export_manually("model.onnx")
    assert str(upload_path).startswith("s3://") and _s3_file(s3, str(upload_path)).is_file()
    events = messages()
    assert [e["source"] for e in events] == ["trace_pytorch", "log_onnx_model"]
    assert events[1]["model"]["uri"] == str(upload_path)

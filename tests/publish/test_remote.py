"""The production path: a remote MLflow tracking server (sqlite backend) with artifacts written by the
client to S3 (``rclone serve s3``) through MLFLOW_S3_ENDPOINT_URL + AWS keys. Both servers run on 127.0.0.1."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from onnxship.publish import publish, trace_pytorch

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("boto3")

pytestmark = pytest.mark.component


def test_publish_to_server_with_s3_artifacts(released, mlflow_server, s3_env, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    result = publish(released.latest, register="deeplog-remote", alias="champion")
    assert result.tracking_uri == mlflow_server
    assert result.artifact_uri.startswith("s3://onnxship/mlartifacts/")
    # the bundle files really are in the S3 server's bucket
    bucket = s3_env.root / s3_env.bucket
    run_dir = bucket / result.artifact_uri.removeprefix("s3://onnxship/")
    stored = {p.name for p in run_dir.rglob("*") if p.is_file()}
    assert {"release.json", "golden.npz", "report.json", "deeplog.onnx.meta.json"} <= stored
    # the ONNX file is stored once, in the logged model (not in bundle/); the notification's model URI names it
    assert not [p for p in run_dir.rglob("*.onnx")]
    assert result.onnx_uri.startswith("s3://onnxship/") and result.onnx_uri.endswith("/model.onnx")
    key = result.onnx_uri.removeprefix("s3://onnxship/")
    assert (bucket / key).read_bytes() == (released.path / "deeplog.onnx").read_bytes()
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["onnxship.version_tag"] == released.version
    # secrets never reach params or tags
    logged = json.dumps({**run.data.params, **run.data.tags})
    assert s3_env.secret not in logged and s3_env.key not in logged
    # the registered model, loaded back from S3 through the server, reproduces the golden outputs
    mlflow.set_tracking_uri(mlflow_server)
    try:
        model = mlflow.pyfunc.load_model("models:/deeplog-remote@champion")
    finally:
        mlflow.set_tracking_uri(None)
    from onnxship.verify import read_golden

    golden = read_golden(released.path / "golden.npz")
    got = model.predict(dict(golden.inputs))
    np.testing.assert_allclose(got["output_0"], golden.outputs["output_0"], atol=1e-4, rtol=1e-3)


def test_cli_publish_remote_prints_no_secret(released, mlflow_server, s3_env):
    from onnxship.cli import app

    res = CliRunner().invoke(
        app, ["publish", str(released.latest), "--tracking-uri", mlflow_server, "--experiment", "cli-remote"]
    )
    assert res.exit_code == 0, res.output
    assert "s3://onnxship/" in res.output and s3_env.secret not in res.output
    res = CliRunner().invoke(
        app,
        [
            "publish",
            str(released.latest),
            "--tracking-uri",
            mlflow_server,
            "--experiment",
            "cli-remote",
            "--no-model",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)  # nothing but the JSON on stdout
    assert data["artifact_uri"].startswith("s3://onnxship/") and s3_env.secret not in res.output


def test_trace_pytorch_against_server(mlflow_server, s3_env, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MODEL_ID", "job42")
    torch.manual_seed(0)

    @trace_pytorch("mnist-v1", torch.randn(1, 16), strategy="torchscript")
    def train_mnist():
        model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 10))
        for epoch in range(3):
            mlflow.log_metric("train_loss", 1.0 / (epoch + 1), step=epoch)
        return model

    model = train_mnist()
    assert model(torch.randn(3, 16)).shape == (3, 10)  # the trained model comes back
    result = train_mnist.last_result
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(result.run_id)
    assert result.experiment_name == "job42_mnist-v1" and run.info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(result.run_id, "train_loss")] == [1.0, 0.5, 1.0 / 3]
    assert run.data.params["onnxship.input.input_0"] == "batch=2 x 16 : float32"  # export dummy: 1 -> 2
    assert result.artifact_uri.startswith("s3://")
    assert result.pytorch_model_uri and result.onnx_uri.startswith("s3://")


def test_missing_s3_credentials_fail_before_training(mlflow_server, s3_server, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_server.endpoint)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    called = []

    @trace_pytorch("no-creds", torch.randn(1, 4), strategy="torchscript")
    def train():
        called.append(1)
        return torch.nn.Linear(4, 2)

    from onnxship._errors import PublishError

    with pytest.raises(PublishError) as info:
        train()
    assert called == []
    assert "s3://onnxship/" in info.value.message and "AWS_ACCESS_KEY_ID" in info.value.message
    assert "AWS_SECRET_ACCESS_KEY" in info.value.hint
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("no-creds")
    assert client.search_runs([exp.experiment_id]) == []  # no run was opened


def test_wrong_s3_credentials_fail_the_run_without_echoing_them(released, mlflow_server, s3_env):
    # A fresh process: MLflow caches its S3 client (and so the credentials) for the life of a process.
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": "wrong-secret-Zq81"}
    env.pop("MLFLOW_TRACKING_URI", None)
    exe = Path(sys.executable).with_name("onnxship")
    out = subprocess.run(
        [
            str(exe),
            "publish",
            str(released.latest),
            "--tracking-uri",
            mlflow_server,
            "--experiment",
            "bad-creds",
            "--no-model",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "artifact upload to S3" in out.stderr and "Traceback" not in out.stderr
    assert "wrong-secret-Zq81" not in out.stdout + out.stderr and s3_env.secret not in out.stdout + out.stderr
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("bad-creds")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FAILED"

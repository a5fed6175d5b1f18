"""publish() into the embedded sqlite store: what a run holds, the model loaded back, failures, the CLI."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from onnxship._errors import ConfigError, PackagingError, PublishError
from onnxship.publish import PublishConfig, publish, resolve_tracking
from onnxship.publish._config import experiment_name, mask_url
from onnxship.publish._mlflow import flatten_metrics

pytest.importorskip("mlflow")


def client(uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture(scope="module")
def published(released, store, tmp_path_factory):
    """The release published once, with registration and an alias, from a folder that is not the store."""
    cwd = os.getcwd()
    work = tmp_path_factory.mktemp("cwd")
    os.chdir(work)
    try:
        result = publish(
            released.latest, store_dir=store, register="deeplog", alias="champion", tags={"team": "ml"}
        )
    finally:
        os.chdir(cwd)
    return result, work


def test_run_holds_params_metrics_tags_and_bundle(published, released, store):
    result, work = published
    uri = resolve_tracking(store_dir=store).uri
    run = client(uri).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert result.experiment_name == "deeplog"
    p = run.data.params
    assert all(k.startswith("onnxship.") for k in p)  # never in the way of the user's own params
    assert p["onnxship.exporter"] == "torchscript" and p["onnxship.opset"] == "17"
    assert p["onnxship.precision"] == "fp32"
    assert p["onnxship.input.input_sequence"] == "batch=2..16 x seq=10..32 : int64"
    assert p["onnxship.output.output_0"] == "batch x 30 : float32"
    assert p["onnxship.meta.vocab_size"] == "30"
    m = run.data.metrics
    assert m["golden.passed"] == 1.0 and m["golden.output_0.max_abs"] < 1e-4
    assert m["report.passed"] == 1.0
    report = json.loads((released.path / "report.json").read_text())
    assert m["report.outputs.output_0.max_abs"] == pytest.approx(report["outputs"][0]["max_abs"])
    # every checked shape of the report is a metric
    checked = [s for s in report["shapes"] if s.get("outputs")]
    assert len(checked) >= 3
    assert len([k for k in m if k.startswith("report.shapes.") and k.endswith("output_0.max_abs")]) == len(
        checked
    )
    t = run.data.tags
    assert t["onnxship.version_tag"] == released.version and t["onnxship.verdict"] == "passed"
    assert t["onnxship.git_sha"] == released.release.meta["git_sha"] and t["team"] == "ml"
    arts = {a.path for a in client(uri).list_artifacts(result.run_id, "bundle")}
    for f in ("release.json", "golden.npz", "report.json", "deeplog.onnx.meta.json"):
        assert f"bundle/{f}" in arts
    # the ONNX file is stored once: in the logged model, byte for byte the released file
    assert "bundle/deeplog.onnx" not in arts
    assert result.onnx_uri.endswith("/model.onnx") and t["onnxship.onnx_uri"] == result.onnx_uri
    stored = Path(result.onnx_uri.removeprefix("file://")).read_bytes()
    assert stored == (released.path / "deeplog.onnx").read_bytes()
    assert t["onnxship.triton"] == "triton/deeplog/config.pbtxt"
    triton = client(uri).download_artifacts(result.run_id, "triton/deeplog/config.pbtxt", str(work))
    text = Path(triton).read_text()
    assert 'name: "input_sequence"' in text and "TYPE_INT64" in text
    # the same config `onnxship package triton` writes for this release
    from onnxship.package import TritonConfig, package_triton

    packaged = package_triton(released.latest, TritonConfig(repo=work / "repo"))
    assert packaged.config_text == text
    # the artifacts live under the store, never in a ./mlruns of the current folder
    assert result.artifact_uri.startswith((store / "artifacts").as_uri())
    assert not (work / "mlruns").exists() and not (work / "mlflow.db").exists()


def test_registered_model_reproduces_golden(published, released, store):
    import mlflow

    result, _ = published
    assert result.model_version == "1" and result.alias == "champion"
    uri = resolve_tracking(store_dir=store).uri
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model("models:/deeplog@champion")
        schema = model.metadata.get_input_schema().inputs[0]
        assert schema.name == "input_sequence" and schema.shape == (-1, -1)  # dynamic dims stay dynamic
        out_schema = model.metadata.get_output_schema().inputs[0]
        assert out_schema.shape == (-1, 30)
        from onnxship.verify import read_golden

        golden = read_golden(released.path / "golden.npz")
        got = model.predict(dict(golden.inputs))
        np.testing.assert_allclose(got["output_0"], golden.outputs["output_0"], atol=1e-4, rtol=1e-3)
    finally:
        mlflow.set_tracking_uri(None)


def test_tracking_uri_is_restored_after_publish(published):
    import mlflow

    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert not mlflow.get_tracking_uri().endswith("store/mlflow.db")


def test_default_store_is_under_the_project_not_cwd_mlruns(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("ONNXSHIP_MLFLOW_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    t = resolve_tracking()
    assert t.source == "embedded"
    assert t.uri == f"sqlite:///{tmp_path.resolve()}/.onnxship/mlflow/mlflow.db"
    assert t.artifact_root == (tmp_path.resolve() / ".onnxship/mlflow/artifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000/")
    assert resolve_tracking().uri == "http://127.0.0.1:5000" and resolve_tracking().remote
    assert resolve_tracking("sqlite:///x/m.db").artifact_root == (tmp_path.resolve() / "x/artifacts").as_uri()


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "sqlite:///:memory:", "./mlruns"])
def test_store_uris_that_lose_or_hide_runs_are_refused(uri, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ConfigError):
        resolve_tracking(uri)


def test_experiment_name_follows_model_id(monkeypatch):
    monkeypatch.delenv("MODEL_ID", raising=False)
    assert experiment_name("mnist") == "mnist"
    monkeypatch.setenv("MODEL_ID", "42")
    assert experiment_name("mnist") == "42_mnist"
    assert experiment_name("mnist", "explicit") == "explicit"


def test_unreachable_server_fails_fast_naming_the_uri(released, tmp_path):
    port = _closed_port()
    t0 = time.monotonic()
    with pytest.raises(PublishError) as info:
        publish(released.latest, tracking_uri=f"http://user:pw@127.0.0.1:{port}")
    assert time.monotonic() - t0 < 5
    assert f"http://user:***@127.0.0.1:{port}" in info.value.message and "pw@" not in str(info.value)


def test_server_that_never_answers_does_not_hang(released):
    with socket.socket() as s:  # accepts connections (kernel backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        port = s.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(PublishError, match="unreachable"):
            publish(released.latest, tracking_uri=f"http://127.0.0.1:{port}", connect_timeout=1.0)
        assert time.monotonic() - t0 < 4


def test_changed_bundle_is_refused_and_nothing_logged(released, tmp_path):
    import shutil

    copy = tmp_path / "releases" / "deeplog" / released.version
    shutil.copytree(released.path, copy)
    golden = copy / "golden.npz"
    os.chmod(golden, 0o644)
    golden.write_bytes(golden.read_bytes()[:-10])
    with pytest.raises(PackagingError, match="golden.npz"):
        publish(copy, store_dir=tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_config_checks():
    with pytest.raises(ConfigError, match="alias"):
        PublishConfig(alias="prod")
    with pytest.raises(ConfigError, match="latest"):
        PublishConfig(register="m", alias="latest")
    with pytest.raises(ConfigError, match="secret"):
        PublishConfig(tags={"aws_secret_access_key": "x"})
    assert mask_url("amqp://u:p4ss@h:5672/%2F") == "amqp://u:***@h:5672/%2F"


def test_flatten_metrics_names_list_items_and_skips_shapes():
    report = {
        "passed": True,
        "verification": {
            "golden": [
                {
                    "name": "out",
                    "max_abs": 1e-6,
                    "ref_shape": [2, 3],
                    "worst_index": [0, 1],
                    "cosine": float("nan"),
                }
            ],
            "sweep": {"checks": [{"dims": {"batch": 1}, "outputs": [{"name": "out", "mse": 0.5}]}]},
        },
        "variants": [{"name": "int8", "top1_mismatch": 0.01}],
        "seed": 3,
    }
    got = flatten_metrics(report, "report")
    assert got == {
        "report.passed": 1.0,
        "report.verification.golden.out.max_abs": 1e-6,
        "report.verification.sweep.checks.batch:1.outputs.out.mse": 0.5,
        "report.variants.int8.top1_mismatch": 0.01,
    }


def test_cli_publish_json_and_errors(released, store, tmp_path):
    from onnxship.cli import app

    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "publish",
            str(released.latest),
            "--store-dir",
            str(store),
            "--no-model",
            "--experiment",
            "cli-exp",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["experiment_name"] == "cli-exp" and data["model_uri"] is None and data["verdict"] == "passed"
    assert client(resolve_tracking(store_dir=store).uri).get_run(data["run_id"]).info.status == "FINISHED"
    res = runner.invoke(
        app,
        ["publish", str(released.latest), "--store-dir", str(store), "--no-model", "--max-batch-size", "8"],
    )
    assert res.exit_code == 0, res.output
    runs = client(resolve_tracking(store_dir=store).uri).search_runs(
        [client(resolve_tracking(store_dir=store).uri).get_experiment_by_name("deeplog").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    triton = client(resolve_tracking(store_dir=store).uri).download_artifacts(
        runs[0].info.run_id, "triton/deeplog/config.pbtxt", str(tmp_path)
    )
    assert "max_batch_size: 8" in Path(triton).read_text()
    # above the declared batch maximum (16): refused before any run is opened
    before = len(client(resolve_tracking(store_dir=store).uri).search_runs([runs[0].info.experiment_id]))
    res = runner.invoke(
        app,
        ["publish", str(released.latest), "--store-dir", str(store), "--no-model", "--max-batch-size", "64"],
    )
    assert res.exit_code == 1 and "max-batch-size 64" in res.output and "Traceback" not in res.output
    after = len(client(resolve_tracking(store_dir=store).uri).search_runs([runs[0].info.experiment_id]))
    assert after == before
    res = runner.invoke(app, ["publish", str(released.latest), "--alias", "prod"])
    assert res.exit_code == 2 and "--register" in res.output
    res = runner.invoke(
        app, ["publish", str(released.latest), "--tracking-uri", f"http://127.0.0.1:{_closed_port()}"]
    )
    assert res.exit_code == 1 and "unreachable" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["publish", str(tmp_path / "nope")])
    assert res.exit_code == 1 and "does not exist" in res.output


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_active_user_run_is_an_error_not_a_silent_nesting(released, store, tmp_path):
    import mlflow

    mlflow.set_tracking_uri(resolve_tracking(store_dir=store).uri)  # the user's own run, in an existing store
    try:
        with mlflow.start_run() as user_run:
            with pytest.raises(PublishError, match="already active"):
                publish(released.latest, store_dir=tmp_path / "store")
            assert not (tmp_path / "store").exists()  # refused before touching the store
            assert mlflow.active_run().info.run_id == user_run.info.run_id
    finally:
        mlflow.set_tracking_uri(None)

"""``onnxship package kserve``: InferenceService manifests validated against KServe's own CRD schema.

The schema is KServe's ``serving.kserve.io_inferenceservices.yaml`` (v1beta1 openAPIV3Schema, descriptions removed),
vendored as data because the ``kserve`` SDK cannot be installed beside this environment's pins. Kubernetes prunes
fields a structural schema does not know instead of refusing them, so the validator also refuses unknown fields
(a typo would otherwise vanish silently on ``kubectl apply``), and checks the rules KServe's webhook adds.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from onnxship.package import KServeConfig, package_kserve, parse_triton_config

jsonschema = pytest.importorskip("jsonschema")

SCHEMA = Path(__file__).parent / "data" / "kserve_inferenceservice_v1beta1.schema.json.gz"
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _schema() -> dict:
    with gzip.open(SCHEMA, "rt", encoding="utf-8") as fh:
        return json.load(fh)["openAPIV3Schema"]


def _unknown_fields(obj, schema: dict, path: str = ""):
    """Fields Kubernetes would prune: keys that a schema with ``properties`` does not declare."""
    if isinstance(obj, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return
        for key, value in obj.items():
            if props is not None and key in props:
                yield from _unknown_fields(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                yield from _unknown_fields(value, extra, f"{path}.{key}")
            elif props is not None and extra is not True:
                yield f"{path}.{key}"
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            yield from _unknown_fields(item, schema["items"], f"{path}[{i}]")


def validate_isvc(manifest: dict) -> None:
    """Raise AssertionError / jsonschema.ValidationError when KServe would refuse or silently change it."""
    schema = _schema()
    jsonschema.Draft7Validator(schema).validate(manifest)
    unknown = list(_unknown_fields(manifest, schema))
    assert not unknown, f"fields unknown to the InferenceService schema: {unknown}"
    # what KServe's admission webhook and the API server add on top of the schema
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1" and manifest["kind"] == "InferenceService"
    assert _DNS1035.match(manifest["metadata"]["name"]) and len(manifest["metadata"]["name"]) <= 63
    pred = manifest["spec"]["predictor"]
    impls = [k for k in ("model", "containers", "onnx", "triton", "pytorch") if k in pred]
    assert len(impls) == 1, f"a predictor needs exactly one implementation, got {impls}"
    assert pred.get("minReplicas", 1) <= pred.get("maxReplicas", 1)
    containers = pred.get("containers") or [pred.get("model")]
    for c in containers:
        for res in ("requests", "limits"):
            for k, v in (c.get("resources") or {}).get(res, {}).items():
                assert isinstance(v, str), f"{res}.{k} should be a quantity string"


def test_the_validator_refuses_what_kserve_would():
    good = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "m"},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "onnx"}, "storageUri": "s3://b/p"}}},
    }
    validate_isvc(good)
    typo = json.loads(json.dumps(good))
    typo["spec"]["predictor"]["minReplica"] = 1
    with pytest.raises(AssertionError, match="minReplica"):
        validate_isvc(typo)
    wrong_type = json.loads(json.dumps(good))
    wrong_type["spec"]["predictor"]["maxReplicas"] = "three"
    with pytest.raises(jsonschema.ValidationError):
        validate_isvc(wrong_type)
    bad_quantity = json.loads(json.dumps(good))
    bad_quantity["spec"]["predictor"]["model"]["resources"] = {"limits": {"cpu": "two cores"}}
    with pytest.raises(jsonschema.ValidationError):
        validate_isvc(bad_quantity)
    no_format = json.loads(json.dumps(good))
    del no_format["spec"]["predictor"]["model"]["modelFormat"]["name"]
    with pytest.raises(jsonschema.ValidationError):
        validate_isvc(no_format)


def test_onnxship_runtime_manifest(shipped, tmp_path):
    _, _, r2 = shipped
    result = package_kserve(
        r2.path,
        KServeConfig(
            storage_uri="s3://models/deeplog/v2",
            out=tmp_path / "k",
            namespace="ml",
            min_replicas=2,
            max_replicas=5,
            cpu="500m",
            memory="2Gi",
            token_secret="deeplog-token",
        ),
    )
    manifest = yaml.safe_load(result.manifest_path.read_text())
    assert manifest == result.manifest
    validate_isvc(manifest)
    pred = manifest["spec"]["predictor"]
    assert (pred["minReplicas"], pred["maxReplicas"]) == (2, 5)
    (c,) = pred["containers"]
    assert c["resources"] == {
        "requests": {"cpu": "500m", "memory": "2Gi"},
        "limits": {"cpu": "1000m", "memory": "4Gi"},
    }
    env = {e["name"]: e for e in c["env"]}
    assert env["STORAGE_URI"]["value"] == "s3://models/deeplog/v2"
    assert env["ONNXSHIP_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "deeplog-token", "key": "token"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert c["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["readOnlyRootFilesystem"]
    # the release's largest batch, as for every other consumer (conftest declares batch=2..16)
    assert result.max_batch == 16 and c["args"][c["args"].index("--max-batch") + 1] == "16"
    assert manifest["metadata"]["annotations"]["onnxship.io/release"] == r2.version
    assert manifest["metadata"]["namespace"] == "ml"
    assert result.model_repository is None


def test_the_manifest_command_serves_and_its_probe_means_golden_passed(shipped, tmp_path):
    """Run the container's command as written (local release for /mnt/models, a free port for 8080)."""
    _, _, r2 = shipped
    result = package_kserve(r2.path, KServeConfig(storage_uri="s3://b/p", out=tmp_path / "k"))
    (c,) = result.manifest["spec"]["predictor"]["containers"]
    args = [{"/mnt/models": str(r2.path), "8080": "0", "0.0.0.0": "127.0.0.1"}.get(a, a) for a in c["args"]]
    exe = Path(sys.executable).with_name("onnxship")
    out = tmp_path / "serve.out"
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_PATH", "ONNXSHIP_TOKEN")}
    with open(out, "wb") as fh:
        proc = subprocess.Popen([str(exe), *args], cwd=tmp_path, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        url = None
        while time.monotonic() < deadline and url is None and proc.poll() is None:
            m = re.search(r"http://127\.0\.0\.1:\d+", out.read_text(errors="replace"))
            url = m.group(0) if m else None
            time.sleep(0.05)
        assert url, out.read_text(errors="replace")
        probe = c["readinessProbe"]["httpGet"]["path"]
        while True:
            try:
                with urllib.request.urlopen(url + probe, timeout=5) as r:
                    assert r.status == 200
                    break
            except urllib.error.URLError:
                assert time.monotonic() < deadline, out.read_text(errors="replace")
                time.sleep(0.05)
        with urllib.request.urlopen(url + "/v2/models/deeplog", timeout=5) as r:
            meta = json.loads(r.read())
        assert meta["parameters"]["golden"] == "passed" and meta["parameters"]["max_batch"] == 16
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)


def test_triton_runtime_writes_the_model_repository(shipped, tmp_path):
    _, _, r2 = shipped
    result = package_kserve(
        r2.path,
        KServeConfig(storage_uri="gs://bucket/repo", runtime="triton", out=tmp_path / "k", max_batch_size=8),
    )
    manifest = yaml.safe_load(result.manifest_path.read_text())
    validate_isvc(manifest)
    model = manifest["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "triton"} and model["storageUri"] == "gs://bucket/repo"
    assert model["protocolVersion"] == "v2"
    assert model["readinessProbe"]["httpGet"]["path"] == "/v2/models/deeplog/ready"
    repo = tmp_path / "k" / "model_repository"
    assert result.model_repository == repo
    cfg = parse_triton_config((repo / "deeplog" / "config.pbtxt").read_text())
    assert cfg.name == "deeplog" and cfg.max_batch_size == 8 and cfg.dynamic_batching is not None
    assert (repo / "deeplog" / "1" / "model.onnx").read_bytes() == r2.release.model_path.read_bytes()
    # readiness waits for Triton's warmup: one golden sample, stored raw under warmup/
    (w,) = cfg.model_warmup
    assert w.batch_size == 1 and list(w.inputs) == ["input_sequence"]
    from onnxship.verify import read_golden

    sample = read_golden(r2.path / "golden.npz").inputs["input_sequence"][0]
    assert list(w.inputs["input_sequence"].dims) == list(sample.shape)
    raw = (repo / "deeplog" / "warmup" / w.inputs["input_sequence"].input_data_file).read_bytes()
    assert raw == sample.tobytes()


def test_rewriting_replaces_the_folder(shipped, tmp_path):
    _, _, r2 = shipped
    out = tmp_path / "k"
    package_kserve(r2.path, KServeConfig(storage_uri="s3://b/p", runtime="triton", out=out))
    package_kserve(r2.path, KServeConfig(storage_uri="s3://b/p", out=out))
    assert sorted(p.name for p in out.iterdir()) == ["inferenceservice.yaml"]  # no stale model_repository


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--storage-uri", "bucket/path"], "not a storage URI"),
        (["--storage-uri", "s3://b/p", "--runtime", "seldon"], "unknown runtime"),
        (["--storage-uri", "s3://b/p", "--min-replicas", "4", "--max-replicas", "2"], "not a range"),
        (["--storage-uri", "s3://b/p", "--memory", "lots"], "not a Kubernetes quantity"),
        (["--storage-uri", "s3://b/p", "--max-batch-size", "64"], "above the declared batch maximum 16"),
        (["--storage-uri", "s3://b/p", "--name", "Deep_Log"], "not a valid InferenceService name"),
        (["--storage-uri", "s3://b/p", "--max-batch-size", "0"], "--max-batch-size 0 must be >= 1"),
    ],
)
def test_cli_errors_are_one_line_and_write_nothing(shipped, tmp_path, extra, needle):
    from onnxship.cli import app

    _, _, r2 = shipped
    result = CliRunner().invoke(
        app, ["package", "kserve", str(r2.path), "--out", str(tmp_path / "k"), *extra]
    )
    assert result.exit_code == 1, result.output
    assert needle in result.output and "Traceback" not in result.output
    assert not (tmp_path / "k").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".k.")]


def test_cli_json(shipped, tmp_path):
    from onnxship.cli import app

    _, _, r2 = shipped
    result = CliRunner().invoke(
        app,
        [
            "package",
            "kserve",
            str(r2.path),
            "--storage-uri",
            "s3://b/p",
            "--out",
            str(tmp_path / "k"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["runtime"] == "onnxship" and out["max_batch"] == 16
    validate_isvc(yaml.safe_load(Path(out["manifest"]).read_text()))

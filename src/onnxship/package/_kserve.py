"""KServe ``InferenceService`` manifests for a release (and, for the Triton runtime, the model repository it loads).

Two runtimes:

* ``onnxship`` (default): a custom predictor container running ``onnxship serve`` (the image built from
  ``deploy/Dockerfile``). KServe's storage initializer copies the release bundle from ``--storage-uri`` into
  ``/mnt/models`` (the ``STORAGE_URI`` variable of the container), and ``onnxship serve --model-path /mnt/models``
  serves it. Its readiness probe is ``/v2/health/ready``, which turns 200 only after the release's golden check
  passed (the ONNX model re-run on ``golden.npz`` agrees with the PyTorch outputs recorded at release time).
* ``triton``: KServe's Triton runtime (``modelFormat: triton``) over a model repository written next to the
  manifest; upload ``model_repository/`` to ``--storage-uri``. Its readiness probe asks for the model
  (``/v2/models/<name>/ready``), which Triton reports only after running the repository's ``model_warmup``: one
  ``golden.npz`` sample. Triton does not compare the outputs with the recorded ones (only onnxship serve does);
  for that runtime the comparison is the one ``ship`` ran before the release existed. Choose the onnxship runtime when "ready" must mean "reproduces the golden outputs".

The largest batch comes from the release's serving limits (see ``_limits.py``), like every other consumer.

The manifest is plain data (dicts); ``write_kserve`` writes it as YAML (JSON, which is YAML too, without pyyaml).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxship._errors import ConfigError, PackagingError
from onnxship._util import replace_dir
from onnxship._version import __version__
from onnxship.package._limits import serving_limits
from onnxship.package._release import Release, read_release

__all__ = ["RUNTIMES", "KServeConfig", "KServeResult", "kserve_manifest", "package_kserve"]

RUNTIMES = ("onnxship", "triton")
PORT = 8080  # the port KServe routes to in a predictor container
MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts what --storage-uri holds
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]+))?$"
)
_STORAGE = ("s3://", "gs://", "pvc://", "https://", "http://", "hdfs://", "webhdfs://", "oci://", "hf://")


@dataclass
class KServeConfig:
    """How to build the InferenceService."""

    storage_uri: str  # where the bundle (onnxship) or the model repository (triton) is uploaded
    runtime: str = "onnxship"
    out: Path | None = None  # default: kserve/<name>
    name: str | None = None  # InferenceService name (default: the release name, made DNS-1035)
    namespace: str | None = None
    image: str = f"onnxship-serve:{__version__}"  # the onnxship runtime's image (deploy/Dockerfile)
    min_replicas: int = 1
    max_replicas: int = 3
    cpu: str = "1"  # requests; limits are 2x
    memory: str = "1Gi"
    gpus: int = 0  # nvidia.com/gpu limit (triton runtime: KIND_GPU instances)
    max_batch_size: int | None = None  # default: the release's largest batch
    token_secret: str | None = None  # a Secret whose key "token" becomes ONNXSHIP_TOKEN (onnxship runtime)
    service_account: str | None = None  # holds the storage credentials (KServe's convention)

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"unknown runtime {self.runtime!r}", hint=f"use one of: {', '.join(RUNTIMES)}")
        if not self.storage_uri or not self.storage_uri.startswith(_STORAGE):
            raise ConfigError(
                f"--storage-uri {self.storage_uri!r} is not a storage URI KServe can download",
                hint="use e.g. s3://bucket/path, gs://bucket/path or pvc://claim/path",
            )
        if self.min_replicas < 0 or self.max_replicas < 1 or self.min_replicas > self.max_replicas:
            raise ConfigError(
                f"replicas {self.min_replicas}..{self.max_replicas} are not a range",
                hint="--min-replicas >= 0 (0 scales to zero), --max-replicas >= max(1, --min-replicas)",
            )
        for flag, value in (("--cpu", self.cpu), ("--memory", self.memory)):
            if not _QUANTITY.match(str(value)):
                raise ConfigError(
                    f"{flag} {value!r} is not a Kubernetes quantity", hint="e.g. --cpu 500m, --memory 2Gi"
                )
        if self.gpus < 0:
            raise ConfigError(f"--gpus {self.gpus} must be >= 0")
        if self.name is not None and not _DNS1035.match(self.name):
            raise ConfigError(
                f"--name {self.name!r} is not a valid InferenceService name",
                hint="lower-case letters, digits and '-', starting with a letter (DNS-1035)",
            )


@dataclass
class KServeResult:
    """What was written."""

    name: str
    manifest_path: Path
    manifest: dict[str, Any]
    runtime: str
    max_batch: int | None
    model_repository: Path | None = None  # triton runtime
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "manifest": str(self.manifest_path),
            "runtime": self.runtime,
            "max_batch": self.max_batch,
            "model_repository": str(self.model_repository) if self.model_repository else None,
            "notes": self.notes,
        }


def _dns_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = "m-" + name
    return name[:63].rstrip("-")


def _resources(cfg: KServeConfig) -> dict[str, Any]:
    def double(q: str) -> str:
        m = re.match(r"^([0-9]+(?:\.[0-9]*)?)(.*)$", q)
        if not m:
            return q
        v = float(m.group(1)) * 2
        return (str(int(v)) if v.is_integer() else f"{v:g}") + m.group(2)

    res: dict[str, Any] = {
        "requests": {"cpu": str(cfg.cpu), "memory": str(cfg.memory)},
        "limits": {"cpu": double(str(cfg.cpu)), "memory": double(str(cfg.memory))},
    }
    if cfg.gpus:
        res["limits"]["nvidia.com/gpu"] = str(cfg.gpus)
    return res


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 5,
    }


def kserve_manifest(release: Release, cfg: KServeConfig, max_batch: int | None) -> dict[str, Any]:
    """The InferenceService for ``release`` (plain data, ready for YAML)."""
    name = cfg.name or _dns_name(release.name)
    meta: dict[str, Any] = {
        "name": name,
        "labels": {
            "app.kubernetes.io/name": name,
            "app.kubernetes.io/managed-by": "onnxship",
            "onnxship.io/runtime": cfg.runtime,
        },
        "annotations": {
            "onnxship.io/release": release.version,
            "onnxship.io/onnx-sha256": str(release.meta.get("onnx_sha256", "")),
            "onnxship.io/max-batch": str(max_batch) if max_batch is not None else "unbounded",
        },
    }
    if cfg.namespace:
        meta["namespace"] = cfg.namespace
    predictor: dict[str, Any] = {"minReplicas": cfg.min_replicas, "maxReplicas": cfg.max_replicas}
    if cfg.service_account:
        predictor["serviceAccountName"] = cfg.service_account
    readiness_failures = 3
    if cfg.runtime == "onnxship":
        args = ["serve", "--host", "0.0.0.0", "--port", str(PORT), "--model-path", MODEL_DIR]
        if max_batch:
            args += ["--max-batch", str(max_batch)]
        env: list[dict[str, Any]] = [{"name": "STORAGE_URI", "value": cfg.storage_uri}]
        if cfg.token_secret:
            env.append(
                {
                    "name": "ONNXSHIP_TOKEN",
                    "valueFrom": {"secretKeyRef": {"name": cfg.token_secret, "key": "token"}},
                }
            )
        predictor["containers"] = [
            {
                "name": "kserve-container",
                "image": cfg.image,
                "args": args,
                "env": env,
                "ports": [{"containerPort": PORT, "name": "http1", "protocol": "TCP"}],
                "resources": _resources(cfg),
                # ready = the golden check passed (onnxship serve answers 503 until then)
                "readinessProbe": _probe("/v2/health/ready", period=5, failures=readiness_failures),
                "livenessProbe": _probe("/v2/health/live", period=10, failures=3),
                "securityContext": {
                    "runAsNonRoot": True,
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ]
    else:
        predictor["model"] = {
            "modelFormat": {"name": "triton"},
            "protocolVersion": "v2",
            "storageUri": cfg.storage_uri,
            "resources": _resources(cfg),
            "readinessProbe": _probe(
                f"/v2/models/{release.name}/ready", period=5, failures=readiness_failures
            ),
            "ports": [{"containerPort": PORT, "name": "http1", "protocol": "TCP"}],
        }
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": meta,
        "spec": {"predictor": predictor},
    }


def _dump(manifest: dict[str, Any]) -> str:
    header = "# written by onnxship package kserve; validated against KServe's InferenceService schema\n"
    try:
        import yaml
    except ImportError:
        return header + json.dumps(manifest, indent=2) + "\n"  # JSON is YAML
    return header + yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False)


def package_kserve(release_path: str | Path, cfg: KServeConfig) -> KServeResult:
    """Write ``<out>/inferenceservice.yaml`` (and ``<out>/model_repository/`` for the Triton runtime).

    The folder is built beside its place and swapped in: a failure leaves the previous one intact.
    """
    release = read_release(Path(release_path))
    limits = serving_limits(release.meta)
    notes: list[str] = []
    # Triton takes 0 (no batch dim); onnxship serve's smallest limit is 1 row per request
    max_batch = limits.resolve(
        cfg.max_batch_size, "--max-batch-size", zero_disables=cfg.runtime == "triton", error=PackagingError
    )
    out = Path(cfg.out) if cfg.out is not None else Path("kserve") / _dns_name(release.name)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
    except OSError as exc:
        raise PackagingError(
            f"cannot write {str(out)!r}: {exc.strerror or exc}", hint="pick a writable --out folder"
        ) from None
    try:
        repo = None
        if cfg.runtime == "triton":
            from onnxship.package._triton import TritonConfig, package_triton

            triton = package_triton(
                release.path,
                TritonConfig(
                    repo=tmp / "model_repository",
                    max_batch_size=max_batch if max_batch is not None else 0,
                    kind="KIND_GPU" if cfg.gpus else "KIND_CPU",
                    dynamic_batching=bool(max_batch),
                    model_name=release.name,
                    warmup=True,  # Triton runs a golden sample before it reports the model ready
                ),
            )
            notes += triton.notes
            max_batch = triton.max_batch_size
            repo = out / "model_repository"
            notes.append(f"upload {repo}/ to {cfg.storage_uri} (KServe's Triton runtime loads that folder)")
        else:
            notes.append(f"upload the release folder {release.path}/ to {cfg.storage_uri}")
        manifest = kserve_manifest(release, cfg, max_batch or None)
        (tmp / "inferenceservice.yaml").write_text(_dump(manifest), encoding="utf-8")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return KServeResult(
        name=manifest["metadata"]["name"],
        manifest_path=out / "inferenceservice.yaml",
        manifest=manifest,
        runtime=cfg.runtime,
        max_batch=max_batch or None,
        model_repository=repo,
        notes=notes,
    )

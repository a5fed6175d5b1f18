"""The container build file and its deployment examples hold their invariants (checked without a container runtime).

No torch in what the runtime image installs, a numeric non-root user, the release mounted read-only, probes on the
endpoints ``onnxship serve`` has, and only options ``onnxship serve`` accepts.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
HEAVY = {"torch", "torchvision", "onnxscript", "timm", "ultralytics", "transformers", "tensorflow", "jax"}


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _runtime_stage() -> list[tuple[str, str]]:
    ins = _instructions((DEPLOY / "Dockerfile").read_text())
    last_from = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    return ins[last_from:]


def _requirement_name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;(]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _resolve(extras: list[str]) -> set[str]:
    """Distribution names installed by onnxship[extras] (its own extras expanded), from pyproject.toml."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_requirement_name(r) for r in project["dependencies"]}
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        assert extra in project["optional-dependencies"], f"unknown extra {extra!r}"
        for req in project["optional-dependencies"][extra]:
            m = re.match(r"onnxship\[([^\]]+)\]", req)
            if m:
                todo.extend(e.strip() for e in m.group(1).split(","))
            else:
                names.add(_requirement_name(req))
    return names


def test_runtime_image_installs_no_torch():
    stage = _runtime_stage()
    installs = [args for w, args in stage if w == "RUN" and "pip install" in args]
    assert installs, "the runtime stage installs onnxship"
    extras: list[str] = []
    for args in installs:
        m = re.search(r"onnxship-\*\.whl\)\[([^\]]+)\]", args)
        assert m, f"install onnxship from the built wheel with explicit extras: {args}"
        extras += [e.strip() for e in m.group(1).split(",")]
        for word in shlex.split(args.replace("$(", "").replace(")", "")):
            assert _requirement_name(word) not in HEAVY, f"{word} installed in the runtime image"
    assert "serve" in extras
    installed = _resolve(extras)
    assert {"onnxruntime", "uvicorn"} <= installed
    assert not installed & HEAVY, f"the runtime image would install {sorted(installed & HEAVY)}"
    base = next(args for w, args in stage if w == "FROM")
    assert "slim" in base and "torch" not in base and "cuda" not in base


def test_the_example_fixture_can_fail():
    assert "torch" in _resolve(["all"])  # the same resolution does see torch where it is


def test_runs_as_numeric_non_root_user():
    users = [args for w, args in _runtime_stage() if w == "USER"]
    assert users, "the runtime stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0, f"USER {users[-1]}: runAsNonRoot needs a numeric non-zero uid"


def test_entrypoint_serves_the_mounted_release_with_real_options():
    stage = dict((w, a) for w, a in _runtime_stage() if w in ("ENTRYPOINT", "CMD", "VOLUME", "EXPOSE"))
    import json

    cmd = json.loads(stage["ENTRYPOINT"]) + json.loads(stage["CMD"])
    assert cmd[:2] == ["onnxship", "serve"] and cmd[cmd.index("--model-path") + 1] == "/mnt/models"
    assert "/mnt/models" in stage["VOLUME"] and stage["EXPOSE"] == cmd[cmd.index("--port") + 1] == "8080"
    _known_serve_options(cmd[2:])
    assert not any(
        w == "COPY" and "releases" in a for w, a in _instructions((DEPLOY / "Dockerfile").read_text())
    )


def _known_serve_options(args: list[str]) -> None:
    import typer.main

    from onnxship.cli import app

    group = typer.main.get_command(app)
    serve = group.commands["serve"]  # type: ignore[attr-defined]
    known = {opt for p in serve.params for opt in p.opts}
    unknown = [a for a in args if a.startswith("--") and a not in known]
    assert not unknown, f"onnxship serve does not accept {unknown}"


def _serve_routes() -> set[str]:
    text = (ROOT / "src/onnxship/serve/_app.py").read_text()
    return set(re.findall(r"\"(/v2/health/\w+)\"", text))


def test_healthcheck_probes_readiness():
    checks = [a for w, a in _runtime_stage() if w == "HEALTHCHECK"]
    assert checks and "/v2/health/ready" in checks[0] and ":8080/" in checks[0]
    assert {"/v2/health/ready", "/v2/health/live"} <= _serve_routes()


def test_compose_mounts_the_release_read_only():
    svc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["onnxship"]
    mounts = [
        v
        for v in svc["volumes"]
        if (v["target"] if isinstance(v, dict) else v.split(":")[1]) == "/mnt/models"
    ]
    assert mounts
    for v in mounts:
        assert v.get("read_only") is True if isinstance(v, dict) else v.endswith(":ro")
    assert svc["read_only"] is True and not svc["user"].startswith("0")
    assert "/v2/health/ready" in " ".join(svc["healthcheck"]["test"])


def test_kubernetes_example_is_read_only_non_root_with_probes():
    dep = yaml.safe_load((DEPLOY / "k8s" / "deployment.yaml").read_text())
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    (c,) = pod["containers"]
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/mnt/models")
    assert mount["readOnly"] is True
    vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert vol["persistentVolumeClaim"]["readOnly"] is True
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    _known_serve_options(c["args"][1:])
    assert c["args"][c["args"].index("--model-path") + 1] == "/mnt/models"

"""The wheel installs clean: `python -m build` makes a wheel and an sdist; a fresh venv with only the core
dependencies (no torch) runs `onnxship --help`, `inspect` and `verify --golden` on a shipped bundle, and one with
the `serve` extra serves it.

The venvs are cached under ${XDG_CACHE_HOME:-~/.cache}/onnxship-tests/ behind a stamp of the dependency list and the Python version, so
repeated local runs only reinstall the fresh wheel (--no-deps); from scratch (CI) the dependencies come from the
package index. Runs in CI (make test runs every test); marked slow.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import tomllib

from ..serve.conftest import write_bundle  # noqa: TID252  (the serve tests own this helper)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# Not an ONNXSHIP_* variable: ship reads those and refuses unknown ones.
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "onnxship-tests"


def _run(cmd: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _clean_env() -> dict[str, str]:
    """The environment without this venv's or the test's settings leaking into the fresh venv."""
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "MODEL_PATH")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("ONNXSHIP_")}


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """A wheel and an sdist built from a copy of the project (the work tree gets no build/ or egg-info)."""
    src = tmp_path_factory.mktemp("dist-src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, src], timeout=300, cwd=src)
    wheels, sdists = list(out.glob("onnxship-*.whl")), list(out.glob("onnxship-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def test_wheel_and_sdist_contents(dists):
    import tarfile
    import zipfile

    names = zipfile.ZipFile(dists["wheel"]).namelist()
    assert "onnxship/py.typed" in names and "onnxship/cli/__init__.py" in names
    assert any(n.endswith("entry_points.txt") for n in names)
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]
    with tarfile.open(dists["sdist"]) as tar:
        members = tar.getnames()
    assert any(m.endswith("/pyproject.toml") for m in members) and any(
        m.endswith("/src/onnxship/__init__.py") for m in members
    )


def _venv(extra: str | None, wheel: Path) -> Path:
    """A cached venv holding the wheel with only its core dependencies (+ ``extra``), refreshed with this wheel."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = meta["dependencies"] + (meta["optional-dependencies"][extra] if extra else [])
    key = hashlib.sha256(json.dumps([sys.version, deps, extra]).encode()).hexdigest()[:12]
    venv = CACHE / f"dist-venv-{extra or 'core'}-{key}"
    stamp = venv / ".onnxship-stamp"
    pip = [venv / "bin/python", "-m", "pip", "--disable-pip-version-check", "-q"]
    req = f"onnxship[{extra}] @ {wheel.as_uri()}" if extra else str(wheel)
    if not stamp.is_file():
        shutil.rmtree(venv, ignore_errors=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        _run([sys.executable, "-m", "venv", venv], env=_clean_env())
        _run([*pip, "install", req], env=_clean_env())  # core deps (and the extra's) from the package index
        stamp.write_text(json.dumps(deps))
    else:
        _run([*pip, "install", "--no-deps", "--force-reinstall", str(wheel)], env=_clean_env())
    return venv


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A release written by the project's ReleaseWriter (export + golden.npz), in this (torch) venv."""
    return write_bundle(tmp_path_factory.mktemp("dist-rel") / "releases", 0, 1, latest=True)


@pytest.fixture(scope="module")
def core_venv(dists) -> Path:
    return _venv(None, dists["wheel"])


def test_core_install_has_no_torch_and_works(core_venv, bundle, tmp_path):
    py, exe = core_venv / "bin/python", core_venv / "bin/onnxship"
    env = _clean_env()
    probe = subprocess.run([py, "-c", "import torch"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr
    where = _run([py, "-c", "import onnxship; print(onnxship.__file__)"], env=env, cwd=tmp_path).stdout
    assert str(core_venv) in where  # the installed wheel, not the work tree
    assert "Usage" in _run([exe, "--help"], env=env, cwd=tmp_path).stdout
    info = json.loads(_run([exe, "inspect", bundle / "deeplog.onnx", "--json"], env=env, cwd=tmp_path).stdout)
    assert [i["name"] for i in info["inputs"]] == ["input_sequence"]
    verified = _run(
        [exe, "verify", bundle / "deeplog.onnx", "--golden", bundle / "golden.npz", "--json"],
        env=env,
        cwd=tmp_path,
    )
    assert json.loads(verified.stdout)["passed"] is True
    (tmp_path / "x.py").write_text("def build():\n    raise AssertionError('never imported without torch')\n")
    broken = subprocess.run(
        [exe, "verify", bundle / "deeplog.onnx", "--model", "x.py:build"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )  # needs torch: a clear error naming the extra
    assert broken.returncode == 1 and "onnxship[torch]" in broken.stderr and "Traceback" not in broken.stderr


def test_serve_extra_serves_the_bundle(dists, bundle, tmp_path):
    venv = _venv("serve", dists["wheel"])
    env = _clean_env()
    assert subprocess.run(
        [venv / "bin/python", "-c", "import torch"], capture_output=True, env=env
    ).returncode
    out = tmp_path / "serve.out"
    with open(out, "wb") as fh:
        proc = subprocess.Popen(
            [venv / "bin/onnxship", "serve", "--model-path", bundle, "--port", "0"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    try:
        url, deadline = None, time.monotonic() + 60
        while time.monotonic() < deadline and url is None:
            assert proc.poll() is None, out.read_text()
            m = re.search(r"http://127\.0\.0\.1:(\d+)", out.read_text(errors="replace"))
            url = m and m.group(0)
            time.sleep(0.1)
        assert url, out.read_text()
        while True:
            try:
                with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, out.read_text()
                time.sleep(0.1)
        body = {
            "inputs": [{"name": "input_sequence", "shape": [1, 10], "datatype": "INT64", "data": [1] * 10}]
        }
        req = urllib.request.Request(
            url + "/v2/models/deeplog/infer",
            json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            doc = json.loads(r.read())
        assert doc["outputs"][0]["shape"] == [1, 30]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)

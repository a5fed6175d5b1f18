"""onnxship.yaml (sections model, paths, export, verify, optimize, package) with ONNXSHIP_* overrides; typos are errors naming the valid keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnxship import ConfigError
from onnxship.spec import ShipConfig, load_ship_config

YAML = """
model:
  spec: model.py:build_model
  name: deeplog
  args: {hidden: 16}
paths:
  releases: out/releases
export:
  strategy: torchscript
  opsets: [17]
  inputs: ["input_sequence:batch=2..16 x seq=10..32:int64:0..30"]
  metadata: {vocab_size: 30}
verify:
  golden_samples: 4
  atol: 1.0e-5
package:
  assets: {vocab: vocab.json}
  portable: true
  triton: {repo: triton_repo, instances: 2, dynamic_batching: true}
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "onnxship.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_full_config_and_relative_paths(tmp_path):
    cfg = load_ship_config(_write(tmp_path, YAML), environ={})
    assert cfg.model.spec == f"{tmp_path / 'model.py'}:build_model" and cfg.model.args == {"hidden": 16}
    assert cfg.paths.releases == str(tmp_path / "out/releases")
    assert cfg.export.opsets == [17] and cfg.export.strategy == "torchscript"
    assert cfg.verify.atol == 1e-5 and cfg.verify.golden_samples == 4
    assert cfg.package.assets == {"vocab": str(tmp_path / "vocab.json")}
    assert cfg.package.triton.repo == str(tmp_path / "triton_repo") and cfg.package.triton.instances == 2


def test_defaults_without_a_file():
    cfg = load_ship_config(None, environ={})
    assert cfg == ShipConfig(source="config")
    assert cfg.paths.releases == "releases" and cfg.export.opsets == []


def test_an_env_override_keeps_the_default_opsets():
    # Any ONNXSHIP_* override re-checks the whole section; the default [] (each exporter's own opset) is valid.
    cfg = load_ship_config(None, environ={"ONNXSHIP_EXPORT_STRATEGY": "torchscript"})
    assert cfg.export.strategy == "torchscript" and cfg.export.opsets == []


@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        ("export:\n  stratgy: auto\n", "unknown key 'export.stratgy'", "export.strategy"),
        ("exprot:\n  strategy: auto\n", "unknown section 'exprot'", "valid sections: model, paths, export"),
        (
            "package:\n  triton: {repoo: x}\n",
            "did you mean 'package.triton.repo'",
            "package.triton.instances",
        ),
        ("verify:\n  golden_samples: many\n", "expected int", "ONNXSHIP_"),
        ("export:\n  opsets: 17\n", "expected list[int]", None),
        ("export: [1, 2]\n", "must be a mapping", "valid keys: strategy"),
        ("- a\n- b\n", "must hold a mapping of sections", None),
        ("export: {strategy: [\n", "not valid YAML", None),
    ],
)
def test_config_errors_name_the_valid_keys(tmp_path, text, message, hint):
    with pytest.raises(ConfigError) as exc:
        load_ship_config(_write(tmp_path, text), environ={})
    assert message in exc.value.message
    if hint:
        assert hint in exc.value.hint


def test_env_overrides_are_typed(tmp_path):
    env = {
        "ONNXSHIP_EXPORT_OPSETS": "[18]",
        "ONNXSHIP_PACKAGE_PORTABLE": "false",
        "ONNXSHIP_VERIFY_ATOL": "0.001",
        "ONNXSHIP_PATHS_RELEASES": "/srv/releases",
        "ONNXSHIP_PACKAGE_TRITON_INSTANCES": "3",
        "ONNXSHIP_MODEL_NAME": "other",
        "ONNXSHIP_SERVE_PORT": "9000",
        "HOME": "/root",
    }
    cfg = load_ship_config(_write(tmp_path, YAML), environ=env)
    assert cfg.export.opsets == [18] and cfg.package.portable is False and cfg.verify.atol == 0.001
    assert cfg.paths.releases == "/srv/releases" and cfg.package.triton.instances == 3
    assert cfg.model.name == "other"
    # untouched values keep the file's (already resolved) paths
    assert cfg.package.assets == {"vocab": str(tmp_path / "vocab.json")}
    assert cfg.export.strategy == "torchscript"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"ONNXSHIP_EXPORT_STRATEGI": "auto"}, "environment variable ONNXSHIP_EXPORT_STRATEGI"),
        ({"ONNXSHIP_VERIFY_GOLDEN_SAMPLES": "lots"}, "expected int"),
        ({"ONNXSHIP_EXPORT_OPSETS": "[17"}, "does not parse"),
    ],
)
def test_env_errors(env, needle):
    with pytest.raises(ConfigError, match=needle):
        load_ship_config(None, environ=env)


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_ship_config("/nonexistent/onnxship.yaml", environ={})


def test_the_example_config_used_by_make_demo(root):
    cfg = load_ship_config(root / "examples/deeplog/onnxship.yaml", environ={})
    assert cfg.model.spec == f"{root / 'examples/deeplog/model.py'}:build_model"
    assert Path(cfg.paths.releases).resolve() == root / "releases"
    assert cfg.optimize.variants == ["int8"] and cfg.package.triton.dynamic_batching is True
    assert "examples/deeplog/onnxship.yaml" in (root / "Makefile").read_text()

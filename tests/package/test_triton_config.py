"""Triton repositories from the verified io signature, each config parsed into Triton's ModelConfig protobuf."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from onnxship import ConfigError, PackagingError
from onnxship.package import (
    TRITON_DTYPES,
    ReleaseWriter,
    TritonConfig,
    package_triton,
    parse_triton_config,
    read_release,
)
from onnxship.spec import parse_input_spec
from onnxship.spec._inputs import sweep_points

pytest.importorskip("tritonclient.grpc")

_ONNX = {
    "float32": TensorProto.FLOAT,
    "float16": TensorProto.FLOAT16,
    "float64": TensorProto.DOUBLE,
    "int64": TensorProto.INT64,
    "int32": TensorProto.INT32,
    "int8": TensorProto.INT8,
    "uint8": TensorProto.UINT8,
    "bool": TensorProto.BOOL,
    "bfloat16": TensorProto.BFLOAT16,
}


def synthetic_release(
    root: Path,
    spec: str,
    out_shape: list,
    *,
    name: str = "m",
    out_dtype: str | None = None,
    verified: list[dict] | None = None,
    labels: list[str] | None = None,
    when: datetime | None = None,
) -> Path:
    """A release of an Identity/Cast graph written by ReleaseWriter, with the sidecar an export would write."""
    from onnxship.onnxfile import file_sha256

    s = parse_input_spec(spec)
    shape = [d.name if d.name else d.value for d in s.dims]
    out_dtype = out_dtype or s.dtype
    node = (
        helper.make_node("Identity", [s.name], ["y"])
        if out_dtype == s.dtype
        else helper.make_node("Cast", [s.name], ["y"], to=_ONNX[out_dtype])
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(s.name, _ONNX[s.dtype], shape)],
        [helper.make_tensor_value_info("y", _ONNX[out_dtype], out_shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with ReleaseWriter(root, name, when=when, sha="nogit") as w:
        onnx.save(model, str(w.path / f"{name}.onnx"))
        w.write_json(
            f"{name}.onnx.meta.json",
            {
                "inputs": [s.to_dict()],
                "output_names": ["y"],
                "onnx_sha256": file_sha256(w.path / f"{name}.onnx"),
                # default: every point of the shape sweep verified, as an export writes it
                "verified_dims": verified if verified is not None else sweep_points([s]),
            },
        )
        if labels:
            w.write_json("assets/labels.json", {str(i): x for i, x in enumerate(labels)})
        return w.commit(model_file=f"{name}.onnx", passed=True).path


def test_deeplog_config_excludes_the_batch_dim(shipped, tmp_path):
    _, _, r2 = shipped
    result = package_triton(r2.path, TritonConfig(repo=tmp_path))
    assert result.max_batch_size == 16  # the declared batch=2..16
    assert [(t.name, t.data_type, t.dims) for t in result.inputs] == [("input_sequence", "TYPE_INT64", [-1])]
    assert [(t.name, t.data_type, t.dims) for t in result.outputs] == [("output_0", "TYPE_FP32", [30])]
    cfg = parse_triton_config((tmp_path / "deeplog" / "config.pbtxt").read_text())
    assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 16
    assert list(cfg.input[0].dims) == [-1] and list(cfg.output[0].dims) == [30]
    assert cfg.version_policy.latest.num_versions == 1
    assert (tmp_path / "deeplog/1/model.onnx").read_bytes() == r2.release.model_path.read_bytes()
    assert json.loads((tmp_path / "deeplog/onnxship-versions.json").read_text())["1"]["release"] == r2.version


def test_no_batching_keeps_full_shapes(shipped, tmp_path):
    _, _, r2 = shipped
    result = package_triton(r2.path, TritonConfig(repo=tmp_path, max_batch_size=0))
    assert result.max_batch_size == 0
    assert result.inputs[0].dims == [-1, -1] and result.outputs[0].dims == [-1, 30]


def test_options_and_several_releases_become_versions(shipped, tmp_path):
    releases, r1, r2 = shipped
    result = package_triton(
        releases / "deeplog",
        TritonConfig(
            repo=tmp_path,
            max_batch_size=8,
            instances=2,
            kind="KIND_CPU",
            dynamic_batching=True,
            preferred_batch_sizes=(4, 8),
            max_queue_delay_us=500,
            version_policy="all",
        ),
    )
    assert result.versions == {1: r1.version, 2: r2.version}
    cfg = parse_triton_config(result.config_text)
    assert cfg.max_batch_size == 8 and cfg.instance_group[0].count == 2
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert cfg.version_policy.HasField("all")
    assert sorted(p.name for p in (tmp_path / "deeplog").iterdir()) == [
        "1",
        "2",
        "config.pbtxt",
        "onnxship-versions.json",
    ]
    # packaging again replaces the model folder and leaves nothing behind
    package_triton(r2.path, TritonConfig(repo=tmp_path, version_policy="specific:1"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deeplog"]
    assert sorted(p.name for p in (tmp_path / "deeplog").iterdir()) == [
        "1",
        "config.pbtxt",
        "onnxship-versions.json",
    ]


@pytest.mark.parametrize("dtype", ["float16", "int64", "bool", "float64", "uint8", "int32", "int8"])
def test_dtypes_map_exactly(tmp_path, dtype):
    rel = synthetic_release(tmp_path / "r", f"x:batch=2..8 x 4:{dtype}", ["batch", 4])
    result = package_triton(rel, TritonConfig(repo=tmp_path / "repo"))
    cfg = parse_triton_config(result.config_text)
    from tritonclient.grpc import model_config_pb2

    assert model_config_pb2.DataType.Name(cfg.input[0].data_type) == TRITON_DTYPES[dtype]
    assert model_config_pb2.DataType.Name(cfg.output[0].data_type) == TRITON_DTYPES[dtype]
    assert cfg.max_batch_size == 8 and list(cfg.input[0].dims) == [4]


def test_bf16_is_an_error_never_fp32(tmp_path):
    rel = synthetic_release(tmp_path / "r", "x:batch=2..8 x 4:float32", ["batch", 4], out_dtype="bfloat16")
    with pytest.raises(PackagingError) as exc:
        package_triton(rel, TritonConfig(repo=tmp_path / "repo"))
    assert "'y' is bfloat16" in exc.value.message and "float16 or float32" in exc.value.hint
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_static_batch_cannot_be_batched(tmp_path):
    rel = synthetic_release(tmp_path / "r", "x:2 x 4:float32", [2, 4], verified=[{}])
    result = package_triton(rel, TritonConfig(repo=tmp_path / "repo"))
    assert result.max_batch_size == 0 and result.inputs[0].dims == [2, 4]
    assert "batching disabled" in result.notes[0]
    with pytest.raises(PackagingError, match="cannot be batched by Triton: input 'x' has no dynamic axis 0"):
        package_triton(rel, TritonConfig(repo=tmp_path / "repo", max_batch_size=4))


def test_output_not_following_the_batch_dim(tmp_path):
    rel = synthetic_release(tmp_path / "r", "x:batch=2..8 x 4:float32", [2, 4])
    with pytest.raises(PackagingError, match="output 'y' axis 0 is 2, not the batch dim 'batch'"):
        package_triton(rel, TritonConfig(repo=tmp_path / "repo", max_batch_size=4))


def test_other_dynamic_dims_are_minus_one_and_1d_inputs_reshape(tmp_path):
    rel = synthetic_release(tmp_path / "a", "x:batch=2..8 x seq=5..9 x 3:float32", ["batch", "seq", 3])
    result = package_triton(rel, TritonConfig(repo=tmp_path / "repo"))
    assert result.inputs[0].dims == [-1, 3] and result.outputs[0].dims == [-1, 3]
    rel = synthetic_release(tmp_path / "b", "x:batch=2..8:int64", ["batch"])
    result = package_triton(rel, TritonConfig(repo=tmp_path / "repo"))
    cfg = parse_triton_config(result.config_text)
    assert list(cfg.input[0].dims) == [1] and cfg.input[0].reshape.shape == []


def test_batch_limit_comes_from_verified_dims_without_a_declared_max(tmp_path):
    rel = synthetic_release(
        tmp_path / "r",
        "x:batch=2 x 4:float32",
        ["batch", 4],
        verified=[{"batch": 2}, {"batch": 1}, {"batch": 3}, {"batch": 5}],
    )
    assert package_triton(rel, TritonConfig(repo=tmp_path / "repo")).max_batch_size == 5
    with pytest.raises(PackagingError, match="above the verified batch maximum 5"):
        package_triton(rel, TritonConfig(repo=tmp_path / "repo", max_batch_size=6))


def test_labels_become_label_filename(tmp_path):
    rel = synthetic_release(tmp_path / "r", "x:batch=2..8 x 3:float32", ["batch", 3], labels=["A", "B", "C"])
    result = package_triton(rel, TritonConfig(repo=tmp_path / "repo"))
    cfg = parse_triton_config(result.config_text)
    assert cfg.output[0].label_filename == "labels.txt"
    assert (tmp_path / "repo/m/labels.txt").read_text().split() == ["A", "B", "C"]


def test_versions_must_share_one_signature(tmp_path):
    t1 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    t2 = datetime(2026, 1, 2, tzinfo=timezone.utc)
    a = synthetic_release(tmp_path / "r", "x:batch=2..8 x 4:float32", ["batch", 4], when=t1)
    b = synthetic_release(tmp_path / "r", "x:batch=2..8 x 5:float32", ["batch", 5], when=t2)
    with pytest.raises(PackagingError, match="another io signature"):
        package_triton([a, b], TritonConfig(repo=tmp_path / "repo"))
    c = synthetic_release(tmp_path / "other", "x:batch=2..8 x 4:float32", ["batch", 4], name="n")
    with pytest.raises(PackagingError, match="several models"):
        package_triton([a, c], TritonConfig(repo=tmp_path / "repo"))
    assert read_release(a).name == "m"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"instances": 0}, "at least 1"),
        ({"max_batch_size": -1}, ">= 0"),
        ({"version_policy": "latest:0"}, "not understood"),
        ({"version_policy": "specific:"}, "not understood"),
        ({"kind": "GPU"}, "unknown instance kind"),
        ({"preferred_batch_sizes": (4,)}, "need --dynamic-batching"),
    ],
)
def test_bad_triton_options(tmp_path, kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        TritonConfig(repo=tmp_path, **kwargs)


def test_semantic_errors_on_the_parsed_config(shipped, tmp_path):
    _, _, r2 = shipped
    with pytest.raises(PackagingError, match="preferred batch sizes"):
        package_triton(
            r2.path,
            TritonConfig(repo=tmp_path, max_batch_size=4, dynamic_batching=True, preferred_batch_sizes=(8,)),
        )
    with pytest.raises(PackagingError, match="dynamic_batching needs max_batch_size > 0"):
        package_triton(r2.path, TritonConfig(repo=tmp_path, max_batch_size=0, dynamic_batching=True))
    assert not (tmp_path / "deeplog").exists()


def test_parse_rejects_unknown_fields():
    with pytest.raises(PackagingError, match="does not parse"):
        parse_triton_config('name: "x"\nplatform: "onnxruntime_onnx"\nmax_batch_sise: 4\n')


def test_unwritable_repo_writes_nothing(shipped, tmp_path):
    _, _, r2 = shipped
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PackagingError, match="cannot write the Triton repository") as exc:
        package_triton(r2.path, TritonConfig(repo=blocker / "repo"))
    assert "writable --repo" in exc.value.hint and blocker.read_text() == "x"


def test_a_folder_with_a_tampered_release_is_refused(shipped, tmp_path):
    import shutil

    from .conftest import writable_copy

    releases, r1, r2 = shipped
    folder = tmp_path / "deeplog"
    folder.mkdir()
    shutil.copytree(r2.path, folder / r2.version)
    bad = writable_copy(r1.path, folder / r1.version)
    (bad / "golden.npz").write_bytes(b"changed")
    with pytest.raises(PackagingError, match=f"{r1.version} is not a valid release: .*golden.npz"):
        package_triton(folder, TritonConfig(repo=tmp_path / "repo"))
    assert not (tmp_path / "repo").exists()

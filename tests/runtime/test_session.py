"""The one session factory: provider policy, provider options, fallback with reasons, providers in use."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from onnxship._errors import CheckError, ConfigError
from onnxship.runtime import (
    PROVIDER_PREFERENCE,
    SessionConfig,
    create_session,
    open_session,
    plan_providers,
    provider_options,
    resolve_providers,
)

GPU_BOX = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
CPU_BOX = ["AzureExecutionProvider", "CPUExecutionProvider"]


def _cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def test_preference_order_on_a_gpu_build():
    assert resolve_providers(None, GPU_BOX) == list(PROVIDER_PREFERENCE)
    chosen, skipped = plan_providers(("cuda", "cpu"), GPU_BOX)
    assert chosen == ["CUDAExecutionProvider", "CPUExecutionProvider"] and skipped == []


def test_default_preference_on_a_cpu_build_is_quietly_cpu():
    chosen, skipped = plan_providers(None, CPU_BOX)
    assert chosen == ["CPUExecutionProvider"]
    assert skipped == []  # nothing was asked for explicitly: not a fallback worth reporting


def test_requested_gpu_providers_missing_are_reported_with_reason():
    chosen, skipped = plan_providers(("tensorrt", "cuda"), CPU_BOX)
    assert chosen == ["CPUExecutionProvider"]  # CPU is always the last resort
    assert [s.provider for s in skipped] == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    assert all("not available" in s.reason and "onnxruntime-gpu" in s.reason for s in skipped)


def test_tensorrt_options_fp16_cache_workspace(tmp_path):
    cfg = SessionConfig(
        trt_fp16=True, trt_engine_cache=str(tmp_path / "trt"), trt_workspace_bytes=1 << 30, device_id=1
    )
    opts = provider_options("TensorrtExecutionProvider", cfg)
    assert opts == {
        "device_id": "1",
        "trt_fp16_enable": "1",
        "trt_max_workspace_size": str(1 << 30),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": str(tmp_path / "trt"),
    }
    assert "trt_engine_cache_enable" not in provider_options("TensorrtExecutionProvider", SessionConfig())


def test_cuda_options_and_user_overrides_win():
    assert provider_options("CUDAExecutionProvider")["cudnn_conv_use_max_workspace"] == "1"
    cfg = SessionConfig(
        cuda_cudnn_max_workspace=False,
        provider_options={
            "CUDAExecutionProvider": {"arena_extend_strategy": "kSameAsRequested", "device_id": 2}
        },
    )
    opts = provider_options("CUDAExecutionProvider", cfg)
    assert opts["cudnn_conv_use_max_workspace"] == "0"
    assert opts["device_id"] == "2" and opts["arena_extend_strategy"] == "kSameAsRequested"
    assert provider_options("CPUExecutionProvider", cfg) == {}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"providers": ("gpu",)},
        {"providers": "cuda"},
        {"graph_optimization": "max"},
        {"intra_op_threads": -1},
        {"trt_workspace_bytes": 0},
    ],
)
def test_bad_session_config_is_a_clear_error(kwargs):
    with pytest.raises(ConfigError):
        SessionConfig(**kwargs)


def test_aliases_normalise():
    assert SessionConfig(providers=("trt", "CUDA", "cpu")).providers == tuple(PROVIDER_PREFERENCE)


def test_requested_cuda_falls_back_to_cpu_with_logged_reason(deeplog_export, caplog):
    if _cuda_available():
        pytest.skip("this onnxruntime has CUDA: the fallback path is not taken")
    _, result = deeplog_export
    with caplog.at_level(logging.WARNING, logger="onnxship.runtime"):
        info = open_session(result.path, SessionConfig(providers=("cuda", "cpu"), intra_op_threads=1))
    assert info.providers == ["CPUExecutionProvider"]
    assert info.requested == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert [f.provider for f in info.fallbacks] == ["CUDAExecutionProvider"]
    assert any("CUDAExecutionProvider skipped" in r.getMessage() for r in caplog.records)
    d = info.to_dict()
    assert d["providers"] == ["CPUExecutionProvider"] and d["session_options"]["intra_op_num_threads"] == 1
    out = info.session.run(None, {"input_sequence": np.zeros((2, 10), np.int64)})
    assert out[0].shape == (2, 30)


def test_trt_cache_folder_not_created_without_tensorrt(deeplog_export, tmp_path):
    if _cuda_available():
        pytest.skip("GPU build")
    _, result = deeplog_export
    info = open_session(
        result.path, SessionConfig(providers=("tensorrt",), trt_engine_cache=str(tmp_path / "c"))
    )
    assert info.providers == ["CPUExecutionProvider"]
    assert not (tmp_path / "c").exists()


def test_missing_and_truncated_files(tmp_path, deeplog_export):
    with pytest.raises(CheckError, match="does not exist"):
        create_session(tmp_path / "nope.onnx")
    _, result = deeplog_export
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(result.path.read_bytes()[:500])
    with pytest.raises(CheckError, match="cannot load"):
        create_session(bad)


@pytest.mark.gpu
def test_cuda_session_matches_cpu(deeplog_export):
    if not _cuda_available():
        pytest.skip("needs onnxruntime-gpu and a CUDA device")
    _, result = deeplog_export
    feeds = {"input_sequence": np.random.default_rng(0).integers(0, 10, (4, 12)).astype(np.int64)}
    gpu = open_session(result.path, SessionConfig(providers=("cuda", "cpu")))
    assert gpu.providers[0] == "CUDAExecutionProvider"
    cpu = create_session(result.path, SessionConfig(providers=("cpu",)))
    np.testing.assert_allclose(gpu.session.run(None, feeds)[0], cpu.run(None, feeds)[0], atol=1e-4, rtol=1e-3)


@pytest.mark.gpu
@pytest.mark.trt
def test_tensorrt_session_builds_its_engine_cache(deeplog_export, tmp_path):
    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu with TensorRT")
    _, result = deeplog_export
    info = open_session(
        result.path,
        SessionConfig(
            providers=("tensorrt", "cuda", "cpu"), trt_fp16=True, trt_engine_cache=str(tmp_path / "trt")
        ),
    )
    if (
        info.providers[0] != "TensorrtExecutionProvider"
    ):  # TensorRT libraries missing: the fallback is reported
        assert any(f.provider == "TensorrtExecutionProvider" for f in info.fallbacks)
        return
    info.session.run(None, {"input_sequence": np.zeros((2, 10), np.int64)})
    assert any((tmp_path / "trt").iterdir())
    assert info.provider_options["TensorrtExecutionProvider"]["trt_fp16_enable"] == "1"

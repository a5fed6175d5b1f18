"""infer(): torch and ONNX Runtime give the same predictions on the same data, through the shared data sources."""

from __future__ import annotations

import numpy as np
import pytest

from onnxship._errors import ConfigError
from onnxship.runtime import InferConfig, infer
from onnxship.spec import parse_input_spec


@pytest.fixture(scope="module")
def windows(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "windows.npz"
    rng = np.random.default_rng(3)
    np.savez(
        path,
        input_sequence=rng.integers(0, 10, (11, 10)).astype(np.int64),
        next_event=rng.integers(0, 30, 11).astype(np.int64),
    )
    return path


def test_torch_and_onnx_agree_on_npz(deeplog_export, windows):
    model, result = deeplog_export
    a = infer(result.path, InferConfig(inputs=str(windows), batch=4, top_k=3))
    b = infer(result.path, InferConfig(engine="torch", inputs=str(windows), batch=4, top_k=3), model=model)
    assert len(a.predictions) == len(b.predictions) == 11
    assert a.providers == ["CPUExecutionProvider"] and b.providers == ["torch-cpu"]
    for pa, pb in zip(a.predictions, b.predictions, strict=True):
        assert pa["id"] == pb["id"] and pa["label"] == pb["label"]
        assert [c for c, _ in pa["output_0"]["top"]] == [c for c, _ in pb["output_0"]["top"]]
        np.testing.assert_allclose(
            [s for _, s in pa["output_0"]["top"]], [s for _, s in pb["output_0"]["top"]], atol=1e-4
        )
    assert a.output_shapes == {"output_0": [30]}
    direct = model(__import__("torch").from_numpy(np.load(windows)["input_sequence"][:1])).detach().numpy()[0]
    assert a.predictions[0]["output_0"]["top"][0][0] == int(direct.argmax())


def test_generated_samples_and_limit(deeplog_export, windows):
    _, result = deeplog_export
    assert len(infer(result.path, InferConfig(samples=5, batch=2)).predictions) == 5
    assert len(infer(result.path, InferConfig(inputs=str(windows), limit=3)).predictions) == 3


def test_torch_with_explicit_specs_and_no_onnx(deeplog_export):
    model, _ = deeplog_export
    specs = [parse_input_spec("input_sequence:batch=2 x 10:int64:0..30")]
    res = infer(None, InferConfig(engine="torch", samples=3), model=model, specs=specs)
    assert len(res.predictions) == 3 and res.output_shapes == {"output_0": [30]}


def test_clear_errors(deeplog_export, tmp_path):
    model, result = deeplog_export
    with pytest.raises(ConfigError, match="needs the PyTorch model"):
        infer(result.path, InferConfig(engine="torch"))
    with pytest.raises(ConfigError, match="no ONNX model"):
        infer(None, InferConfig())
    with pytest.raises(ConfigError, match="engine"):
        infer(result.path, InferConfig(engine="tensorflow"))
    bad = tmp_path / "bad.npz"
    np.savez(bad, tokens=np.zeros((2, 10), np.int64))
    with pytest.raises(ConfigError, match="do not match the model inputs"):
        infer(result.path, InferConfig(inputs=str(bad)))
    with pytest.raises(ConfigError, match="no image files"):
        infer(result.path, InferConfig(inputs=str(tmp_path / "imgs" / "**" / "*.jpg")))
    with pytest.raises(ConfigError):
        InferConfig(batch=0)


def test_image_glob_goes_through_the_shared_preprocessing(tmp_path):
    image_mod = pytest.importorskip("PIL.Image")
    import torch

    import onnxship
    from onnxship.runtime._preprocess import PreprocessConfig, preprocess_images
    from onnxship.testing import SmallCNN

    torch.manual_seed(0)
    model = SmallCNN().eval()
    res = onnxship.export(
        model,
        inputs=["image:batch=2..8 x 3 x 32 x 32:float32"],
        out=tmp_path / "m",
        name="cnn",
        strategy="torchscript",
    )
    rng = np.random.default_rng(0)
    for i in range(3):
        (tmp_path / "imgs" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        image_mod.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(
            tmp_path / "imgs" / f"c{i % 2}" / f"{i}.png"
        )
    out = infer(res.path, InferConfig(inputs=str(tmp_path / "imgs" / "**" / "*.png"), batch=2, top_k=2))
    assert [p["id"] for p in out.predictions] == sorted(str(p) for p in (tmp_path / "imgs").rglob("*.png"))
    x = preprocess_images(sorted((tmp_path / "imgs").rglob("*.png"))[:1], PreprocessConfig(size=32))
    expect = int(model(torch.from_numpy(x)).argmax())
    assert out.predictions[0]["output_0"]["top"][0][0] == expect

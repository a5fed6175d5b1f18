"""Correct models that unrealistic synthetic inputs used to get refused: each is exported by onnxship and then checked
by the test itself against onnxruntime at >= 3 shapes with hand-made inputs (not onnxship's own verdict), or refused
with the right cause.

Padded-mask attention is exported with the dynamo exporter (that is what these tests are about); the shape and
structure cases use TorchScript to keep the suite fast.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import onnxship  # noqa: E402
from onnxship import ExportError  # noqa: E402

# ------------------------------------------------------------------------------------------------ models


class MaskedEncoder(nn.Module):
    """BERT-style self-attention over padded sequences (fused attention with a boolean padding mask)."""

    def __init__(self, vocab: int = 50, d: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.heads = heads

    def forward(self, input_ids, attention_mask):
        x = self.emb(input_ids)
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask[:, None, None, :].bool())
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class KVCacheDecoder(nn.Module):
    """A causal decoder step with a KV cache: new tokens attend to past + themselves, under a padding mask."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x, past_k, past_v, attention_mask):
        k = torch.cat([past_k, self.k(x).unsqueeze(1)], 2)
        v = torch.cat([past_v, self.v(x).unsqueeze(1)], 2)
        past, seq = past_k.shape[2], x.shape[1]
        causal = torch.ones(seq, past + seq, dtype=torch.bool).tril(diagonal=past)
        mask = causal[None, None] & attention_mask[:, None, None, :].bool()
        return F.scaled_dot_product_attention(self.q(x).unsqueeze(1), k, v, attn_mask=mask), k, v


class PatchAutoencoder(nn.Module):
    """Stride-16 patch embedding and a 16x unpatchify added back to the image: H and W must be multiples of 16."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, kernel_size=16, stride=16)
        self.proj = nn.Conv2d(8, 3, kernel_size=1)

    def forward(self, image):
        patches = torch.relu(self.embed(image))
        return image + F.interpolate(self.proj(patches), scale_factor=16.0, mode="nearest")


class TinyUNet(nn.Module):
    """Two poolings down, two x2 upsamplings back up, skip connections: H and W must be multiples of 4."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1, self.enc2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.dec2, self.dec1 = nn.Conv2d(16, 8, 3, padding=1), nn.Conv2d(16, 2, 3, padding=1)

    def forward(self, image):
        a = torch.relu(self.enc1(image))
        b = torch.relu(self.enc2(F.max_pool2d(a, 2)))
        c = torch.relu(self.mid(F.max_pool2d(b, 2)))
        up2 = F.interpolate(c, scale_factor=2.0, mode="nearest")
        d = torch.relu(self.dec2(torch.cat([b, up2], 1)))
        up1 = F.interpolate(d, scale_factor=2.0, mode="nearest")
        return self.dec1(torch.cat([a, up1], 1))


class BagClassifier(nn.Module):
    """EmbeddingBag over a flat token list cut into bags by offsets."""

    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(40, 8, mode="mean")
        self.fc = nn.Linear(8, 3)

    def forward(self, tokens, offsets):
        return self.fc(self.bag(tokens, offsets))


class DictModel(nn.Module):
    """forward(self, inputs: dict) with a nested dict."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 + 5, 2)

    def forward(self, inputs: dict):
        a = self.conv(inputs["image"]).mean((2, 3))
        return self.fc(torch.cat([a, inputs["meta"]["extra"]], 1))


class FixedGrid(nn.Module):
    """A linear layer over the flattened 8x8 image: no other H/W can ever run."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 4)

    def forward(self, image):
        return self.fc(image.flatten(1))


# ------------------------------------------------------------------------------------------------ helpers


def _independent_check(result, module, feeds_list, *, atol=1e-4, rtol=1e-3, call=None):
    """onnxruntime on the exported file vs eager PyTorch on the same hand-made inputs, at every shape given."""
    sess = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    shapes = set()
    for feeds in feeds_list:
        got = sess.run(None, {n: feeds[n] for n in names})
        with torch.inference_mode():
            if call is not None:
                ref = call(module, {k: torch.from_numpy(v) for k, v in feeds.items()})
            else:
                ref = module(*[torch.from_numpy(feeds[n]) for n in names])
        ref = ref if isinstance(ref, tuple) else (ref,)
        assert len(ref) == len(got)
        for r, g in zip(ref, got, strict=True):
            np.testing.assert_allclose(g, r.numpy(), atol=atol, rtol=rtol)
        shapes.add(tuple(tuple(v.shape) for v in feeds.values()))
    assert len(shapes) >= 3, shapes


def _padded_mask(rng, batch, length):
    lengths = rng.integers(1, length + 1, size=batch)
    lengths[0] = length
    return (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)


def _export(model, tmp_path_factory, name, **kw):
    torch.manual_seed(0)
    model = model.eval()
    out = tmp_path_factory.mktemp(name)
    return model, onnxship.export(model, out=out, name=name, use_cache=False, **kw)


# ------------------------------------------------------------------------------------------------ attention


@pytest.fixture(scope="module")
def encoder_export(tmp_path_factory):
    torch.manual_seed(0)
    return _export(
        MaskedEncoder(),
        tmp_path_factory,
        "encoder",
        inputs=["input_ids:batch=2 x seq=8:int64", "attention_mask:batch x seq:int64"],
        strategy="dynamo",
    )


@pytest.mark.slow
def test_padded_mask_encoder_ships_with_dynamo(encoder_export):
    model, result = encoder_export
    assert result.strategy == "dynamo"
    masks = [s for s in result.inputs if s.name == "attention_mask"]
    assert masks[0].kind == "mask"
    assert any("attention_mask" in n and "generated as mask" in n for n in result.notes)
    rng = np.random.default_rng(1)
    feeds = []
    for b, n in ((1, 5), (3, 8), (4, 13)):
        feeds.append(
            {
                "input_ids": rng.integers(0, 50, size=(b, n)).astype(np.int64),
                "attention_mask": _padded_mask(rng, b, n),
            }
        )
    _independent_check(result, model, feeds)


@pytest.fixture(scope="module")
def decoder_export(tmp_path_factory):
    return _export(
        KVCacheDecoder(),
        tmp_path_factory,
        "kvdecoder",
        inputs=[
            "x:batch=2 x seq=3 x 16:float32",
            "past_k:batch x 1 x past=4 x 16:float32",
            "past_v:batch x 1 x past x 16:float32",
            "attention_mask:batch x total=past+seq:int64:mask",
        ],
        strategy="dynamo",
    )


@pytest.mark.slow
def test_kv_cache_causal_decoder_ships_with_dynamo(decoder_export):
    model, result = decoder_export
    assert result.strategy == "dynamo"
    mask = next(s for s in result.inputs if s.name == "attention_mask")
    assert str(mask.dims[1]) == "total=past+seq" and mask.dims[1].value == 7
    # every point the gate checked is consistent: total = past + seq
    checks = result.candidates[-1].parity.checks
    assert len(checks) >= 4
    assert all(c.dims["total"] == c.dims["past"] + c.dims["seq"] for c in checks)
    assert {c.dims["past"] for c in checks} != {4} and {c.dims["seq"] for c in checks} != {3}
    rng = np.random.default_rng(2)
    feeds = []
    for b, s, p in ((1, 1, 1), (2, 3, 4), (3, 5, 9)):
        feeds.append(
            {
                "x": rng.standard_normal((b, s, 16)).astype(np.float32),
                "past_k": rng.standard_normal((b, 1, p, 16)).astype(np.float32),
                "past_v": rng.standard_normal((b, 1, p, 16)).astype(np.float32),
                "attention_mask": _padded_mask(rng, b, p + s),
            }
        )
    _independent_check(result, model, feeds)


# ------------------------------------------------------------------------------------------------ size rules


def test_patch16_dims_probed_and_shipped(tmp_path_factory):
    model, result = _export(
        PatchAutoencoder(),
        tmp_path_factory,
        "patch16",
        sample_inputs={"image": torch.randn(2, 3, 32, 32)},
        dynamic={"image": {0: "batch", 2: "height", 3: "width"}},
        strategy="torchscript",
    )
    image = result.inputs[0]
    assert [d.step for d in image.dims] == [None, None, 16, 16]
    assert any("'height' must be a multiple of 16" in n for n in result.notes), result.notes
    checked = [c.dims for c in result.candidates[-1].parity.checks if c.status == "passed"]
    assert len(checked) >= 4 and all(p["height"] % 16 == 0 and p["width"] % 16 == 0 for p in checked)
    assert {p["batch"] for p in checked} != {2}  # the batch axis is still swept
    rng = np.random.default_rng(3)
    feeds = [
        {"image": rng.standard_normal((b, 3, h, w)).astype(np.float32)}
        for b, h, w in ((1, 16, 48), (2, 32, 32), (3, 64, 16))
    ]
    _independent_check(result, model, feeds)


def test_unet_declared_step_ships(tmp_path_factory):
    model, result = _export(
        TinyUNet(),
        tmp_path_factory,
        "unet",
        inputs=["image:batch=2 x 3 x height=16..32/4 x width=16..32/4:float32:image"],
        strategy="torchscript",
    )
    assert not any("must be" in n for n in result.notes)  # declared: nothing to probe
    checked = [c.dims for c in result.candidates[-1].parity.checks if c.status == "passed"]
    assert all(p["height"] % 4 == 0 for p in checked) and len(checked) >= 4
    assert result.metadata["inputs"][0]["dims"][2]["step"] == 4
    rng = np.random.default_rng(4)
    feeds = [
        {"image": rng.uniform(0, 1, (b, 3, h, w)).astype(np.float32)}
        for b, h, w in ((1, 4, 8), (2, 20, 32), (3, 32, 12))
    ]
    _independent_check(result, model, feeds)


def test_unet_probed_from_sample_tensors(tmp_path_factory):
    model, result = _export(
        TinyUNet(),
        tmp_path_factory,
        "unet_probe",
        sample_inputs={"image": torch.rand(2, 3, 16, 16)},
        dynamic={"image": {0: "batch", 2: "height", 3: "width"}},
        strategy="torchscript",
    )
    assert [d.step for d in result.inputs[0].dims][2:] == [4, 4]
    assert any("'width' must be a multiple of 4" in n for n in result.notes)


def test_dim_no_other_size_of_which_runs_is_refused_for_the_inputs_not_the_model(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(ExportError) as info:
        onnxship.export(
            FixedGrid().eval(),
            {"image": torch.randn(2, 3, 8, 8)},
            dynamic={"image": {0: "batch", 2: "height", 3: "width"}},
            out=tmp_path,
            strategy="torchscript",
            use_cache=False,
        )
    text = str(info.value) + (info.value.hint or "")
    assert "could not make valid inputs" in text and "height" in text
    assert "fix the model" not in text
    assert not list(tmp_path.glob("*.onnx"))


# ------------------------------------------------------------------------------------------------ structure


def test_embedding_bag_with_offsets_uses_samples_exactly_and_valid_offsets(tmp_path_factory):
    tokens = torch.tensor([1, 5, 7, 2, 9, 3, 4, 11])
    offsets = torch.tensor([0, 3, 5])
    model, result = _export(
        BagClassifier(),
        tmp_path_factory,
        "bag",
        sample_inputs={"tokens": tokens, "offsets": offsets},
        dynamic={"tokens": {0: "n"}, "offsets": {0: "bags"}},
        strategy="torchscript",
    )
    spec = next(s for s in result.inputs if s.name == "offsets")
    assert (spec.kind, spec.of) == ("offsets", "n")
    checks = result.candidates[-1].parity.checks
    assert all(c.status == "passed" for c in checks) and len(checks) >= 4
    rng = np.random.default_rng(5)
    feeds = []
    for n, bags in ((8, 3), (20, 6), (5, 5)):
        starts = np.sort(rng.choice(np.arange(1, n), size=bags - 1, replace=False))
        feeds.append(
            {
                "tokens": rng.integers(0, 40, size=n).astype(np.int64),
                "offsets": np.concatenate([[0], starts]).astype(np.int64),
            }
        )
    _independent_check(result, model, feeds)


def test_dict_input_is_flattened_to_dotted_names(tmp_path_factory):
    sample = {"inputs": {"image": torch.randn(2, 3, 8, 8), "meta": {"extra": torch.randn(2, 5)}}}
    model, result = _export(
        DictModel(),
        tmp_path_factory,
        "dictin",
        sample_inputs=sample,
        dynamic={"inputs.image": {0: "batch"}, "inputs.meta.extra": {0: "batch"}},
        strategy="torchscript",
    )
    assert [s.name for s in result.inputs] == ["inputs.image", "inputs.meta.extra"]
    assert any("exported as one ONNX input per entry" in n for n in result.notes)
    rng = np.random.default_rng(6)
    feeds = [
        {
            "inputs.image": rng.standard_normal((b, 3, 8, 8)).astype(np.float32),
            "inputs.meta.extra": rng.standard_normal((b, 5)).astype(np.float32),
        }
        for b in (1, 3, 7)
    ]

    def call(m, t):
        return m({"image": t["inputs.image"], "meta": {"extra": t["inputs.meta.extra"]}})

    _independent_check(result, model, feeds, call=call)
    # verify() of the file against the unwrapped model binds the dotted names to the dict parameter
    report = onnxship.verify(
        result.path, model=model, config=onnxship.VerifyConfig(sample_count=4, synthetic_count=4)
    )
    assert report.passed


def test_kv_cache_decoder_with_an_undeclared_sum_is_probed(tmp_path_factory):
    b, s, p = 2, 3, 4
    sample = {
        "x": torch.randn(b, s, 16),
        "past_k": torch.randn(b, 1, p, 16),
        "past_v": torch.randn(b, 1, p, 16),
        "attention_mask": torch.ones(b, p + s, dtype=torch.long),
    }
    dynamic = {
        "x": {0: "batch", 1: "seq"},
        "past_k": {0: "batch", 2: "past"},
        "past_v": {0: "batch", 2: "past"},
        "attention_mask": {0: "batch", 1: "total"},  # really past + seq, not declared
    }
    model, result = _export(
        KVCacheDecoder(),
        tmp_path_factory,
        "kvprobe",
        sample_inputs=sample,
        dynamic=dynamic,
        strategy="torchscript",
    )
    mask = next(x for x in result.inputs if x.name == "attention_mask")
    assert set(mask.dims[1].parts) == {"past", "seq"} and mask.kind == "mask"
    assert any("'total' must equal" in n for n in result.notes), result.notes
    rng = np.random.default_rng(7)
    feeds = []
    for bb, ss, pp in ((1, 1, 2), (3, 2, 6), (2, 6, 1)):
        feeds.append(
            {
                "x": rng.standard_normal((bb, ss, 16)).astype(np.float32),
                "past_k": rng.standard_normal((bb, 1, pp, 16)).astype(np.float32),
                "past_v": rng.standard_normal((bb, 1, pp, 16)).astype(np.float32),
                "attention_mask": _padded_mask(rng, bb, pp + ss),
            }
        )
    _independent_check(result, model, feeds)


MODEL_FILE = """
import torch
import torch.nn.functional as F
from torch import nn


class Seg(nn.Module):
    def __init__(self):
        super().__init__()
        self.down, self.up = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(7, 2, 1)

    def forward(self, image, pixel_mask):
        low = F.max_pool2d(torch.relu(self.down(image)), 4)
        feats = torch.cat([image, F.interpolate(low, scale_factor=4.0, mode="nearest")], 1)
        return self.up(feats) * pixel_mask[:, None, :, :].float().mean(-1, keepdim=True)


def build():
    torch.manual_seed(0)
    return Seg()
"""


def test_cli_grammar_with_steps_bare_dims_and_kinds(tmp_path):
    import json

    from typer.testing import CliRunner

    from onnxship.cli import app

    (tmp_path / "seg.py").write_text(MODEL_FILE)
    r = CliRunner().invoke(
        app,
        [
            "export",
            "--model",
            str(tmp_path / "seg.py") + ":build",
            "--input",
            "image:batch=2 x 3 x height=16..32/4 x width=16..32/4:float32:image",
            "--input",
            "pixel_mask:batch x height x width:bool",
            "--strategy",
            "torchscript",
            "--out",
            str(tmp_path / "out"),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "out" / "seg.onnx.meta.json").read_text())
    image, mask = meta["inputs"]
    assert image["kind"] == "image" and [d.get("step") for d in image["dims"]][2:] == [4, 4]
    assert mask["kind"] == "mask" and mask["sample_shape"] == [2, 16, 16]
    assert all(p["height"] % 4 == 0 and p["width"] % 4 == 0 for p in meta["verified_dims"])

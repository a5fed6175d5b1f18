"""train: the examples/deeplog model, per-step JSON-lines log, a weights-only checkpoint with plain metadata."""

from __future__ import annotations

import json

import pytest
import torch

from onnxship._errors import ConfigError
from onnxship.recipes.deeplog import TrainConfig, train_deeplog


def test_training_log_lines(bgl_pipeline):
    t = bgl_pipeline.train
    lines = [json.loads(x) for x in t.log.read_text().splitlines()]
    assert len(lines) == t.steps == 40
    assert [x["step"] for x in lines] == list(range(1, 41))
    for x in lines:
        assert set(x) == {"step", "epoch", "loss", "grad_norm", "learning_rate"}
        assert x["loss"] > 0 and x["grad_norm"] > 0 and x["learning_rate"] == 1e-2
    assert lines[0]["loss"] == t.first_loss
    # 40 steps on the normal BGL windows: the loss falls well below chance level ln(vocab_size)
    assert t.final_loss < 0.6 * lines[0]["loss"]
    assert t.notes and "without alerts" in t.notes[0]


def test_checkpoint_is_plain(bgl_pipeline):
    t, b = bgl_pipeline.train, bgl_pipeline.build
    ckpt = torch.load(t.checkpoint, weights_only=True)
    assert ckpt["model_kwargs"] == {"vocab_size": b.vocab_size, "embed_dim": 8, "hidden": 16, "layers": 1}
    assert ckpt["vocab_size"] == b.vocab_size and ckpt["seq_len"] == 10 and ckpt["model_type"] == "deeplog"
    assert ckpt["state_dict"]["embedding.weight"].shape == (b.vocab_size, 8)


def test_checkpoint_rebuilds_through_the_spec_loader(bgl_pipeline):
    from onnxship.recipes.deeplog import default_model_spec
    from onnxship.spec import parse_model_spec

    loaded = parse_model_spec(default_model_spec(), checkpoint=bgl_pipeline.train.checkpoint).load()
    assert loaded.model.embedding.num_embeddings == bgl_pipeline.build.vocab_size
    assert loaded.checkpoint_meta["seq_len"] == 10


def test_vocab_and_sequences_must_match(bgl_pipeline, tmp_path):
    small = tmp_path / "vocab.json"
    small.write_text(json.dumps({"only one template": 0}))
    with pytest.raises(ConfigError, match="vocabulary has 1 entries"):
        train_deeplog(TrainConfig(bgl_pipeline.build.sequences, small, tmp_path / "m.pt", max_steps=1))
    assert not (tmp_path / "m.pt").exists()


def test_bad_config(tmp_path):
    with pytest.raises(ConfigError, match="hidden=0"):
        TrainConfig(tmp_path / "s", tmp_path / "v", hidden=0)
    with pytest.raises(ConfigError, match="train_on"):
        TrainConfig(tmp_path / "s", tmp_path / "v", train_on="alerts")

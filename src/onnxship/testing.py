"""Tiny real models and helpers for tests, examples and benchmarks.

This is a gateway module for torch: it imports torch at module level and is never imported by
``import onnxship``. Import it only where torch is installed (tests, benchmarks).
"""

from __future__ import annotations

import numpy as np
import torch  # noqa: TID253 - testing gateway, see the module docstring
from torch import nn

__all__ = [
    "DataDependentBranch",
    "DeepLogLSTM",
    "DictInputModel",
    "GRUTagger",
    "ShapeArithmetic",
    "SmallCNN",
    "SmallTransformer",
    "TupleOutputModel",
    "assert_outputs_close",
    "randomize_constant_init",
]


class DeepLogLSTM(nn.Module):
    """Embedding -> LSTM -> Linear over the last step (the DeepLog architecture, tiny)."""

    def __init__(self, vocab: int = 30, embed: int = 8, hidden: int = 16) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, vocab)

    def forward(self, input_sequence: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.embedding(input_sequence))
        return self.fc(h[:, -1, :])


class GRUTagger(nn.Module):
    """Per-step tags: output [batch, seq, tags] (the dynamo exporter once declared its seq dim static)."""

    def __init__(self, vocab: int = 20, hidden: int = 12, tags: int = 5) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, tags)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(self.embedding(tokens))
        return self.head(h)


class DictInputModel(nn.Module):
    """Two named inputs in an order different from how users usually list them; returns a tuple."""

    def __init__(self, vocab: int = 50, dim: int = 8) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.proj = nn.Linear(dim, 3)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.embedding(tokens) * mask.unsqueeze(-1).to(torch.float32)
        pooled = e.sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1).to(torch.float32)
        return self.proj(pooled), e


class TupleOutputModel(nn.Module):
    """Nested outputs ((a, b), c) flattened in order."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        return (self.a(x), self.b(x)), x.mean(dim=-1)


class ShapeArithmetic(nn.Module):
    """Uses float(x.shape[1]) in Python: TorchScript freezes it; torch.export specialises the dim."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = float(x.shape[1])
        return x.sum(dim=1) / scale


class DataDependentBranch(nn.Module):
    """A Python `if` on tensor values: dynamo cannot trace it, TorchScript records one branch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2.0
        return x - 100.0


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, classes),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.body(image)


class SmallTransformer(nn.Module):
    def __init__(
        self, vocab: int = 100, dim: int = 32, heads: int = 4, layers: int = 2, classes: int = 4
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=64, batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embedding(tokens)).mean(dim=1))


def randomize_constant_init(model: nn.Module, seed: int = 0) -> nn.Module:
    """Randomise BatchNorm statistics/affine so parity tests are not fooled by identity-initialised layers."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def assert_outputs_close(
    ref: dict[str, np.ndarray], got: dict[str, np.ndarray], atol: float = 1e-4, rtol: float = 1e-3
) -> None:
    """Assert two output dicts match name by name within allclose tolerances."""
    assert list(ref) == list(got), f"output names differ: {list(ref)} vs {list(got)}"
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], atol=atol, rtol=rtol, err_msg=name)

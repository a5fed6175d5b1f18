"""A DeepLog-style next-event model: Embedding -> LSTM -> Linear over a window of log-template ids.

Used by `make demo` and the README. ``ONNXSHIP_INPUTS`` / ``ONNXSHIP_METADATA`` are the defaults that
``onnxship export --model examples/deeplog/model.py:build_model`` uses when no ``--input`` is given.
"""

from __future__ import annotations

import torch
from torch import nn

VOCAB_SIZE = 30
SEQ_LEN = 10

ONNXSHIP_INPUTS = [f"input_sequence:batch=2..64 x seq={SEQ_LEN}..64:int64:0..{VOCAB_SIZE}"]
ONNXSHIP_OUTPUT_NAMES = ["predictions"]
ONNXSHIP_METADATA = {
    "model_type": "deeplog",
    "vocab_size": VOCAB_SIZE,
    "seq_len": SEQ_LEN,
    "notes": "ONNX model supports dynamic sequence lengths via dynamic_axes. seq_len is the recommended value "
    "from training.",
}


class DeepLog(nn.Module):
    """Predicts the next log template id from the previous ``seq_len`` ids."""

    def __init__(
        self, vocab_size: int = VOCAB_SIZE, embed_dim: int = 32, hidden: int = 64, layers: int = 2
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=layers, batch_first=True)
        self.fc = nn.Linear(hidden, vocab_size)

    def forward(self, input_sequence: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.embedding(input_sequence))
        return self.fc(h[:, -1, :])


def build_model(
    vocab_size: int = VOCAB_SIZE, embed_dim: int = 32, hidden: int = 64, layers: int = 2
) -> DeepLog:
    torch.manual_seed(0)
    return DeepLog(vocab_size, embed_dim, hidden, layers)

"""A small MSCRED: conv encoder -> ConvLSTM over the window -> deconv decoder, plus the residual anomaly score.

The ConvLSTM is a Python loop over the ``window`` steps, so the exported graph unrolls it: the window is static in
the ONNX model (recorded in its metadata); the batch dim stays dynamic.

DO NOT import torch at module level: the factory imports it and builds the classes inside.
"""

from __future__ import annotations

from typing import Any

__all__ = ["INPUT_NAME", "OUTPUT_NAMES", "build_mscred"]

INPUT_NAME = "signatures"
OUTPUT_NAMES = ("reconstruction", "score")


def build_mscred(scales: int = 3, features: int = 8, window: int = 5, hidden: int = 16) -> Any:
    """``signatures [N, window, scales, F, F]`` -> ``reconstruction [N, scales, F, F]`` of the last step and
    ``score [N]`` = mean squared residual of that reconstruction (MSCRED's anomaly score)."""
    import torch
    from torch import nn

    if features % 2:
        raise ValueError(f"features={features} must be even (one stride-2 encoder stage)")

    class ConvLSTMCell(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.gates = nn.Conv2d(2 * channels, 4 * channels, 3, 1, 1)

        def forward(
            self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c

    class Mscred(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.window = window
            self.encoder = nn.Sequential(
                nn.Conv2d(scales, hidden, 3, 1, 1), nn.SELU(), nn.Conv2d(hidden, hidden, 3, 2, 1), nn.SELU()
            )
            self.cell = ConvLSTMCell(hidden)
            self.decoder = nn.Sequential(
                nn.ConvTranspose2d(hidden, hidden, 4, 2, 1), nn.SELU(), nn.Conv2d(hidden, scales, 3, 1, 1)
            )

        def forward(self, signatures: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            n = signatures.shape[0]
            feats = self.encoder(signatures.flatten(0, 1))  # [N * window, hidden, F/2, F/2]
            feats = feats.reshape(n, self.window, *feats.shape[1:])
            h = torch.zeros_like(feats[:, 0])
            c = torch.zeros_like(h)
            for t in range(self.window):  # unrolled at export: the window is static
                h, c = self.cell(feats[:, t], h, c)
            recon = self.decoder(h)
            score = ((recon - signatures[:, -1]) ** 2).mean(dim=(1, 2, 3))
            return recon, score

    return Mscred()

"""Fixtures for optimize tests: a model whose INT8 variant fails its gate unless one node stays in float32."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def outlier_export(tmp_path_factory: pytest.TempPathFactory):
    """Linear -> ReLU -> Linear where the first layer holds one weight 1000x the others.

    Per-tensor INT8 rounds every other weight of that layer to zero, so the all-INT8 model decides differently;
    its bias keeps the outlier channel dead, so the second layer's activations stay easy to quantize. Keeping the
    first layer in float32 makes the gate pass.
    """
    import torch
    from torch import nn

    import onnxship

    class Outlier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(32, 64)
            self.b = nn.Linear(64, 10)
            with torch.no_grad():
                self.a.weight[0, 0] = 200.0
                self.a.bias[0] = -1e4

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.a(x)))

    torch.manual_seed(0)
    model = Outlier().eval()
    out = tmp_path_factory.mktemp("outlier")
    result = onnxship.export(
        model, inputs=["x:batch=4..64 x 32:float32"], out=out, name="outlier", strategy="torchscript"
    )
    return model, result

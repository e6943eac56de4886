"""A plain VGG-style net for 1x28x28 images whose layers are far from equally redundant (16 channels at 28x28,
128 at 3x3), so how a method allocates widths across layers matters. One of the baselines of
benchmarks/peers.py, whose cached trained state dicts load into it: its module structure and parameter names
must stay as they are.
"""

from __future__ import annotations

import torch
from torch import nn


class VGG(nn.Module):
    """Seven 3x3 conv-BN-ReLU layers (16, 16 | 32, 32 | 64, 64 | 128 channels at 28, 14, 7 and 3 pixels),
    global average pool, linear head: no residual ties, widths growing much faster than the information (each
    stage costs about the same FLOPs, but the parameters pile up in the last layers)."""

    WIDTHS = ((16, 16), (32, 32), (64, 64), (128,))

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        inputs = 1
        for stage, widths in enumerate(self.WIDTHS):
            if stage:
                layers.append(nn.MaxPool2d(2))
            for width in widths:
                layers += [nn.Conv2d(inputs, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
                inputs = width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(inputs, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))

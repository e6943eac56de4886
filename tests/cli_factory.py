"""A tiny model the CLI tests build with --factory tests.cli_factory:build (importable from the repo root)."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """conv-bn-relu, conv, pool, linear: two channel groups for 1x8x8 inputs."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc = nn.Linear(2 * width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return self.fc(x.mean(dim=(2, 3)))


def build() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


def build_wide() -> TinyNet:
    """The same layers, twice as wide: a state dict of `build` does not fit it."""
    return TinyNet(width=8).eval()


def not_a_model() -> str:
    return "not a model"

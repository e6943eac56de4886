"""He et al.'s CIFAR ResNet-20 for 1x28x28 images, built from the demo network's basic block: residual adds
tie most widths together and every layer is about equally redundant. One of the baselines of
benchmarks/peers.py, whose cached trained state dicts load into it: its module structure and parameter names
must stay as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from cascomp.zoo.demo import DemoBlock


class ResNet20(nn.Module):
    """He et al.'s CIFAR ResNet-20 (3 stages x 3 blocks, 16/32/64 channels) for 1x28x28 inputs."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        stages, inputs = [], 16
        for channels, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = [DemoBlock(inputs, channels, stride)] + [DemoBlock(channels, channels, 1) for _ in range(2)]
            stages.append(nn.Sequential(*blocks))
            inputs = channels
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stages(self.stem(x)).mean(dim=(2, 3)))

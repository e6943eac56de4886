"""The demo network: a small ResNet-style CNN for 1x28x28 images and 10 classes (`cascomp demo-model` saves
it).

The residual adds tie each stage's block outputs into one channel group; the inner convolutions of every block
are groups of their own.
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_SHAPE = (1, 1, 28, 28)
NUM_CLASSES = 10


class DemoBlock(nn.Module):
    """Two 3x3 convolutions plus a shortcut (a strided 1x1 convolution when the shape changes)."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class DemoNet(nn.Module):
    """Stem, three stages of 16, 32 and 64 channels (28, 14 and 7 pixels), average pool, linear head."""

    def __init__(self, num_classes: int = NUM_CLASSES, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layer1 = nn.Sequential(DemoBlock(16, 16), DemoBlock(16, 16))
        self.layer2 = DemoBlock(16, 32, stride=2)
        self.layer3 = DemoBlock(32, 64, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def demo_model(seed: int = 0, *, num_classes: int = NUM_CLASSES, in_channels: int = 1) -> DemoNet:
    """The demo network in eval mode, the same weights for a given seed (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DemoNet(num_classes, in_channels)
        # Fresh BatchNorm is the identity in eval mode; real statistics make pruning mistakes visible.
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()

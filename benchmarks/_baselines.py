"""The benchmarks' baseline networks for 1x28x28 images, and their cached training.

`resnet20`: He et al.'s CIFAR ResNet-20, where residual adds tie most widths together and every layer is about
equally redundant. `vgg`: a plain VGG-style net whose layers are far from equally redundant (16 channels at
28x28, 128 at 3x3), so how a method allocates widths across layers matters.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from cascomp.demo import DemoBlock, train_demo_model  # the demo's basic block and training recipe


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

    def forward(self, x):
        return self.fc(self.stages(self.stem(x)).mean(dim=(2, 3)))


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

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


BASELINES = {"resnet20": ResNet20, "vgg": VGG}
INPUT = (1, 1, 28, 28)


def baseline(name: str, data, *, epochs: int, cache: Path, log=print) -> nn.Module:
    """The trained baseline `name`: loaded from `cache` when there, else trained (seed 0, SGD with cosine decay,
    lr 0.05) on `data` for `epochs` epochs and saved there atomically."""
    model = BASELINES[name]()
    if cache.is_file():
        model.load_state_dict(torch.load(cache, weights_only=True))
        return model.eval()
    torch.manual_seed(0)
    train_demo_model(model, data, epochs, lr=0.05, log=lambda line: log(line), label=f"baseline {name}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=cache.parent, prefix=cache.name, suffix=".part")
    os.close(handle)
    torch.save(model.state_dict(), temporary)
    os.replace(temporary, cache)
    return model.eval()

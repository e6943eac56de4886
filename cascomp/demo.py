"""A small ResNet-style CNN for 1x28x28 images and 10 classes, so every command can be tried at once.

`cascomp demo-model -o demo.pt` saves it; `cascomp analyze demo.pt --input-shape 1,1,28,28` then shows
its channel groups: the residual adds tie each stage's block outputs into one group, the inner
convolutions of every block are groups of their own.
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn

from cascomp.export.atomic import atomic_output, check_output_path
from cascomp.errors import ConfigError, DataError

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


def train_demo_model(model: nn.Module, data, epochs: int, *, lr: float = 0.05, log=print,
                     label: str = "demo model") -> float:
    """Train `model` on `data` (a cascomp DataBundle) with SGD and cosine decay; returns validation top-1."""
    from cascomp.search.driver import evaluate  # the demo network itself needs none of the compiler

    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    total = max(epochs * len(data.train), 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    accuracy = evaluate(model, data.val)
    for epoch in range(epochs):
        model.train()
        for x, y in data.train:
            if len(y) and int(y.max()) >= data.num_classes:  # a python: factory's later batches go unchecked
                raise DataError(f"{data.name} yields label {int(y.max())}, but the data has {data.num_classes} "
                                f"classes (0..{data.num_classes - 1}); fix the labels or the data's classes")
            loss = nn.functional.cross_entropy(model(x), y)
            if not torch.isfinite(loss):  # saving a NaN model as "trained" would hide it
                bad_input = x.is_floating_point() and not bool(torch.isfinite(x).all())
                cause = "a batch holds a non-finite input (NaN or inf)" if bad_input else "training diverged"
                raise DataError(f"training the demo model on {data.name}: the loss became {float(loss)} in epoch "
                                f"{epoch + 1} ({cause}); check the data's values, or lower lr")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        accuracy = evaluate(model, data.val)
        log(f"{label}: epoch {epoch + 1}/{epochs}, validation top-1 {accuracy:.4f}")
    model.eval()
    return accuracy


def save_demo_model(path: str | os.PathLike, *, force: bool = False, data=None, epochs: int = 0,
                    log=print) -> DemoNet:
    """torch.save the demo network to `path`, whole or not at all; refuses an existing file without force.
    With `data` (a DataBundle) it is first trained for `epochs` epochs."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ConfigError(f"epochs must be a non-negative integer, got {epochs!r}")
    if data is not None and len(data.input_shape) != 3:
        raise ConfigError(f"the demo model is a CNN for images shaped (channels, height, width), but {data.name} "
                          f"has samples of shape {tuple(data.input_shape)}; train it on image data")
    check_output_path(path, force=force)
    model = demo_model(num_classes=data.num_classes if data is not None else NUM_CLASSES,
                       in_channels=data.input_shape[0] if data is not None else 1)
    if data is not None and epochs > 0:
        torch.manual_seed(0)
        train_demo_model(model, data, epochs, log=log)
    with atomic_output(path, force=force) as temporary:
        torch.save(model, temporary)
    return model

"""EfficientNet: MBConv blocks with squeeze-excite and stochastic depth, a tiny net of three and the full-size
EfficientNet-B0 (Tan & Le 2019: MBConv stages with squeeze-excite, SiLU, stochastic depth up to 0.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cascomp.zoo.layers import ClassifierHead, StochasticDepth


class SqueezeExciteSigmoid(nn.Module):
    """EfficientNet squeeze-excite: SiLU inside, sigmoid gate, width reduced relative to the block input."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.activation = nn.SiLU()
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = self.expand(self.activation(self.reduce(scale)))
        return x * torch.sigmoid(scale)


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-excite and stochastic depth on the residual branch."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand_ratio: int,
        kernel_size: int,
        stride: int,
        drop_probability: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.SiLU()]
        layers += [
            nn.Conv2d(hidden, hidden, kernel_size, stride, kernel_size // 2, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.SiLU(),
            SqueezeExciteSigmoid(hidden, max(1, in_channels // 4)),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(drop_probability)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_residual:
            out = x + self.stochastic_depth(out)
        return out


class EfficientNetMBConv(nn.Module):
    """Stem, three MBConv blocks (one without expansion), 1x1 head convolution, classifier."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.SiLU())
        self.blocks = nn.Sequential(
            MBConv(16, 16, expand_ratio=1, kernel_size=3, stride=1, drop_probability=0.0),
            MBConv(16, 24, expand_ratio=2, kernel_size=3, stride=2, drop_probability=0.05),
            MBConv(24, 24, expand_ratio=2, kernel_size=5, stride=1, drop_probability=0.1),
        )
        self.last_conv = nn.Sequential(nn.Conv2d(24, 32, 1, bias=False), nn.BatchNorm2d(32), nn.SiLU())
        self.head = ClassifierHead(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.last_conv(self.blocks(self.stem(x))))


_B0_STAGES = (  # expand ratio, kernel, stride, output channels, repeats
    (1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1),
)


class EfficientNetB0(nn.Module):
    """Stride-2 stem, the seven MBConv stages of _B0_STAGES, 1x1 head convolution to 1280, classifier."""

    def __init__(self, num_classes: int = 1000, drop_path: float = 0.2) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.SiLU())
        total, blocks, channels = sum(stage[-1] for stage in _B0_STAGES), [], 32
        for expand, kernel, stride, out_channels, repeats in _B0_STAGES:
            for index in range(repeats):
                probability = drop_path * len(blocks) / total
                blocks.append(MBConv(channels, out_channels, expand, kernel, stride if index == 0 else 1, probability))
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(channels, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.SiLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Dropout(0.2))
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.blocks(self.stem(x))))


def efficientnet_b0(num_classes: int = 1000) -> EfficientNetB0:
    """EfficientNet-B0: 16 MBConv blocks, 1280 head features, about 5.29 M parameters."""
    return EfficientNetB0(num_classes)

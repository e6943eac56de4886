"""MobileNetV2 (inverted residuals, ReLU6) and MobileNetV3 (squeeze-excite with hardsigmoid, Hardswish)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InvertedResidual(nn.Module):
    """Expand, depthwise, project: the depthwise convolution ties its input and output channels one to one."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [
                nn.Conv2d(in_channels, hidden, 1, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU6(inplace=True),
            ]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            # Linear bottleneck: no activation after the projection.
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """Inverted residuals with and without expansion, with and without residual, ReLU6 throughout."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(inplace=True)
        )
        self.blocks = nn.Sequential(
            InvertedResidual(16, 8, stride=1, expand_ratio=1),
            InvertedResidual(8, 16, stride=2, expand_ratio=4),
            InvertedResidual(16, 16, stride=1, expand_ratio=2),
            InvertedResidual(16, 24, stride=2, expand_ratio=2),
            InvertedResidual(24, 24, stride=1, expand_ratio=1),
        )
        self.last_conv = nn.Sequential(
            nn.Conv2d(24, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(inplace=True)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.last_conv(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


class SqueezeExciteHardSigmoid(nn.Module):
    """Squeeze-excite gate: the broadcast multiply ties the gate's output channels to the gated tensor."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.relu = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = self.expand(self.relu(self.reduce(scale)))
        return x * F.hardsigmoid(scale)


class MobileNetV3Block(nn.Module):
    """Optional expansion, k x k depthwise, optional squeeze-excite, projection, optional residual."""

    def __init__(
        self,
        in_channels: int,
        expanded: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        use_squeeze_excite: bool,
        activation: type[nn.Module],
    ) -> None:
        super().__init__()
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers += [
                nn.Conv2d(in_channels, expanded, 1, bias=False),
                nn.BatchNorm2d(expanded),
                activation(),
            ]
        layers += [
            nn.Conv2d(expanded, expanded, kernel_size, stride, kernel_size // 2, groups=expanded, bias=False),
            nn.BatchNorm2d(expanded),
            activation(),
        ]
        if use_squeeze_excite:
            layers.append(SqueezeExciteHardSigmoid(expanded, max(8, expanded // 4)))
        layers += [nn.Conv2d(expanded, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileNetV3(nn.Module):
    """Depthwise blocks with squeeze-excite gates and Hardswish; a linear-Hardswish-linear classifier."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.blocks = nn.Sequential(
            # No expansion convolution: squeeze-excite gates the stem output's channels directly.
            MobileNetV3Block(16, 16, 16, 3, 1, True, nn.ReLU),
            MobileNetV3Block(16, 32, 24, 3, 2, False, nn.Hardswish),
            MobileNetV3Block(24, 32, 24, 5, 1, True, nn.Hardswish),
        )
        self.last_conv = nn.Sequential(nn.Conv2d(24, 32, 1, bias=False), nn.BatchNorm2d(32), nn.Hardswish())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(32, 32), nn.Hardswish(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.last_conv(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))

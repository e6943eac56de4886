"""ConvNeXt: depthwise 7x7, channels-last LayerNorm and Linear, layer scale; a tiny two-stage net and the
full-size ConvNeXt-T (Liu et al. 2022: depths (3, 3, 9, 3), widths (96, 192, 384, 768))."""

from __future__ import annotations

import torch
from torch import nn


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over channels of an NCHW tensor, done by permuting to channels-last and back."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, then a channels-last LayerNorm-MLP with layer scale: channel indices must be followed
    through permutes into Linear features and into a per-channel parameter."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.pointwise1 = nn.Linear(channels, 4 * channels)
        self.activation = nn.GELU()
        self.pointwise2 = nn.Linear(4 * channels, channels)
        self.gamma = nn.Parameter(1e-6 * torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        x = self.depthwise(x)
        x = x.permute(0, 2, 3, 1)
        x = self.pointwise2(self.activation(self.pointwise1(self.norm(x))))
        x = self.gamma * x
        x = x.permute(0, 3, 1, 2)
        return residual + x


class ConvNeXt(nn.Module):
    """Patchify stem, two stages of ConvNeXt blocks with a LayerNorm + strided-convolution downsample."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, int] = (16, 32)) -> None:
        super().__init__()
        first, second = widths
        self.stem = nn.Sequential(nn.Conv2d(3, first, 4, stride=4), ChannelsFirstLayerNorm(first))
        self.stage1 = nn.Sequential(ConvNeXtBlock(first), ConvNeXtBlock(first))
        self.downsample = nn.Sequential(ChannelsFirstLayerNorm(first), nn.Conv2d(first, second, 2, stride=2))
        self.stage2 = nn.Sequential(ConvNeXtBlock(second))
        self.norm = nn.LayerNorm(second, eps=1e-6)
        self.head = nn.Linear(second, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.downsample(self.stage1(self.stem(x))))
        return self.head(self.norm(x.mean((-2, -1))))


class ConvNeXtTiny(nn.Module):
    """Patchify stem, four stages of ConvNeXt blocks with downsampling between them, LayerNorm, head."""

    def __init__(self, num_classes: int = 1000, depths: tuple[int, ...] = (3, 3, 9, 3),
                 widths: tuple[int, ...] = (96, 192, 384, 768)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 4, stride=4), ChannelsFirstLayerNorm(widths[0])]
        for index, (depth, width) in enumerate(zip(depths, widths)):
            if index:  # downsampling between stages: channels-first LayerNorm, 2x2 stride-2 convolution
                layers += [ChannelsFirstLayerNorm(widths[index - 1]), nn.Conv2d(widths[index - 1], width, 2, stride=2)]
            layers += [ConvNeXtBlock(width) for _ in range(depth)]
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(widths[-1], eps=1e-6)
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.features(x).mean((-2, -1))))


def convnext_tiny(num_classes: int = 1000) -> ConvNeXtTiny:
    """ConvNeXt-T: 18 blocks, about 28.6 M parameters."""
    return ConvNeXtTiny(num_classes)

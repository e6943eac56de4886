"""ResNets: basic and bottleneck blocks (and the full-size ResNet-50), pre-activation blocks, ResNeXt blocks
with a grouped convolution."""

from __future__ import annotations

import torch
from torch import nn

from cascomp.zoo.layers import ClassifierHead, conv_bn_relu


class BasicBlock(nn.Module):
    """Two 3x3 convolutions plus a residual: the add ties the block output to its input channels."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand: inner widths are free, the expanded width is tied to the residual."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        # Stride on the 3x3 convolution, as in torchvision's "ResNet v1.5".
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Stem, stages of residual blocks, classifier head.

    ``imagenet_stem`` selects the 7x7 stride-2 convolution plus max pool of ImageNet ResNets; otherwise a
    CIFAR-style 3x3 stride-1 stem is used so tiny inputs keep their resolution.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        blocks_per_stage: list[int],
        stage_widths: list[int],
        stem_width: int,
        num_classes: int = 10,
        imagenet_stem: bool = False,
    ) -> None:
        super().__init__()
        if imagenet_stem:
            self.stem = nn.Sequential(
                nn.Conv2d(3, stem_width, 7, 2, 3, bias=False),
                nn.BatchNorm2d(stem_width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        else:
            self.stem = conv_bn_relu(3, stem_width)
        stages = []
        in_channels = stem_width
        for stage_index, (num_blocks, width) in enumerate(zip(blocks_per_stage, stage_widths)):
            blocks = []
            for block_index in range(num_blocks):
                stride = 2 if stage_index > 0 and block_index == 0 else 1
                blocks.append(block(in_channels, width, stride))
                in_channels = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


class PreActBlock(nn.Module):
    """Pre-activation block: BatchNorm precedes the convolution, so the residual stream is never normalised
    in place and the projection shortcut consumes the normalised activation."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Conv2d(in_channels, channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """Pre-activation ResNet: a final BatchNorm-ReLU sits on the summed residual stream."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.blocks = nn.Sequential(PreActBlock(16, 16), PreActBlock(16, 16), PreActBlock(16, 32, stride=2))
        self.final_bn = nn.BatchNorm2d(32)
        self.relu = nn.ReLU()
        self.head = ClassifierHead(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(self.relu(self.final_bn(x)))


class ResNeXtBlock(nn.Module):
    """1x1, grouped 3x3 (groups=4, not depthwise), 1x1, residual: pruning must stay balanced across groups."""

    def __init__(
        self, in_channels: int, bottleneck: int, out_channels: int, stride: int, groups: int = 4
    ) -> None:
        super().__init__()
        self.reduce = conv_bn_relu(in_channels, bottleneck, 1)
        self.grouped = conv_bn_relu(bottleneck, bottleneck, 3, stride, groups=groups)
        self.expand = nn.Sequential(
            nn.Conv2d(bottleneck, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.expand(self.grouped(self.reduce(x))) + identity)


class GroupedConvNet(nn.Module):
    """An identity ResNeXt block followed by a strided one with a projection shortcut."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, 32)
        self.blocks = nn.Sequential(ResNeXtBlock(32, 16, 32, stride=1), ResNeXtBlock(32, 16, 32, stride=2))
        self.head = ClassifierHead(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def resnet50(num_classes: int = 1000) -> ResNet:
    """ImageNet ResNet-50 (stages [3, 4, 6, 3], widths 64-512, expansion 4; about 25.6 M parameters) for
    224x224 input."""
    return ResNet(Bottleneck, [3, 4, 6, 3], [64, 128, 256, 512], 64, num_classes, imagenet_stem=True)


def resnet50_deep(num_classes: int = 1000) -> ResNet:
    """ResNet-50 with twice as many blocks per stage ([6, 8, 12, 6]), for checking that compile time scales
    linearly with depth."""
    return ResNet(Bottleneck, [6, 8, 12, 6], [64, 128, 256, 512], 64, num_classes, imagenet_stem=True)

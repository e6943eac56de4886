"""DenseNets: a tiny one of two dense blocks, and the full-size DenseNet-121 (Huang et al. 2017: growth 32,
blocks (6, 12, 24, 16), bottleneck 4x, compression 0.5)."""

from __future__ import annotations

import torch
from torch import nn

from cascomp.zoo.layers import ClassifierHead


class DenseLayer(nn.Module):
    """BatchNorm-ReLU-convolution producing ``growth`` new channels from everything concatenated so far."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(in_channels, growth, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.relu(self.bn(x)))


class DenseBlock(nn.Module):
    """Growing concatenation: every layer's input is a concatenation whose prefix other layers also read."""

    def __init__(self, num_layers: int, in_channels: int, growth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + index * growth, growth) for index in range(num_layers)
        )
        self.out_channels = in_channels + num_layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            new_features = layer(x)
            x = torch.cat([x, new_features], 1)
        return x


class DenseNet(nn.Module):
    """Two dense blocks joined by a transition (BatchNorm-ReLU-1x1 convolution, average pool)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.block1 = DenseBlock(3, 16, growth=8)
        transition_channels = self.block1.out_channels // 2
        self.transition = nn.Sequential(
            nn.BatchNorm2d(self.block1.out_channels),
            nn.ReLU(),
            nn.Conv2d(self.block1.out_channels, transition_channels, 1, bias=False),
            nn.AvgPool2d(2),
        )
        self.block2 = DenseBlock(2, transition_channels, growth=8)
        self.final = nn.Sequential(nn.BatchNorm2d(self.block2.out_channels), nn.ReLU())
        self.head = ClassifierHead(self.block2.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.transition(self.block1(self.stem(x))))
        return self.head(self.final(x))


class DenseBottleneckLayer(nn.Module):
    """BN-ReLU-1x1 conv to 4 * growth, BN-ReLU-3x3 conv to growth, on the concatenation of all earlier
    features: each layer concatenates the list itself, as the reference implementations do."""

    def __init__(self, in_channels: int, growth: int, bottleneck: int = 4) -> None:
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, bottleneck * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(bottleneck * growth), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bottleneck * growth, growth, 3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))
        return self.conv2(self.relu2(self.norm2(x)))


class DenseStage(nn.Module):
    """A dense block of bottleneck layers: its output concatenates the input and every layer's growth."""

    def __init__(self, num_layers: int, in_channels: int, growth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseBottleneckLayer(in_channels + i * growth, growth) for i in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


def _transition(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
                         nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.AvgPool2d(2, 2))


class DenseNet121(nn.Module):
    """7x7 stem and max pool, four dense stages joined by transitions, final BN-ReLU, pool, classifier."""

    def __init__(self, num_classes: int = 1000, growth: int = 32, blocks: tuple[int, ...] = (6, 12, 24, 16)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                                   nn.MaxPool2d(3, 2, 1)]
        channels = 64
        for index, num_layers in enumerate(blocks):
            layers.append(DenseStage(num_layers, channels, growth))
            channels += num_layers * growth
            if index < len(blocks) - 1:
                layers.append(_transition(channels, channels // 2))
                channels //= 2
        layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def densenet121(num_classes: int = 1000) -> DenseNet121:
    """DenseNet-121: 121 weighted layers, 1024 features before the classifier, about 7.98 M parameters."""
    return DenseNet121(num_classes)

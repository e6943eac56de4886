"""Small models of single patterns: a plain MLP, pixel (un)shuffle, several inputs, GroupNorm/InstanceNorm."""

from __future__ import annotations

import torch
from torch import nn

from cascomp.zoo.layers import ClassifierHead, conv_bn_relu


class MLP(nn.Module):
    """Chain of linear layers: the simplest producer-consumer dependency (out features -> in features)."""

    def __init__(self, in_features: int = 20, hidden: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden // 2),
            nn.ReLU(),
            nn.Linear(hidden // 2, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class PixelShuffleNet(nn.Module):
    """PixelShuffle folds groups of 4 channels into space and PixelUnshuffle unfolds them again, so channels
    are only prunable in aligned groups across these ops; a residual spans the whole round trip."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, 16)
        self.before_shuffle = nn.Conv2d(16, 32, 3, 1, 1)
        self.shuffle = nn.PixelShuffle(2)
        self.high_resolution = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU())
        self.unshuffle = nn.PixelUnshuffle(2)
        self.after_unshuffle = nn.Conv2d(32, 16, 3, 1, 1)
        self.head = ClassifierHead(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.shuffle(self.before_shuffle(x))
        y = self.unshuffle(self.high_resolution(y))
        x = x + self.after_unshuffle(y)
        return self.head(torch.relu(x))


class MultiInputNet(nn.Module):
    """Image and vector inputs plus a keyword argument with a default, fused by concatenating pooled image
    features with projected vector features: the head's input splits into two producers."""

    def __init__(self, vector_features: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.image_features = nn.Sequential(conv_bn_relu(3, 16), conv_bn_relu(16, 16, stride=2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.vector_features = nn.Linear(vector_features, 16)
        self.head = nn.Linear(32, num_classes)

    def forward(self, image: torch.Tensor, vector: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        image_features = torch.flatten(self.pool(self.image_features(image)), 1)
        vector_features = torch.relu(self.vector_features(vector)) * scale
        return self.head(torch.cat([image_features, vector_features], dim=1))


class GroupNormNet(nn.Module):
    """GroupNorm(4, C) statistics couple channels within a group, so pruning must keep groups even;
    InstanceNorm2d with affine parameters is per channel. A residual ties both to the stem."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.GroupNorm(4, 16), nn.ReLU())
        self.conv1 = nn.Conv2d(16, 16, 3, 1, 1, bias=False)
        self.norm1 = nn.GroupNorm(4, 16)
        self.conv2 = nn.Conv2d(16, 16, 3, 1, 1, bias=False)
        self.norm2 = nn.InstanceNorm2d(16, affine=True)
        self.relu = nn.ReLU()
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1, bias=False), nn.GroupNorm(4, 32), nn.ReLU())
        self.head = ClassifierHead(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        x = self.relu(x + out)
        return self.head(self.down(x))

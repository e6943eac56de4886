"""Inception: four-branch blocks joined by channel concatenations, and a concatenation of concatenations."""

from __future__ import annotations

import torch
from torch import nn

from cascomp.zoo.layers import ClassifierHead, conv_bn_relu


class InceptionBlock(nn.Module):
    """Four parallel branches joined by a channel concatenation: each branch owns a slice of the output."""

    def __init__(
        self,
        in_channels: int,
        one_by_one: int,
        three_reduce: int,
        three: int,
        double_three_reduce: int,
        double_three: int,
        pool_projection: int,
    ) -> None:
        super().__init__()
        self.branch_one_by_one = conv_bn_relu(in_channels, one_by_one, 1)
        self.branch_three = nn.Sequential(
            conv_bn_relu(in_channels, three_reduce, 1), conv_bn_relu(three_reduce, three, 3)
        )
        self.branch_double_three = nn.Sequential(
            conv_bn_relu(in_channels, double_three_reduce, 1),
            conv_bn_relu(double_three_reduce, double_three, 3),
            conv_bn_relu(double_three, double_three, 3),
        )
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(3, 1, 1), conv_bn_relu(in_channels, pool_projection, 1)
        )
        self.out_channels = one_by_one + three + double_three + pool_projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [
            self.branch_one_by_one(x),
            self.branch_three(x),
            self.branch_double_three(x),
            self.branch_pool(x),
        ]
        return torch.cat(branches, dim=1)


class InceptionNet(nn.Module):
    """Two inception blocks, the second consuming the first's concatenation, then a concatenation of both
    concatenations, so channel slices must be tracked through nested concatenations."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, 16)
        self.inception1 = InceptionBlock(16, 8, 8, 8, 4, 8, 8)
        self.inception2 = InceptionBlock(self.inception1.out_channels, 8, 8, 12, 4, 8, 4)
        merged = self.inception1.out_channels + self.inception2.out_channels
        self.merge = conv_bn_relu(merged, 32, 1)
        self.head = ClassifierHead(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        first = self.inception1(x)
        second = self.inception2(first)
        merged = torch.cat([first, second], dim=1)
        return self.head(self.merge(merged))

"""UNet: encoder-decoder with transposed-convolution upsampling and skip concatenations."""

from __future__ import annotations

import torch
from torch import nn

from cascomp.zoo.layers import conv_bn_relu


class DoubleConv(nn.Sequential):
    """Two 3x3 convolution-BatchNorm-ReLU layers at constant resolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(conv_bn_relu(in_channels, out_channels), conv_bn_relu(out_channels, out_channels))


class UNet(nn.Module):
    """Encoder-decoder with transposed-convolution upsampling and skip concatenations: encoder channels are
    read both by the next encoder stage and by a decoder concatenation. Outputs a segmentation map."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.encoder1 = DoubleConv(3, 8)
        self.encoder2 = DoubleConv(8, 16)
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(16, 32)
        self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.decoder2 = DoubleConv(32, 16)
        self.up1 = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.decoder1 = DoubleConv(16, 8)
        self.output = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip1 = self.encoder1(x)
        skip2 = self.encoder2(self.pool(skip1))
        x = self.bottleneck(self.pool(skip2))
        x = self.decoder2(torch.cat([self.up2(x), skip2], dim=1))
        x = self.decoder1(torch.cat([self.up1(x), skip1], dim=1))
        return self.output(x)

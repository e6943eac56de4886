"""Full-size ImageNet families at 224x224, for timing the compiler against peers (benchmarks/coverage.py).

Written from the published architectures (layer counts, widths, kernel sizes, normalisation and activation
choices match; parameter counts are given per builder), not copied from a model library, so the benchmark
needs neither timm nor torchvision. Every builder returns a model in eval mode with randomised
normalisation, as the zoo's do. These are too big for the default test run and are not in ZOO.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tests.models import (
    ChannelsFirstLayerNorm,
    ConvNeXtBlock,
    MBConv,
    TransformerMlp,
    _prepare,
    resnet50,
)

__all__ = ["BUILDERS", "convnext_tiny", "densenet121", "efficientnet_b0", "resnet50", "vit_b16"]


# -- DenseNet-121 (Huang et al. 2017): growth 32, blocks (6, 12, 24, 16), bottleneck 4x, compression 0.5 --
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


def densenet121(num_classes: int = 1000) -> nn.Module:
    """DenseNet-121: 121 weighted layers, 1024 features before the classifier, about 7.98 M parameters."""
    return _prepare(DenseNet121(num_classes))


# -- EfficientNet-B0 (Tan & Le 2019): MBConv stages with squeeze-excite, SiLU, stochastic depth up to 0.2 --
_B0_STAGES = (  # expand ratio, kernel, stride, output channels, repeats
    (1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1),
)


class EfficientNetB0(nn.Module):
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


def efficientnet_b0(num_classes: int = 1000) -> nn.Module:
    """EfficientNet-B0: 16 MBConv blocks, 1280 head features, about 5.29 M parameters."""
    return _prepare(EfficientNetB0(num_classes))


# -- ViT-B/16 (Dosovitskiy et al. 2021): 12 blocks, width 768, 12 heads, MLP 3072, class token ------------
class VitAttention(nn.Module):
    """Fused qkv split by `unbind`, scaled_dot_product_attention, heads merged with a -1 width: the form
    Torch-Pruning's ViT example patches timm's attention into, so both tools prune the same module."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, -1))


class VitBlock(nn.Module):
    """Pre-norm block (LayerNorm eps 1e-6, as the reference weights use)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = VitAttention(dim, heads)
        self.mlp = TransformerMlp(dim, mlp_ratio * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VitB16(nn.Module):
    def __init__(self, num_classes: int = 1000, image: int = 224, patch: int = 16, dim: int = 768, depth: int = 12,
                 heads: int = 12) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, (image // patch) ** 2 + 1, dim))
        self.blocks = nn.Sequential(*(VitBlock(dim, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def vit_b16(num_classes: int = 1000) -> nn.Module:
    """ViT-B/16 at 224x224 (197 tokens): about 86.6 M parameters."""
    return _prepare(VitB16(num_classes))


# -- ConvNeXt-T (Liu et al. 2022): depths (3, 3, 9, 3), widths (96, 192, 384, 768), layer scale ------------
class ConvNeXtTiny(nn.Module):
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


def convnext_tiny(num_classes: int = 1000) -> nn.Module:
    """ConvNeXt-T: 18 blocks, about 28.6 M parameters."""
    return _prepare(ConvNeXtTiny(num_classes))


# name -> (builder, the final classifier's attribute path: the layer a peer pruner must be told to leave)
BUILDERS = {
    "resnet50": (resnet50, "head.fc"),
    "densenet121": (densenet121, "classifier"),
    "efficientnet_b0": (efficientnet_b0, "classifier"),
    "vit_b16": (vit_b16, "head"),
    "convnext_tiny": (convnext_tiny, "head"),
}

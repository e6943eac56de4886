"""Test-model zoo: tiny, fx-traceable models covering the channel-dependency patterns a pruner must handle.

Every model in ``ZOO`` is small enough to build and run in milliseconds on a CPU, traces with
``torch.fx.symbolic_trace`` in eval mode, and is built deterministically under ``torch.manual_seed``.
Normalisation statistics and affine parameters are randomised after construction, because freshly
initialised BatchNorm (mean 0, variance 1, weight 1, bias 0) is the identity in eval mode and would let
bugs in BatchNorm slicing or folding go unnoticed.

``resnet50`` and ``resnet50_deep`` are full-size networks for timing checks; they are not in ``ZOO``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_AFFINE_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def _randomise_normalisation(model: nn.Module) -> None:
    """Give every normalisation layer and layer-scale parameter non-trivial values, in place."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _BATCH_NORMS):
                if module.running_mean is not None:  # None without running statistics (batch statistics)
                    module.running_mean.normal_().mul_(0.1)
                    module.running_var.uniform_(0.5, 2.0)
                if module.affine:
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.normal_().mul_(0.1)
            elif isinstance(module, _AFFINE_NORMS):
                # LayerNorm calls its flag elementwise_affine, the others call it affine.
                if getattr(module, "weight", None) is not None:
                    module.weight.uniform_(0.5, 1.5)
                if getattr(module, "bias", None) is not None:
                    module.bias.normal_().mul_(0.1)
            elif isinstance(module, nn.MultiheadAttention):
                # Its biases start at zero, which would hide mistakes in how a pruner slices them.
                if module.in_proj_bias is not None:
                    module.in_proj_bias.normal_().mul_(0.1)
                if module.out_proj.bias is not None:
                    module.out_proj.bias.normal_().mul_(0.1)
        for name, parameter in model.named_parameters():
            # Layer scales start near zero in real models, which would make their blocks vanish.
            if name.rsplit(".", 1)[-1] == "gamma":
                parameter.uniform_(0.5, 1.5)


def _prepare(model: nn.Module) -> nn.Module:
    """Randomise normalisation layers and switch to eval mode, as every zoo builder must."""
    _randomise_normalisation(model)
    return model.eval()


def _conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    """Convolution, BatchNorm and ReLU with 'same' padding for odd kernels."""
    return nn.Sequential(
        nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ClassifierHead(nn.Module):
    """Global average pool, flatten, linear: the usual end of a convolutional classifier."""

    def __init__(self, in_channels: int, num_classes: int = 10) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


class StochasticDepth(nn.Module):
    """Randomly drops a residual branch per sample while training; the identity in eval mode."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep_probability = 1.0 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
        mask.bernoulli_(keep_probability)
        # Rescale so the expected output matches eval mode.
        return x * mask / keep_probability


# ---------------------------------------------------------------------------------------------------------
# 1. Plain MLP
# ---------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------
# 2-4. ResNets (also used by resnet50)
# ---------------------------------------------------------------------------------------------------------


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
            self.stem = _conv_bn_relu(3, stem_width)
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


# ---------------------------------------------------------------------------------------------------------
# 5. MobileNetV2
# ---------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------
# 6. MobileNetV3
# ---------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------
# 7. EfficientNet MBConv
# ---------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------
# 8. Inception
# ---------------------------------------------------------------------------------------------------------


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
        self.branch_one_by_one = _conv_bn_relu(in_channels, one_by_one, 1)
        self.branch_three = nn.Sequential(
            _conv_bn_relu(in_channels, three_reduce, 1), _conv_bn_relu(three_reduce, three, 3)
        )
        self.branch_double_three = nn.Sequential(
            _conv_bn_relu(in_channels, double_three_reduce, 1),
            _conv_bn_relu(double_three_reduce, double_three, 3),
            _conv_bn_relu(double_three, double_three, 3),
        )
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(3, 1, 1), _conv_bn_relu(in_channels, pool_projection, 1)
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
        self.stem = _conv_bn_relu(3, 16)
        self.inception1 = InceptionBlock(16, 8, 8, 8, 4, 8, 8)
        self.inception2 = InceptionBlock(self.inception1.out_channels, 8, 8, 12, 4, 8, 4)
        merged = self.inception1.out_channels + self.inception2.out_channels
        self.merge = _conv_bn_relu(merged, 32, 1)
        self.head = ClassifierHead(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        first = self.inception1(x)
        second = self.inception2(first)
        merged = torch.cat([first, second], dim=1)
        return self.head(self.merge(merged))


# ---------------------------------------------------------------------------------------------------------
# 9. DenseNet
# ---------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------
# 10. ShuffleNetV2
# ---------------------------------------------------------------------------------------------------------


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave channel groups; a pruner must see this as a fixed permutation of channels."""
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batch, -1, height, width)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit. Stride 1 splits the channels with chunk and passes one half through untouched;
    stride 2 feeds the whole input to two branches. Both concatenate and then shuffle channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        branch_channels = out_channels // 2
        if stride == 1:
            assert in_channels == out_channels, "a stride-1 unit keeps its width"
            branch_in = branch_channels
            self.branch1: nn.Module | None = None
        else:
            branch_in = in_channels
            self.branch1 = nn.Sequential(
                nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
                nn.BatchNorm2d(in_channels),
                nn.Conv2d(in_channels, branch_channels, 1, bias=False),
                nn.BatchNorm2d(branch_channels),
                nn.ReLU(inplace=True),
            )
        self.branch2 = nn.Sequential(
            nn.Conv2d(branch_in, branch_channels, 1, bias=False),
            nn.BatchNorm2d(branch_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(branch_channels, branch_channels, 3, stride, 1, groups=branch_channels, bias=False),
            nn.BatchNorm2d(branch_channels),
            nn.Conv2d(branch_channels, branch_channels, 1, bias=False),
            nn.BatchNorm2d(branch_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch1 is None:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """One stride-2 unit followed by two stride-1 units, so shuffles feed chunks feed shuffles."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(3, 16)
        self.units = nn.Sequential(ShuffleUnit(16, 32, 2), ShuffleUnit(32, 32, 1), ShuffleUnit(32, 32, 1))
        self.last_conv = _conv_bn_relu(32, 32, 1)
        self.head = ClassifierHead(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.last_conv(self.units(self.stem(x))))


# ---------------------------------------------------------------------------------------------------------
# 11. UNet
# ---------------------------------------------------------------------------------------------------------


class DoubleConv(nn.Sequential):
    """Two 3x3 convolution-BatchNorm-ReLU layers at constant resolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(_conv_bn_relu(in_channels, out_channels), _conv_bn_relu(out_channels, out_channels))


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


# ---------------------------------------------------------------------------------------------------------
# 12. ConvNeXt
# ---------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------
# 13-14. Vision transformers
# ---------------------------------------------------------------------------------------------------------


class FusedQkvAttention(nn.Module):
    """One Linear produces q, k and v; the pruner must see its output as three head-structured slices."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.transpose(1, 2).reshape(B, N, D)
        return self.proj(x)


class SeparateQkvAttention(nn.Module):
    """Separate q, k, v projections and hand-written softmax attention: q and k widths are tied by the
    matmul, v width is tied to the output projection's input."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        q = self.q(x).reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k(x).reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v(x).reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = attn @ v
        x = x.transpose(1, 2).reshape(B, N, D)
        return self.proj(x)


class TransformerMlp(nn.Module):
    """Linear-GELU-Linear feed-forward network on the last dimension."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.activation = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block; the residual stream ties every block's embedding width together."""

    def __init__(self, dim: int, num_heads: int, attention: type[nn.Module], mlp_ratio: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = TransformerMlp(dim, mlp_ratio * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """Convolutional patch embedding, optional class token, learned positional embedding, blocks, head.

    With a class token the head reads token 0; otherwise it mean-pools the tokens.
    """

    def __init__(
        self,
        attention: type[nn.Module],
        use_class_token: bool,
        image_size: int = 32,
        patch_size: int = 8,
        dim: int = 32,
        num_heads: int = 4,
        depth: int = 2,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.use_class_token = use_class_token
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(3, dim, patch_size, stride=patch_size)
        num_tokens = num_patches
        self.cls_token: nn.Parameter | None = None
        if use_class_token:
            self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dim))
            num_tokens += 1
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, num_tokens, dim))
        self.blocks = nn.Sequential(*(TransformerBlock(dim, num_heads, attention) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            cls_tokens = self.cls_token.expand(x.shape[0], -1, -1)
            x = torch.cat([cls_tokens, x], dim=1)
        x = x + self.pos_embed
        x = self.norm(self.blocks(x))
        pooled = x[:, 0] if self.cls_token is not None else x.mean(dim=1)
        return self.head(pooled)


# ---------------------------------------------------------------------------------------------------------
# 15. Swin
# ---------------------------------------------------------------------------------------------------------


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, window_size**2, C)."""
    B, H, W, C = x.shape
    ws = window_size
    return x.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, C)


def window_reverse(windows: torch.Tensor, window_size: int, B: int, H: int, W: int) -> torch.Tensor:
    """Inverse of ``window_partition``: (B * windows, window_size**2, C) -> (B, H, W, C)."""
    ws = window_size
    C = windows.shape[-1]
    x = windows.view(B, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, C)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, fused qkv, hand-written softmax attention."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class SwinBlock(nn.Module):
    """Channels-last Swin block: optional cyclic shift, window partition, attention, window reverse.

    The shifted variant omits the attention mask and relative position bias: neither changes channel
    dependencies, and leaving them out keeps the model tiny.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shift: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = TransformerMlp(dim, 2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        shortcut = x
        x = self.norm1(x)
        if self.shift > 0:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = self.attn(window_partition(x, self.window_size))
        x = window_reverse(windows, self.window_size, B, H, W)
        if self.shift > 0:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """Concatenate the four strided sub-grids along channels, then LayerNorm(4C) and Linear(4C -> 2C):
    the concatenation repeats the input channels four times, so one input channel maps to four features."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = x[:, 0::2, 0::2, :]
        x1 = x[:, 1::2, 0::2, :]
        x2 = x[:, 0::2, 1::2, :]
        x3 = x[:, 1::2, 1::2, :]
        x = torch.cat([x0, x1, x2, x3], -1)
        return self.reduction(self.norm(x))


class Swin(nn.Module):
    """Patch embedding (patch 4), plain and shifted window blocks, patch merging, one more block, head."""

    def __init__(self, num_classes: int = 10, dim: int = 16, window_size: int = 4) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 4, stride=4)
        self.patch_norm = nn.LayerNorm(dim)
        self.stage1 = nn.Sequential(
            SwinBlock(dim, 2, window_size, shift=0), SwinBlock(dim, 2, window_size, shift=window_size // 2)
        )
        self.merge = PatchMerging(dim)
        self.stage2 = nn.Sequential(SwinBlock(2 * dim, 4, window_size, shift=0))
        self.norm = nn.LayerNorm(2 * dim)
        self.head = nn.Linear(2 * dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 1))
        x = self.stage2(self.merge(self.stage1(x)))
        return self.head(self.norm(x).mean(dim=(1, 2)))


# ---------------------------------------------------------------------------------------------------------
# 16. nn.MultiheadAttention
# ---------------------------------------------------------------------------------------------------------


class MultiheadAttentionBlockModel(nn.Module):
    """Transformer block built on nn.MultiheadAttention, whose packed in_proj_weight hides the q/k/v split
    inside one opaque module (the tracer decomposes it, so its heads prune as units); mean-pooled tokens
    feed a linear head."""

    def __init__(self, dim: int = 32, num_heads: int = 4, num_classes: int = 10) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(embed_dim=dim, num_heads=num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = TransformerMlp(dim, 2 * dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        out, _ = self.attn(h, h, h, need_weights=False)
        x = x + out
        x = x + self.mlp(self.norm2(x))
        return self.head(self.norm(x).mean(dim=1))


# ---------------------------------------------------------------------------------------------------------
# 17. Embedding language model
# ---------------------------------------------------------------------------------------------------------


class EmbeddingLanguageModel(nn.Module):
    """Integer tokens -> nn.Embedding: the embedding's columns set the residual width; head back to vocab."""

    def __init__(self, vocabulary_size: int = 50, dim: int = 16) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocabulary_size, dim)
        self.mlp = TransformerMlp(dim, 2 * dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocabulary_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens)
        x = x + self.mlp(x)
        return self.head(self.norm(x))


# ---------------------------------------------------------------------------------------------------------
# 18. Pixel shuffle
# ---------------------------------------------------------------------------------------------------------


class PixelShuffleNet(nn.Module):
    """PixelShuffle folds groups of 4 channels into space and PixelUnshuffle unfolds them again, so channels
    are only prunable in aligned groups across these ops; a residual spans the whole round trip."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(3, 16)
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


# ---------------------------------------------------------------------------------------------------------
# 19. Multiple inputs
# ---------------------------------------------------------------------------------------------------------


class MultiInputNet(nn.Module):
    """Image and vector inputs plus a keyword argument with a default, fused by concatenating pooled image
    features with projected vector features: the head's input splits into two producers."""

    def __init__(self, vector_features: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.image_features = nn.Sequential(_conv_bn_relu(3, 16), _conv_bn_relu(16, 16, stride=2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.vector_features = nn.Linear(vector_features, 16)
        self.head = nn.Linear(32, num_classes)

    def forward(self, image: torch.Tensor, vector: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        image_features = torch.flatten(self.pool(self.image_features(image)), 1)
        vector_features = torch.relu(self.vector_features(vector)) * scale
        return self.head(torch.cat([image_features, vector_features], dim=1))


# ---------------------------------------------------------------------------------------------------------
# 20. Grouped convolution
# ---------------------------------------------------------------------------------------------------------


class ResNeXtBlock(nn.Module):
    """1x1, grouped 3x3 (groups=4, not depthwise), 1x1, residual: pruning must stay balanced across groups."""

    def __init__(
        self, in_channels: int, bottleneck: int, out_channels: int, stride: int, groups: int = 4
    ) -> None:
        super().__init__()
        self.reduce = _conv_bn_relu(in_channels, bottleneck, 1)
        self.grouped = _conv_bn_relu(bottleneck, bottleneck, 3, stride, groups=groups)
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
        self.stem = _conv_bn_relu(3, 32)
        self.blocks = nn.Sequential(ResNeXtBlock(32, 16, 32, stride=1), ResNeXtBlock(32, 16, 32, stride=2))
        self.head = ClassifierHead(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


# ---------------------------------------------------------------------------------------------------------
# 21. GroupNorm / InstanceNorm
# ---------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------
# Full-size ResNet-50 (timing checks only)
# ---------------------------------------------------------------------------------------------------------


def resnet50(num_classes: int = 1000) -> nn.Module:
    """ImageNet ResNet-50 (stages [3, 4, 6, 3], widths 64-512, expansion 4; about 25.6 M parameters) for
    224x224 input, with randomised BatchNorm, in eval mode."""
    return _prepare(
        ResNet(Bottleneck, [3, 4, 6, 3], [64, 128, 256, 512], 64, num_classes, imagenet_stem=True)
    )


def resnet50_deep(num_classes: int = 1000) -> nn.Module:
    """ResNet-50 with twice as many blocks per stage ([6, 8, 12, 6]), for checking that compile time scales
    linearly with depth."""
    return _prepare(
        ResNet(Bottleneck, [6, 8, 12, 6], [64, 128, 256, 512], 64, num_classes, imagenet_stem=True)
    )


# ---------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZooEntry:
    """How to build one zoo model and what to feed it.

    ``input_dtypes`` gives one dtype per input; ``None`` means every input is float32. Integer inputs are
    drawn uniformly from ``[0, integer_input_high)`` (for token ids, the vocabulary size).
    """

    build: Callable[[], nn.Module]
    input_shapes: tuple[tuple[int, ...], ...]
    description: str
    input_dtypes: tuple[torch.dtype, ...] | None = None
    integer_input_high: int = 50
    fx_traceable: bool = True  # False: torch.fx.symbolic_trace fails on purpose (cascomp's capture fallbacks)


def _builder(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """Wrap a constructor so the built model gets randomised normalisation and eval mode."""

    def build() -> nn.Module:
        return _prepare(factory())

    return build


_IMAGE_16 = ((2, 3, 16, 16),)
_IMAGE_32 = ((2, 3, 32, 32),)

ZOO: dict[str, ZooEntry] = {
    "mlp": ZooEntry(_builder(MLP), ((2, 20),), "Linear-ReLU chain."),
    "resnet_basic": ZooEntry(
        _builder(lambda: ResNet(BasicBlock, [2, 2], [16, 32], stem_width=16)),
        _IMAGE_16,
        "Basic residual blocks, identity and strided 1x1-projection shortcuts.",
    ),
    "resnet_bottleneck": ZooEntry(
        _builder(lambda: ResNet(Bottleneck, [2, 1], [8, 12], stem_width=16)),
        _IMAGE_16,
        "Bottleneck blocks; first block of each stage has a projection shortcut.",
    ),
    "preact_resnet": ZooEntry(_builder(PreActResNet), _IMAGE_16, "Pre-activation residual blocks."),
    "mobilenet_v2": ZooEntry(
        _builder(MobileNetV2), _IMAGE_16, "Inverted residuals, depthwise convolutions, ReLU6."
    ),
    "mobilenet_v3": ZooEntry(
        _builder(MobileNetV3), _IMAGE_16, "Depthwise blocks, squeeze-excite with hardsigmoid, Hardswish."
    ),
    "efficientnet_mbconv": ZooEntry(
        _builder(EfficientNetMBConv), _IMAGE_16, "MBConv with sigmoid squeeze-excite and stochastic depth."
    ),
    "inception": ZooEntry(
        _builder(InceptionNet), _IMAGE_16, "Four-branch concatenations and a concatenation of concatenations."
    ),
    "densenet": ZooEntry(
        _builder(DenseNet), _IMAGE_16, "Dense blocks with growing concatenation, transition."
    ),
    "shufflenet_v2": ZooEntry(
        _builder(ShuffleNetV2), _IMAGE_16, "Channel split by chunk, concatenation, channel shuffle via view."
    ),
    "unet": ZooEntry(
        _builder(UNet),
        _IMAGE_16,
        "Encoder-decoder, transposed convolutions, skip concatenations; outputs a map.",
    ),
    "convnext": ZooEntry(
        _builder(ConvNeXt), _IMAGE_32, "Depthwise 7x7, channels-last LayerNorm and Linear, layer scale."
    ),
    "vit": ZooEntry(
        _builder(lambda: VisionTransformer(FusedQkvAttention, use_class_token=True)),
        _IMAGE_32,
        "Vision transformer with class token, fused qkv and scaled_dot_product_attention.",
    ),
    "vit_manual_attention": ZooEntry(
        _builder(lambda: VisionTransformer(SeparateQkvAttention, use_class_token=False)),
        _IMAGE_32,
        "Vision transformer with separate q/k/v, hand-written attention, mean pooling.",
    ),
    "swin": ZooEntry(
        _builder(Swin), _IMAGE_32, "Window partition/reverse, torch.roll shift, patch merging concatenation."
    ),
    "mha": ZooEntry(
        _builder(MultiheadAttentionBlockModel),
        ((2, 10, 32),),
        "Transformer block using nn.MultiheadAttention (packed in_proj_weight, batch_first); heads prune.",
    ),
    "embedding_lm": ZooEntry(
        _builder(EmbeddingLanguageModel),
        ((2, 12),),
        "Embedding on integer tokens, residual MLP, LayerNorm, head to vocabulary.",
        input_dtypes=(torch.int64,),
        integer_input_high=50,
    ),
    "pixel_shuffle": ZooEntry(
        _builder(PixelShuffleNet), _IMAGE_16, "PixelShuffle and PixelUnshuffle inside a residual."
    ),
    "multi_input": ZooEntry(
        _builder(MultiInputNet),
        ((2, 3, 16, 16), (2, 8)),
        "Two tensor inputs and a defaulted float keyword, fused by concatenation.",
    ),
    "grouped_conv": ZooEntry(
        _builder(GroupedConvNet), _IMAGE_16, "ResNeXt blocks with a groups=4 3x3 convolution."
    ),
    "groupnorm": ZooEntry(
        _builder(GroupNormNet), _IMAGE_16, "GroupNorm and affine InstanceNorm2d with a residual."
    ),
}


def example_inputs(name: str, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs for zoo model ``name``, reproducible for a given seed."""
    entry = ZOO[name]
    generator = torch.Generator().manual_seed(seed)
    dtypes = entry.input_dtypes or (torch.float32,) * len(entry.input_shapes)
    inputs = []
    for shape, dtype in zip(entry.input_shapes, dtypes, strict=True):
        if dtype.is_floating_point:
            inputs.append(torch.randn(shape, generator=generator, dtype=dtype))
        else:
            inputs.append(torch.randint(0, entry.integer_input_high, shape, generator=generator, dtype=dtype))
    return tuple(inputs)


# Models that reproduce classes of failures seen on real model libraries join the zoo from their own files
# (imported here only, after ZooEntry and _builder exist; import them through tests.models).
from tests import zoo_capture, zoo_norms, zoo_shapes  # noqa: E402

ZOO.update(zoo_norms.ENTRIES)
ZOO.update(zoo_shapes.ENTRIES)
ZOO.update(zoo_capture.ENTRIES)

"""Zoo models reproducing a class of failures seen on real model libraries (see ENTRIES).

Issue 21, classes 1 and 2: model libraries write their norms and convolutions as subclasses whose forward
calls the functional form (fx traces into them, so parameters arrive through `get_attr` nodes), and
standardise or reparameterise convolution weights in forward. Written here from the patterns, not copied.

tests.models merges ENTRIES into its ZOO, whose builders randomise the normalisation and switch to eval
mode."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cascomp.zoo import ZooEntry


# -- class 1: norms whose forward calls the functional form ------------------------------------------------
class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm and an activation fused in one module, normalising through `F.batch_norm` itself.

    With `track_running_stats=False` there are no running buffers: the statistics come from the batch."""

    def __init__(self, channels: int, act: bool = True, track_running_stats: bool = True) -> None:
        super().__init__(channels, track_running_stats=track_running_stats)
        self.act = nn.ReLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        x = F.batch_norm(x, self.running_mean if not self.training or self.track_running_stats else None,
                         self.running_var if not self.training or self.track_running_stats else None,
                         self.weight, self.bias, use_batch_stats, self.momentum, self.eps)
        return self.act(x)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map: permute to channels-last, `F.layer_norm`, permute back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class GroupNormAct(nn.GroupNorm):
    """GroupNorm through `F.group_norm`, then SiLU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps))


class InstanceNormAffine(nn.InstanceNorm2d):
    """Affine InstanceNorm through `F.instance_norm` (no running statistics: None buffers)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                               True, self.momentum, self.eps)


class BasicBlockAct(nn.Module):
    """Residual block whose norms are BatchNormAct2d (the second one without activation)."""

    def __init__(self, channels: int, track_running_stats: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = BatchNormAct2d(channels, track_running_stats=track_running_stats)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = BatchNormAct2d(channels, act=False, track_running_stats=track_running_stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(self.bn1(self.conv1(x)))))


class BatchNormActNet(nn.Module):
    """ResNet-ish: stem, two residual blocks, a widening conv, head; every norm is a BatchNormAct2d."""

    def __init__(self, track_running_stats: bool = True) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.stem_bn = BatchNormAct2d(16, track_running_stats=track_running_stats)
        self.blocks = nn.Sequential(BasicBlockAct(16, track_running_stats), BasicBlockAct(16, track_running_stats))
        self.widen = nn.Conv2d(16, 24, 3, stride=2, padding=1, bias=False)
        self.widen_bn = BatchNormAct2d(24, track_running_stats=track_running_stats)
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.widen_bn(self.widen(self.blocks(self.stem_bn(self.stem(x)))))
        return self.head(x.mean((2, 3)))


class ConvNeXtBlock2d(nn.Module):
    """ConvNeXt block kept channels-first: depthwise 7x7, LayerNorm2d, 1x1 convs, layer scale, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = LayerNorm2d(channels, eps=1e-6)
        self.pwconv1 = nn.Conv2d(channels, 4 * channels, 1)
        self.pwconv2 = nn.Conv2d(4 * channels, channels, 1)
        self.gamma = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(self.dwconv(x)))))
        return x + y * self.gamma.reshape(1, -1, 1, 1)


class LayerNorm2dNet(nn.Module):
    """ConvNeXt-ish: patchify stem + LayerNorm2d, two blocks, a LayerNorm2d + strided conv downsample."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 2, stride=2)
        self.stem_norm = LayerNorm2d(16, eps=1e-6)
        self.stage1 = ConvNeXtBlock2d(16)
        self.down_norm = LayerNorm2d(16, eps=1e-6)
        self.down = nn.Conv2d(16, 24, 2, stride=2)
        self.stage2 = ConvNeXtBlock2d(24)
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(self.stem_norm(self.stem(x)))
        x = self.stage2(self.down(self.down_norm(x)))
        return self.head(x.mean((2, 3)))


class GroupNormActNet(nn.Module):
    """GroupNormAct with one group, with 4 groups and with one channel per group, an affine
    InstanceNormAffine, and a residual."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.norm1 = GroupNormAct(1, 16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.norm2 = GroupNormAct(4, 16)
        self.conv3 = nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.norm3 = GroupNormAct(24, 24)
        self.conv4 = nn.Conv2d(24, 24, 3, padding=1)
        self.norm4 = InstanceNormAffine(24)
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(self.conv1(x))
        x = x + self.norm2(self.conv2(x))
        x = self.norm3(self.conv3(x))
        x = torch.relu(self.norm4(self.conv4(x)))
        return self.head(x.mean((2, 3)))


# -- class 2: weight-standardised and reparameterised convolutions ----------------------------------------
class ScaledStdConv2d(nn.Conv2d):
    """Weight standardisation (NF-nets): every output filter is normalised over its fan-in, then scaled by a
    learned per-filter gain. `form="batch_norm"` normalises with `F.batch_norm` on the (1, C_out, fan-in)
    view of the weight; `form="moments"` writes the mean and standard deviation out."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, form: str = "batch_norm", eps: float = 1e-6) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups)
        self.gain = nn.Parameter(torch.ones(out_channels, 1, 1, 1))
        self.scale = (self.weight[0].numel()) ** -0.5
        self.eps = eps
        self.form = form

    def standardised_weight(self) -> torch.Tensor:
        if self.form == "batch_norm":
            return F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                                weight=(self.gain * self.scale).view(-1), training=True, momentum=0.0,
                                eps=self.eps).reshape_as(self.weight)
        mean = self.weight.mean(dim=(1, 2, 3), keepdim=True)
        std = self.weight.std(dim=(1, 2, 3), keepdim=True)
        return (self.weight - mean) / (std + self.eps) * self.gain * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.standardised_weight(), self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


class NormFreeBlock(nn.Module):
    """NF-ResNet block: pre-activation scaled by beta, two standardised convs, residual scaled by alpha."""

    def __init__(self, channels: int, form: str, alpha: float = 0.2, beta: float = 1.0) -> None:
        super().__init__()
        self.alpha, self.beta = alpha, beta
        self.conv1 = ScaledStdConv2d(channels, channels, 3, form=form)
        self.conv2 = ScaledStdConv2d(channels, channels, 3, groups=channels, form=form)
        self.conv3 = ScaledStdConv2d(channels, channels, 3, form=form)  # 1x1: fan-in could drop to one

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.gelu(x) * self.beta)
        y = self.conv3(F.gelu(self.conv2(F.gelu(y))))
        return x + y * self.alpha


class NormFreeNet(nn.Module):
    """NF-ResNet-ish: standardised stem, two normalisation-free blocks, a widening conv, head."""

    def __init__(self, form: str = "batch_norm") -> None:
        super().__init__()
        self.stem = ScaledStdConv2d(3, 16, 3, form=form)
        self.blocks = nn.Sequential(NormFreeBlock(16, form), NormFreeBlock(16, form))
        self.widen = ScaledStdConv2d(16, 24, 3, stride=2, form=form)
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.widen(self.blocks(self.stem(x))))
        return self.head(x.mean((2, 3)))


class RepVggBlock(nn.Module):
    """RepVGG / MobileOne train-time block: 3x3 conv-BN + 1x1 conv-BN + identity BN, summed, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv3 = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                   nn.BatchNorm2d(out_channels))
        same = in_channels == out_channels and stride == 1
        self.identity = nn.BatchNorm2d(out_channels) if same else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(x) + self.conv1(x)
        if self.identity is not None:
            y = y + self.identity(x)
        return torch.relu(y)


class RepVggNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(RepVggBlock(3, 16, 2), RepVggBlock(16, 16), RepVggBlock(16, 24, 2),
                                    RepVggBlock(24, 24))
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x).mean((2, 3)))


def _with_random_gains(factory):
    """Gains start at one, which would hide a gain sliced apart from its weight."""

    def build() -> nn.Module:
        model = factory()
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name.endswith(".gain"):
                    parameter.uniform_(0.5, 1.5)
        return model

    return build


_IMAGE_16 = ((2, 3, 16, 16),)

ENTRIES: dict[str, ZooEntry] = {
    "batchnorm_act": ZooEntry(BatchNormActNet, _IMAGE_16,
                              "BatchNorm2d subclass calling F.batch_norm then ReLU, in residual blocks."),
    "batchnorm_act_batch_stats": ZooEntry(
        lambda: BatchNormActNet(track_running_stats=False), _IMAGE_16,
        "The same with track_running_stats=False: F.batch_norm with no running statistics, batch statistics."),
    "layernorm2d": ZooEntry(LayerNorm2dNet, _IMAGE_16,
                            "LayerNorm subclass permuting NCHW and calling F.layer_norm, ConvNeXt-style blocks."),
    "groupnorm_act": ZooEntry(GroupNormActNet, _IMAGE_16,
                              "GroupNorm subclasses calling F.group_norm (1, 4 and C groups), F.instance_norm."),
    "nf_resnet": ZooEntry(_with_random_gains(NormFreeNet), _IMAGE_16,
                          "Scaled weight-standardised convs (F.batch_norm of the weight, per-filter gain)."),
    "nf_resnet_moments": ZooEntry(_with_random_gains(lambda: NormFreeNet("moments")), _IMAGE_16,
                                  "Scaled weight-standardised convs written as (w - mean) / (std + eps) * gain."),
    "repvgg": ZooEntry(RepVggNet, _IMAGE_16,
                       "RepVGG train-time blocks: 3x3 conv-BN + 1x1 conv-BN + identity BN, summed."),
}

"""Zagoruyko and Komodakis's wide residual network (WRN-d-k) for 1x28x28 images: pre-activation basic blocks,
(d - 4) / 6 per stage, 16k/32k/64k channels. Wide layers are where replacing a dense 3x3 convolution by a
cheaper operator pays most (DARC's best results are on WRNs). One of the baselines of benchmarks/peers.py,
whose cached trained state dicts load into it: its module structure and parameter names must stay as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from cascomp.zoo.resnet import PreActBlock


class WideResNet(nn.Module):
    """WRN-`depth`-`widen` (no dropout) with a BatchNorm-ReLU on the summed residual stream before the head."""

    def __init__(self, depth: int = 16, widen: int = 2, classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1, got {depth}")
        per_stage = (depth - 4) // 6
        self.stem = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        stages, inputs = [], 16
        for channels, stride in ((16 * widen, 1), (32 * widen, 2), (64 * widen, 2)):
            blocks = [PreActBlock(inputs, channels, stride)]
            blocks += [PreActBlock(channels, channels, 1) for _ in range(per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            inputs = channels
        self.stages = nn.Sequential(*stages)
        self.final_bn = nn.BatchNorm2d(inputs)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(inputs, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.final_bn(self.stages(self.stem(x))))
        return self.fc(x.mean(dim=(2, 3)))

"""Normalisation layers that compute their statistics over kept channels only.

Used by the masked reference model: zeroing a channel would otherwise still count it in the mean and
variance, while the physically pruned layer no longer sees it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class MaskedLayerNorm(nn.Module):
    """LayerNorm over the last dim, statistics over positions where `mask` is 1."""

    def __init__(self, norm: nn.LayerNorm, mask: torch.Tensor) -> None:
        super().__init__()
        self.norm = norm
        self.register_buffer("mask", mask.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return masked_layer_norm(x, self.norm.normalized_shape, self.norm.weight, self.norm.bias, self.norm.eps,
                                 self.mask)


def masked_layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, mask=None):
    if mask is None:
        return F.layer_norm(x, normalized_shape, weight, bias, eps)
    count = mask.sum()
    mean = (x * mask).sum(-1, keepdim=True) / count
    var = (((x - mean) * mask) ** 2).sum(-1, keepdim=True) / count
    y = (x - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y * mask


class MaskedGroupNorm(nn.Module):
    """GroupNorm whose per-group statistics cover the kept channels of each group only.

    With the same number of kept channels in every group this is exactly what the pruned
    `GroupNorm(num_groups, kept channels)` computes.
    """

    def __init__(self, norm: nn.GroupNorm, mask: torch.Tensor) -> None:
        super().__init__()
        self.norm = norm
        self.register_buffer("mask", mask.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.norm
        return masked_group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps, self.mask)


def masked_group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, mask=None):
    """`F.group_norm` with statistics over the channels where `mask` (one entry per channel) is 1."""
    if mask is None:
        return F.group_norm(x, num_groups, weight, bias, eps)
    batch, channels = x.shape[:2]
    grouped = x.reshape(batch, num_groups, channels // num_groups, -1)
    group_mask = mask.reshape(1, num_groups, -1, 1).to(x.dtype)
    # a group with no kept channel is zeroed below; clamping keeps its (unused) statistics finite
    count = (group_mask.sum((2, 3), keepdim=True) * grouped.shape[-1]).clamp_min(1)
    mean = (grouped * group_mask).sum((2, 3), keepdim=True) / count
    var = (((grouped - mean) * group_mask) ** 2).sum((2, 3), keepdim=True) / count
    y = ((grouped - mean) / torch.sqrt(var + eps)).reshape(x.shape)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y * mask.reshape(shape)

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
    """GroupNorm with one group (statistics over all channels and positions) restricted to kept channels."""

    def __init__(self, norm: nn.GroupNorm, mask: torch.Tensor) -> None:
        super().__init__()
        if norm.num_groups != 1:
            raise ValueError("MaskedGroupNorm supports num_groups=1; per-channel groups need no mask")
        self.norm = norm
        self.register_buffer("mask", mask.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mask = self.mask.reshape(shape)
        count = mask.sum() * x[0, 0].numel()
        dims = tuple(range(1, x.dim()))
        mean = (x * mask).sum(dims, keepdim=True) / count
        var = (((x - mean) * mask) ** 2).sum(dims, keepdim=True) / count
        y = (x - mean) / torch.sqrt(var + self.norm.eps)
        if self.norm.affine:
            y = y * self.norm.weight.reshape(shape) + self.norm.bias.reshape(shape)
        return y * mask

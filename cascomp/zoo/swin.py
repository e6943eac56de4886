"""Swin: window partition and reverse, cyclic shift by torch.roll, patch merging by concatenation."""

from __future__ import annotations

import torch
from torch import nn

from cascomp.zoo.layers import TransformerMlp


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

"""Vision transformers: tiny ones with fused or separate q/k/v projections, and the full-size ViT-B/16
(Dosovitskiy et al. 2021: 12 blocks, width 768, 12 heads, MLP 3072, class token)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cascomp.zoo.layers import TransformerMlp


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
    """16x16 patch embedding, class token, learned positions, pre-norm blocks; the head reads the class
    token."""

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


def vit_b16(num_classes: int = 1000) -> VitB16:
    """ViT-B/16 at 224x224 (197 tokens): about 86.6 M parameters."""
    return VitB16(num_classes)

"""A transformer block on nn.MultiheadAttention (packed in_proj_weight, batch_first)."""

from __future__ import annotations

import torch
from torch import nn

from cascomp.zoo.layers import TransformerMlp


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

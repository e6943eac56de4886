"""A language model on integer tokens: nn.Embedding, a residual MLP, LayerNorm, a head back to the
vocabulary."""

from __future__ import annotations

import torch
from torch import nn

from cascomp.zoo.layers import TransformerMlp


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

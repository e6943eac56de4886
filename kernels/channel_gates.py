"""Search nodes of the mask-based methods: one learnable gate per channel, shared by every tensor of its group.

`ConcreteGates` holds a logit per channel and, once per forward pass, returns a gate table
`[1, g_0, g_1, ...]` (entry 0 is the always-on gate of frozen channels). Every masked site of the graph
multiplies its tensor by `table[index]`, where `index` maps each position to its channel's slot, so one
sample is shared by all tensors of a group (FiGS's group masking).

Training samples the logistic-sigmoid (binary Concrete) relaxation g = sigmoid((logit + noise) / tau),
noise ~ Logistic(0, 1); evaluation uses the hard gate logit > 0 (keep-probability above one half).
"""

from __future__ import annotations

import torch
from torch import nn


class ConcreteGates(nn.Module):
    def __init__(self, channels: int, *, init_logit: float = 2.5, temperature: float = 1e-3) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.full((channels,), float(init_logit)))
        self.temperature = float(temperature)

    def probabilities(self) -> torch.Tensor:
        """Keep-probability per channel (differentiable)."""
        return torch.sigmoid(self.logits)

    def forward(self) -> torch.Tensor:
        if self.training:
            uniform = torch.rand_like(self.logits).clamp(1e-6, 1 - 1e-6)
            noise = torch.log(uniform) - torch.log1p(-uniform)
            gates = torch.sigmoid((self.logits + noise) / self.temperature)
        else:
            gates = (self.logits > 0).to(self.logits.dtype)
        return torch.cat([gates.new_ones(1), gates])

    def extra_repr(self) -> str:
        return f"channels={self.logits.numel()}, temperature={self.temperature}"


def apply_gate(x: torch.Tensor, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`x` times the gates of its channels; `index` (shaped to broadcast with `x`) holds their slots."""
    return x * table[index].to(x.dtype)

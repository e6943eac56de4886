"""Search nodes of the mask-based methods: one learnable gate per channel, shared by every tensor of its group.

`ConcreteGates` holds a logit per channel and, once per forward pass, returns a gate table
`[1, g_0, g_1, ...]` (entry 0 is the always-on gate of frozen channels). Every masked site of the graph
multiplies its tensor by `table[index]`, where `index` maps each position to its channel's slot, so one
sample is shared by all tensors of a group (FiGS's group masking).

Training samples the logistic-sigmoid (binary Concrete) relaxation g = sigmoid((logit + noise) / tau),
noise ~ Logistic(0, 1). Evaluation uses the architecture FiGS exports: in each group the floor(sum of
keep-probabilities) most probable channels (at least one) are on, the rest off. (A per-channel threshold at
one half would switch off whole groups whose channels drift down together.)
"""

from __future__ import annotations

import torch
from torch import nn

from cascomp.kernels.choices import ChannelChoice


class ConcreteGates(ChannelChoice):
    def __init__(self, group_sizes: tuple[int, ...], *, init_logit: float = 2.5, temperature: float = 1e-3,
                 estimator: str = "concrete") -> None:
        super().__init__()
        self.group_sizes = tuple(int(size) for size in group_sizes)
        self.logits = nn.Parameter(torch.full((sum(self.group_sizes),), float(init_logit)))
        self.temperature = float(temperature)
        self.estimator = estimator

    def probabilities(self) -> torch.Tensor:
        """Keep-probability per channel (differentiable)."""
        return torch.sigmoid(self.logits)

    def keep_probabilities(self) -> torch.Tensor:
        return self.probabilities()

    def settled(self) -> torch.Tensor:
        return self.expected_architecture()

    def forward(self) -> torch.Tensor:
        if self.training:
            uniform = torch.rand_like(self.logits).clamp(1e-6, 1 - 1e-6)
            noise = torch.log(uniform) - torch.log1p(-uniform)
            if self.estimator == "expected":
                # the forward value of the tau -> 0 relaxation (a Bernoulli(p) draw) with its mean derivative
                # d E[gate] / d logit = p (1 - p), not the rare 1/tau spikes of a single draw
                probabilities = torch.sigmoid(self.logits)
                hard = (self.logits + noise > 0).to(self.logits.dtype)
                gates = hard + probabilities - probabilities.detach()
            else:
                gates = torch.sigmoid((self.logits + noise) / self.temperature)
        else:
            gates = self.expected_architecture()
        return torch.cat([gates.new_ones(1), gates])

    def expected_architecture(self) -> torch.Tensor:
        """0/1 per channel: the floor(sum of probabilities) most probable channels of each group."""
        gates = torch.zeros_like(self.logits)
        with torch.no_grad():
            start = 0
            for size in self.group_sizes:
                logits = self.logits[start:start + size]
                width = max(1, int(torch.sigmoid(logits).sum()))
                gates[start + torch.topk(logits, width).indices] = 1
                start += size
        return gates

    def extra_repr(self) -> str:
        return f"groups={len(self.group_sizes)}, channels={self.logits.numel()}, temperature={self.temperature}"


def apply_gate(x: torch.Tensor, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`x` times the gates of its channels; `index` (shaped to broadcast with `x`) holds their slots."""
    return x * table[index].to(x.dtype)

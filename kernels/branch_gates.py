"""Branch gates: one learnable gate per removable residual branch (FiGS with depth).

A branch is what a group that keeps no channel removes (cascomp.ir.depth). Its gate multiplies the branch's
value where it is merged back into the residual stream (`passes/insert_branch_gates.py`), so the search sees
the network with and without the block. Training samples the gate like FiGS's channel gates (a
logistic-sigmoid relaxation, or with `estimator="expected"` a Bernoulli(p) draw with the mean derivative
p(1 - p)); evaluation multiplies by 1 and keeps the branch where p >= 1/2 (a removed branch's channels are
zeroed by `GateTable` instead, which is exactly the removal the rewrite makes). The gate is at the merge
rather than on the group's channels: a BatchNorm after the branch's last convolution (in training mode)
would undo a common scale of those channels, and the gate would learn nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from cascomp.kernels.choices import BranchChoice


class BranchGates(BranchChoice):
    def __init__(self, count: int, *, init_logit: float = 2.5, temperature: float = 1e-3,
                 estimator: str = "expected") -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.full((int(count),), float(init_logit)))
        self.temperature = float(temperature)
        self.estimator = estimator

    def alive_probabilities(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def settled(self) -> torch.Tensor:
        return (self.logits.detach() >= 0).to(self.logits.dtype)

    def forward(self) -> torch.Tensor:
        if not self.training:
            return torch.ones_like(self.logits)
        uniform = torch.rand_like(self.logits).clamp(1e-6, 1 - 1e-6)
        noise = torch.log(uniform) - torch.log1p(-uniform)
        if self.estimator == "expected":
            probabilities = torch.sigmoid(self.logits)
            hard = (self.logits + noise > 0).to(self.logits.dtype)
            return hard + probabilities - probabilities.detach()
        return torch.sigmoid((self.logits + noise) / self.temperature)

    def extra_repr(self) -> str:
        return f"branches={self.logits.numel()}, estimator={self.estimator}"


def scale_branch(x: torch.Tensor, multipliers: torch.Tensor, index: int) -> torch.Tensor:
    """`x` (a branch's value where it is merged) times its branch's multiplier."""
    return x * multipliers[index].to(x.dtype)

"""An operator choice: a layer replaced by a convex mixture of itself and cheaper candidates (DARC,
../shared/papers/darc-*, §3).

`OperatorChoice` holds the original layer and its candidates (kernels/candidates.py) as `options` (the
original first) and mixture weights `alpha` on the probability simplex: the output is sum_j alpha_j h_j(x).
- `project()` is DARC's sparsifying projection onto the simplex, alpha <- max(alpha, 0) / ||max(alpha, 0)||_1
  (Kyrillidis et al.), taken after every gradient step: it keeps alpha on the simplex exactly and sets
  candidates to exactly 0, where the paper's l1 penalty alone would not. If no weight is positive (a step far
  larger than the paper's), the largest one is kept alone rather than dividing by zero: never all zero.
- `drop()` removes (for good) the candidates whose weight is 0, as the paper does after each block of
  training: a dropped candidate is no longer computed.
- `winner(costs)`: the option the layer becomes: the only one left, or among several with a positive
  weight the most expensive (the paper's rule for the models it saves after each block).
- With `teaching` set the choice computes its original alone (student-teacher initialisation reads the
  original's inputs and outputs).
The choice is a plain module, so the search model stays an fx GraphModule whose node calls it where the
original layer was called; passes/substitute_ops.py puts the winner there.
"""

from __future__ import annotations

import torch
from torch import nn


class OperatorChoice(nn.Module):
    def __init__(self, original: nn.Module, candidates: dict[str, nn.Module], *, init: str = "uniform") -> None:
        super().__init__()
        if not candidates:
            raise ValueError("an operator choice needs at least one candidate besides the original")
        self.names = ("original",) + tuple(candidates)
        self.options = nn.ModuleList([original, *candidates.values()])
        count = len(self.options)
        if init == "uniform":  # the paper's start: every option equally weighted
            start = torch.full((count,), 1.0 / count)
        elif init == "original":  # the original network exactly (the candidates then start without gradient)
            start = torch.zeros(count)
            start[0] = 1.0
        else:
            raise ValueError(f"init must be 'uniform' or 'original', got {init!r}")
        self.alpha = nn.Parameter(start)
        self.register_buffer("active", torch.ones(count, dtype=torch.bool))
        self.teaching = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.teaching:
            return self.options[0](x)
        out = None
        for j in self.active.nonzero().flatten().tolist():
            term = self.alpha[j].to(x.dtype) * self.options[j](x)
            out = term if out is None else out + term
        return out

    @torch.no_grad()
    def project(self) -> None:
        """alpha <- alpha+ / ||alpha+||_1 over the active options (dropped ones stay 0)."""
        positive = self.alpha.clamp_min(0) * self.active
        total = positive.sum()
        if float(total) <= 0:
            positive = torch.zeros_like(self.alpha)
            masked = self.alpha.masked_fill(~self.active, float("-inf"))
            positive[int(masked.argmax())] = 1.0
            total = positive.sum()
        self.alpha.copy_(positive / total)

    @torch.no_grad()
    def drop(self) -> None:
        """Drop the options whose weight is 0 (at least one always stays)."""
        self.active &= self.alpha > 0
        if not bool(self.active.any()):  # pragma: no cover - project() leaves a positive weight
            raise RuntimeError("every option of an operator choice was dropped")

    def remaining(self) -> list[int]:
        """The options still active with a positive weight."""
        alpha = self.alpha.detach()
        return [j for j in range(len(self.options)) if bool(self.active[j]) and float(alpha[j]) > 0]

    def winner(self, costs: torch.Tensor) -> int:
        """The option the layer becomes: among those left, the most expensive (`costs`, one per option)."""
        left = self.remaining() or [int(self.alpha.detach().argmax())]
        return max(left, key=lambda j: (float(costs[j]), -j))

    @torch.no_grad()
    def settle(self, index: int) -> None:
        """alpha one-hot at `index`."""
        self.alpha.zero_()
        self.alpha[index] = 1.0

    def extra_repr(self) -> str:
        weights = ", ".join(f"{name}={float(a):.3f}" for name, a in zip(self.names, self.alpha.detach()))
        return f"alpha: {weights}"

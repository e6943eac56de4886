"""Stage depth: per stage, a categorical distribution over how many of its removable blocks stay (TAS depth).

A stage is a run of removable residual branches merged into one residual stream (cascomp.methods.search_space finds
them), in the order the network applies them. Depth d keeps the stage's first d removable blocks: the
deepest go first. The candidates are `least` ... n for a stage of n removable blocks (TAS searches 1 ... L
layers per stage: `least` = 1); a stage with no choice (n <= least) is left out and its blocks always stay.

Training (TAS, ../shared/papers/tas-*, eqs. 3-5): the logits are perturbed with Gumbel noise at temperature
tau, two distinct depths are drawn per stage and weighted by the softmax of their perturbed logits; block j
of the stage is multiplied, where it is merged back, by the total weight of the drawn depths that keep it.
When the two depths differ by one block this is the paper's eq. 5 exactly (w1 O_d + w2 O_{d+1} =
O_d + w2 f(O_d) for a residual block f); for larger gaps the blocks between are scaled rather than the
stage's outputs at both depths averaged. Evaluation: the most probable depth of every stage (multipliers
1, the removed blocks' channels zeroed by `GateTable`). A block's alive-probability is P(depth > its
position) = sum over d > j of p_d.
"""

from __future__ import annotations

import torch
from torch import nn

from cascomp.kernels.choices import BranchChoice


class StageDepth(BranchChoice):
    def __init__(self, stages: list[list[int]], count: int, *, least: int = 1, temperature: float = 10.0) -> None:
        """`stages`: per stage, its branches' indices (0 ... count - 1) in the order the network runs them;
        `least`: how many of its removable blocks a stage keeps at least."""
        super().__init__()
        if sorted(i for stage in stages for i in stage) != list(range(count)) or least < 0:
            raise ValueError("every branch must be in exactly one stage, and least must be >= 0")
        searched = [stage for stage in stages if len(stage) > least]
        longest = max((len(stage) for stage in searched), default=0)
        stage_of, position = torch.full((count,), -1, dtype=torch.long), torch.zeros(count, dtype=torch.long)
        for s, stage in enumerate(searched):
            for j, branch in enumerate(stage):
                stage_of[branch], position[branch] = s, j
        depths = torch.arange(longest + 1)[None, :]
        sizes = torch.tensor([len(stage) for stage in searched], dtype=torch.long)[:, None]
        self.register_buffer("stage_of", stage_of)  # -1: a branch of a stage without a choice (always stays)
        self.register_buffer("position", position)
        self.register_buffer("valid", (depths >= least) & (depths <= sizes))  # [S, K]: d is a candidate of s
        self.logits = nn.Parameter(torch.zeros(len(searched), longest + 1))
        self.temperature = float(temperature)

    @property
    def searched(self) -> int:
        """How many stages have a choice."""
        return self.logits.shape[0]

    def _masked(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.masked_fill(~self.valid, float("-inf"))

    def probabilities(self) -> torch.Tensor:
        """[S, K]: each stage's distribution over depths (0 where d exceeds its blocks; differentiable)."""
        return torch.softmax(self._masked(self.logits), dim=1)

    def most_probable(self) -> torch.Tensor:
        """[S]: each stage's most probable depth."""
        return self._masked(self.logits.detach()).argmax(dim=1)

    def _kept_by(self, depths: torch.Tensor) -> torch.Tensor:
        """[B, ...]: 1 where the depth(s) of the branch's stage keep the branch (always, outside the stages)."""
        inside = self.stage_of >= 0
        chosen = depths[self.stage_of.clamp_min(0)] if self.searched else \
            torch.zeros((len(self.stage_of),) + depths.shape[1:], dtype=torch.long, device=self.stage_of.device)
        shape = (-1,) + (1,) * (chosen.dim() - 1)
        kept = (self.position.view(shape) < chosen) | ~inside.view(shape)
        return kept.to(self.logits.dtype)

    def alive_probabilities(self) -> torch.Tensor:
        if not self.searched:
            return torch.ones(len(self.stage_of), dtype=self.logits.dtype, device=self.logits.device)
        depths = torch.arange(self.logits.shape[1], device=self.logits.device)
        keeps = (self.position[:, None] < depths[None, :]).to(self.logits.dtype)  # [B, K]
        alive = (self.probabilities()[self.stage_of.clamp_min(0)] * keeps).sum(dim=1)
        return torch.where(self.stage_of >= 0, alive, torch.ones_like(alive))

    def settled(self) -> torch.Tensor:
        return self._kept_by(self.most_probable())

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Two distinct depths per stage ([S, 2]) and their weights ([S, 2], rows summing to 1)."""
        perturbed = self._masked(self.logits).log_softmax(dim=1)  # -inf at depths the stage does not have
        if self.temperature > 0:
            uniform = torch.rand_like(self.logits).clamp(1e-10, 1 - 1e-10)
            perturbed = (perturbed - torch.log(-torch.log(uniform))) / self.temperature
        with torch.no_grad():
            weights = (torch.softmax(perturbed, dim=1) + 1e-12) * self.valid
            chosen = torch.multinomial(weights, 2, replacement=False)
        return chosen, torch.softmax(perturbed.gather(1, chosen), dim=1)

    def forward(self) -> torch.Tensor:
        if not self.training or not self.searched:
            return torch.ones(len(self.stage_of), dtype=self.logits.dtype, device=self.logits.device)
        chosen, weights = self.sample()
        mixed = (weights[self.stage_of.clamp_min(0)] * self._kept_by(chosen)).sum(dim=1)
        return torch.where(self.stage_of >= 0, mixed, torch.ones_like(mixed))

    def extra_repr(self) -> str:
        return (f"stages={self.searched}, branches={len(self.stage_of)}, "
                f"temperature={self.temperature:g}")

"""`group-lasso`: structured sparsity from an ℓ2,1 penalty on every channel's weights (the survey's §2.1,
../shared/papers/survey-*: L(W) = E_D(W) + λ_g Σ_l R_g(W_l)), its strength set by the budget.

1. A channel's group of weights is every slice it owns in every tensor of its channel group (the producing
   convolution's rows, the norm's scale and shift, the consumers' columns; a residual stream's channel owns
   its slices in every block), so the penalty Σ_c a_c ||w_c||_2 drives whole removable channels to zero. The
   weight a_c = sqrt(p_c) * m_g (p_c the channel's number of weights: Yuan and Lin's group weight; m_g its
   group's median root-mean-square weight at the start) makes λ the same pressure in every layer, whatever
   its scale or fan-in: each step shrinks a channel's RMS weight by lr * λ * m_g.
2. The penalty is applied as its proximal step after each weights' step (group soft-thresholding:
   w_c <- w_c * max(0, 1 - lr * λ * a_c / ||w_c||)), which sets channels exactly to zero where plain gradient
   steps would circle zero at a distance that grows with λ. It acts on the channels the scheduled budget
   cuts at this step's ranking (case 4's scores, re-ranked every step; a shrunk channel that the task loss
   pulls back above others leaves the cut): on a converged ResNet-20, the plain penalty on every channel at
   the strength that makes a third of the FLOPs go collapsed the whole network within a few dozen steps
   (top-1 9.8 % after a one-epoch search), since every channel then shrinks faster than the task loss
   restores it.
3. λ is not hand-tuned: the driver's StrengthController raises it while the cost of the channels still
   alive (non-zero) is above the scheduled budget and lowers it below (cascomp.search.control).
4. Decision: channels ranked across groups by RMS weight over their group's starting median (dead channels
   last); the core's projection keeps the top ones that meet the budget, so it decides the last few. A
   removable group with every channel dead goes with its block. The compressed network keeps the search's
   weights (the surviving channels were trained under the penalty; `weights="baseline"` restarts from the
   baseline's).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from cascomp.config import check_choice, check_share
from cascomp.errors import ConfigError
from cascomp.methods.base import Decision, Method
from cascomp.methods.channel_slices import ChannelSlices
from cascomp.methods.sparsity import alive_keep, below_cut, median_per_channel, per_group, ranked_without_dead


@dataclass(frozen=True, kw_only=True)
class GroupLassoConfig:
    """Group lasso: the strength at the start (then set by the budget) and where fine-tuning starts."""

    initial_strength: float = 0.2  # λ: each step shrinks a channel's RMS weight by lr * λ * its group's median
    weights: str = "search"  # fine-tune from the weights trained under the penalty, or "baseline"
    search_share: float = 0.5  # of a total --epochs budget, the share spent searching (rounded down)

    def __post_init__(self) -> None:
        if not self.initial_strength > 0:
            raise ConfigError(f"GroupLassoConfig.initial_strength must be positive, got {self.initial_strength!r}")
        check_choice(self, "weights", ("search", "baseline"))
        check_share(self, "search_share")


class GroupLasso(Method):
    title = "group lasso"
    config_type = GroupLassoConfig
    searches = True
    regularised = True

    def __init__(self, graph, config, goals=None) -> None:
        super().__init__(graph, config, goals)
        self.initial_strength = config.initial_strength
        self.keeps_search_weights = config.weights == "search"
        self.slices = ChannelSlices(graph, graph.gm)
        self.scale = median_per_channel(graph, self.slices.rms(graph.gm))  # m_g per channel (case 1)
        self.weight = self.slices.sizes.sqrt() * self.scale  # a_c
        self.tie_break = 1e-6 * self.slices.rms(graph.gm) / self.scale  # dead channels: the baseline's order

    def prepare(self):
        return copy.deepcopy(self.graph.gm)

    def norm_penalty(self, model) -> torch.Tensor:
        """Σ_c a_c ||w_c||_2 (case 1), differentiable."""
        norms = self.slices.squared_norms(model).clamp_min(0).sqrt()
        return (self.weight.to(norms.device, norms.dtype) * norms).sum()

    def shrink(self, model, step: float, goals: dict[str, float]) -> None:  # case 2
        norms = self.slices.squared_norms(model).detach().double().cpu().sqrt()
        scores = norms / (self.slices.sizes.clamp_min(1).sqrt() * self.scale) + self.tie_break
        cut = below_cut(self.graph, self.expected_ratios, scores, goals)
        factors = (1 - step * self.weight / norms.clamp_min(1e-30)).clamp_min(0)
        self.slices.scale(model, torch.where(cut, factors, torch.ones_like(factors)))

    def _scores(self, model) -> tuple[torch.Tensor, torch.Tensor]:
        rms = self.slices.rms(model)
        return rms / self.scale + self.tie_break, rms > 0

    def measured_ratios(self, model) -> dict[str, float]:  # case 3
        scores, alive = self._scores(model)
        keep = alive_keep(self.graph, alive, scores)
        return {m: float(r) for m, r in self.expected_ratios(keep).items()}

    def decide(self, model) -> Decision:  # case 4
        scores, alive = self._scores(model)
        return Decision(scores=per_group(self.graph, scores), family=ranked_without_dead(self.graph, scores, alive))

"""`vardrop`: variational dropout per channel (the survey's §2.2, ../shared/papers/survey-*: a learned Gaussian
noise on every activation, the filters whose noise grows past a threshold dropped), its strength set by the
budget.

1. Every channel of a group carries multiplicative Gaussian noise 1 + sqrt(α_c) ε with a learned log α_c
   (kernels/channel_noise.py), shared by all tensors of the group and inserted where the masks go, so a
   residual stream's channel is one noise variable. log α starts at `init_log_alpha` (-4: noise of std 0.14).
2. The regulariser is the KL term of Molchanov et al. (2017), averaged over the channels; it pushes every
   log α up, the task loss pulls up the ones a channel needs down. The weights and log α (Adam, `lr`) train
   on the task loss plus λ times it; λ is set by the budget (the driver's StrengthController, as the other
   regularised methods), from the cost of the channels still under the threshold, each counted by how far
   its log α still is from it (linear from the starting value to the threshold): a channel's log α takes
   hundreds of steps to cross, and a controller that waited for crossings would overshoot.
3. Decision: channels ranked across groups by -log α (the least noisy kept; ties by the baseline's filter
   norms), the core's projection keeps the top ones that meet the budget. A removable group whose channels
   all crossed the threshold goes with its block. The compressed network keeps the search's weights
   (`weights="baseline"` restarts from the baseline's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cascomp.config import check_choice, check_share
from cascomp.errors import ConfigError
from cascomp.kernels.channel_noise import ChannelNoise, kl_divergence
from cascomp.methods.base import Decision, Method
from cascomp.methods.scores import filter_norms, normalised
from cascomp.methods.sparsity import alive_keep, per_group, ranked_without_dead
from cascomp.passes import InsertChannelGatesPass


@dataclass(frozen=True, kw_only=True)
class VardropConfig:
    """Variational dropout: the noise's start and drop threshold, its optimiser, where fine-tuning starts."""

    init_log_alpha: float = -4.0
    threshold: float = 3.0  # log α above which a channel is dropped
    lr: float = 0.1  # Adam, on log α
    initial_strength: float = 0.1  # λ on the mean KL per channel at the start (then set by the budget)
    weights: str = "search"
    search_share: float = 0.5  # of a total --epochs budget, the share spent searching (rounded down)

    def __post_init__(self) -> None:
        if not self.init_log_alpha < self.threshold:
            raise ConfigError(f"VardropConfig.init_log_alpha ({self.init_log_alpha}) must be below the threshold "
                              f"({self.threshold})")
        if not (self.lr > 0 and self.initial_strength > 0):
            raise ConfigError("VardropConfig.lr and initial_strength must be positive")
        check_choice(self, "weights", ("search", "baseline"))
        check_share(self, "search_share")


class Vardrop(Method):
    title = "variational dropout"
    config_type = VardropConfig
    searches = True
    regularised = True
    controlled = False  # no cost loss on log α: the KL, at the budget's strength, is the pressure

    def __init__(self, graph, config, goals=None) -> None:
        super().__init__(graph, config, goals)
        self.initial_strength = config.initial_strength
        self.keeps_search_weights = config.weights == "search"
        self.noise = ChannelNoise(graph.channels, init_log_alpha=config.init_log_alpha, threshold=config.threshold)
        norms = normalised(filter_norms(graph, graph.gm))
        self.tie_break = 1e-6 * torch.cat([norms[g.name] for g in graph.groups]).double()

    def prepare(self):
        return InsertChannelGatesPass(self.graph.record, self.graph.slot_of_label, self.noise)(self.graph.gm).gm

    def arch_parameters(self):
        return [self.noise.log_alpha]

    def arch_optimizer(self):
        return torch.optim.Adam([self.noise.log_alpha], lr=self.config.lr)

    def weight_regulariser(self, model) -> torch.Tensor:  # case 2
        return kl_divergence(self.noise.log_alpha).mean()

    def _scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        log_alpha = self.noise.log_alpha.detach().double().cpu()
        return -log_alpha + self.tie_break, log_alpha < self.config.threshold

    def measured_ratios(self, model) -> dict[str, float]:  # case 2
        scores, alive = self._scores()
        config = self.config
        distance = ((config.threshold + scores - self.tie_break) / (config.threshold - config.init_log_alpha))
        keep = torch.minimum(alive_keep(self.graph, alive, scores), distance.clamp(0, 1))
        return {m: float(r) for m, r in self.expected_ratios(keep).items()}

    def decide(self, model) -> Decision:  # case 3
        scores, alive = self._scores()
        return Decision(scores=per_group(self.graph, scores), family=ranked_without_dead(self.graph, scores, alive))

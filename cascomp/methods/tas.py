"""`tas`: Transformable Architecture Search, widths (../shared/papers/tas-*; depth is not searched yet).

1. Per channel group, a categorical distribution over candidate widths, `fractions` of the group's size
   (the paper's 0.3 ... 1.0), rounded to legal widths; a width keeps the group's channels of largest
   filter norm (`kernels/width_choices.py`, inserted where the masks go, so a residual stream or a
   concatenation shares one sampled width). Each step draws two widths per group from the Gumbel-softmax
   distribution at temperature tau, decayed linearly from `tau_start` to `tau_end` over the search, and
   combines them weighted by the softmax of their perturbed logits (eqs. 3-4).
2. Bi-level (Algorithm 1): the weights train on one half of the training split (SGD, the task loss with
   distillation from the baseline), the architecture on the other (Adam, lr 1e-3, weight decay 1e-3) with
   the task loss plus lambda_cost times the piecewise cost loss with tolerance t (eq. 8): log of the
   expected cost ratio when the most probable architecture is above (1 + t) times the target, minus it when
   below (1 - t) times, nothing inside the band. The expected cost is the cost model at the channels'
   keep-probabilities (exact when every distribution is one-hot).
3. Export: every group's most probable width, the channels of largest filter norm; the budget projection
   lands the plan within 1 % below the targets (the tolerance band alone would not). The compressed network
   starts from the baseline's weights of the kept channels and is trained by the distillation fine-tune
   (T = 4, weight 0.9: the paper's KD transfer, eq. 10).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cascomp.config import check_positive, check_share
from cascomp.errors import ConfigError
from cascomp.kernels.width_choices import WidthChoices
from cascomp.methods.base import Decision, Method
from cascomp.methods.families import scaled_family
from cascomp.methods.scores import filter_norms, normalised
from cascomp.passes import InsertChannelGatesPass


@dataclass(frozen=True, kw_only=True)
class TasConfig:
    fractions: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    tau_start: float = 10.0
    tau_end: float = 0.1
    cost_weight: float = 2.0  # lambda_cost
    tolerance: float = 0.05  # t
    arch_lr: float = 1e-3
    arch_weight_decay: float = 1e-3
    search_share: float = 0.5  # of a total --epochs budget, the share spent searching (rounded down)

    def __post_init__(self) -> None:
        fractions = tuple(self.fractions)
        if len(fractions) < 2 or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1
                                     for f in fractions):
            raise ConfigError(f"TasConfig.fractions must be two or more width fractions in (0, 1], got "
                              f"{self.fractions!r}; e.g. (0.3, 0.5, 0.7, 1.0)")
        object.__setattr__(self, "fractions", fractions)
        check_positive(self, "tau_start", "tau_end", "arch_lr")
        if self.tau_end > self.tau_start:
            raise ConfigError(f"TasConfig.tau_end ({self.tau_end}) must not exceed tau_start ({self.tau_start})")
        if not 0 <= self.tolerance < 1 or self.cost_weight < 0 or self.arch_weight_decay < 0:
            raise ConfigError("TasConfig: tolerance must be in [0, 1), cost_weight and arch_weight_decay ≥ 0")
        check_share(self, "search_share")


def tolerance_loss(expected: torch.Tensor, reached: float, goal: float, tolerance: float) -> torch.Tensor:
    """Eq. 8 for one metric: `expected` the differentiable expected cost ratio, `reached` the ratio of the most
    probable architecture, `goal` the target ratio."""
    if reached > (1 + tolerance) * goal:
        return torch.log(expected)
    if reached < (1 - tolerance) * goal:
        return -torch.log(expected)
    return expected * 0.0


class Tas(Method):
    title = "TAS"
    config_type = TasConfig
    searches = True
    controlled = False  # eq. 8 is the cost loss
    bilevel = True
    keeps_search_weights = False

    def __init__(self, graph, config, goals=None) -> None:
        super().__init__(graph, config, goals)
        self.scores = normalised(filter_norms(graph, graph.gm))
        widths, ranks = [], []
        for group in graph.groups:
            widths.append([graph.constraints.width(group.size, f) for f in config.fractions])
            order = torch.argsort(self.scores[group.name].double(), descending=True, stable=True)
            rank = torch.empty(group.size, dtype=torch.long)
            rank[order] = torch.arange(group.size)
            ranks.append(rank)
        self.choices = WidthChoices(widths, ranks, temperature=config.tau_start)

    def prepare(self):
        return InsertChannelGatesPass(self.graph.record, self.graph.slot_of_label, self.choices)(self.graph.gm).gm

    def arch_parameters(self):
        return [self.choices.logits]

    def arch_optimizer(self):
        return torch.optim.Adam([self.choices.logits], lr=self.config.arch_lr, betas=(0.5, 0.999),
                                weight_decay=self.config.arch_weight_decay)

    def on_step(self, progress: float) -> None:
        config = self.config  # decayed linearly over the search
        self.choices.temperature = config.tau_start - (config.tau_start - config.tau_end) * min(max(progress, 0.0), 1.0)

    def penalty(self) -> dict[str, torch.Tensor]:
        return self.expected_ratios(self.choices.keep_probabilities())

    def arch_loss(self, expected: dict[str, torch.Tensor], progress: float) -> torch.Tensor | None:
        reached = self._most_probable_cost()
        losses = [tolerance_loss(ratio, reached[metric], self.goals[metric], self.config.tolerance)
                  for metric, ratio in expected.items()]
        return self.config.cost_weight * sum(losses) if losses else None

    def _most_probable_cost(self) -> dict[str, float]:
        with torch.no_grad():
            return {m: float(r) for m, r in self.expected_ratios(self.choices.settled().double()).items()}

    def decide(self, model) -> Decision:
        widths = self.choices.most_probable().cpu().tolist()
        proposal = {group.name: float(width) for group, width in zip(self.graph.groups, widths)}
        return Decision(scores=self.scores, family=scaled_family(self.graph, proposal))

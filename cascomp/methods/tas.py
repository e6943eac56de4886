"""`tas`: Transformable Architecture Search, widths and depth (../shared/papers/tas-*).

1. Per channel group, a categorical distribution over candidate widths, `fractions` of the group's size
   (the paper's 0.3 ... 1.0), rounded to legal widths; a width keeps the group's channels of largest
   filter norm (`kernels/width_choices.py`, inserted where the masks go, so a residual stream or a
   concatenation shares one sampled width). Each step draws two widths per group from the Gumbel-softmax
   distribution at temperature tau, decayed linearly from `tau_start` to `tau_end` over the search, and
   combines them weighted by the softmax of their perturbed logits (eqs. 3-4). With `alignment="mask"` (the
   default) each channel is scaled by the total weight of the drawn widths that keep it; with "cwi" the
   paper's channel-wise interpolation aligns the two widths wherever a tensor holds one whole group along
   dim 1 (after BatchNorm, as the gates sit), masks elsewhere (passes/interpolate_channels.py).
2. Bi-level (Algorithm 1): the weights train on one half of the training split (SGD, the task loss with
   distillation from the baseline), the architecture on the other (Adam, lr 1e-3, weight decay 1e-3) with
   the task loss plus lambda_cost times the piecewise cost loss with tolerance t (eq. 8): log of the
   expected cost ratio when the most probable architecture is above (1 + t) times the target, minus it when
   below (1 - t) times, nothing inside the band. The expected cost is the cost model at the channels'
   keep-probabilities (exact when every distribution is one-hot).
   Depth (`depth`, on by default; --widths-only turns it off): per stage, a categorical distribution over
   how many of its removable residual blocks stay (`kernels/stage_depth.py`; the deepest go first; at least
   `least_blocks`, 1 as in the paper, so a stage keeps a block), sampled
   the same way, two depths per step, each block scaled where it is merged back by the weight of the drawn
   depths that keep it (eq. 5 for depths one block apart). The expected cost weights what each block removes
   by its probability of staying, P(depth > its position), and reads the width distributions as given that
   the block stays, so width and depth trade off in one differentiable cost.
3. Export: every group's most probable width and every stage's most probable depth (the removed blocks'
   groups proposed at width 0), the channels of largest filter norm; the budget projection
   lands the plan within 1 % below the targets (the tolerance band alone would not). The compressed network
   starts from the baseline's weights of the kept channels and is trained by the distillation fine-tune
   (T = 4, weight 0.9: the paper's KD transfer, eq. 10).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cascomp.config import check_choice, check_positive, check_share, option
from cascomp.errors import ConfigError
from cascomp.kernels.stage_depth import StageDepth
from cascomp.kernels.width_choices import WidthChoices
from cascomp.methods.base import Decision, Method
from cascomp.methods.families import scaled_family
from cascomp.methods.scores import filter_norms, normalised
from cascomp.methods.search_space import SearchSpace, stages


@dataclass(frozen=True, kw_only=True)
class TasConfig:
    fractions: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    tau_start: float = 10.0
    tau_end: float = 0.1
    cost_weight: float = 2.0  # lambda_cost
    tolerance: float = 0.05  # t
    arch_lr: float = 1e-3
    arch_weight_decay: float = 1e-3
    alignment: str = option("mask", "--alignment", "TAS: how two drawn widths are combined: 'mask' (default: "
                            "each channel weighted by the drawn widths that keep it) or 'cwi' (the paper's "
                            "channel-wise interpolation where a tensor holds one whole group)",
                            choices=("mask", "cwi"))
    depth: bool = option(True, "--widths-only", "TAS: search the widths only, not how many residual blocks each "
                         "stage keeps", value=False)
    least_blocks: int = 1  # of a stage's removable blocks, how many stay at least (the paper: 1 ... L)
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
        if isinstance(self.least_blocks, bool) or not isinstance(self.least_blocks, int) or self.least_blocks < 0:
            raise ConfigError(f"TasConfig.least_blocks must be a whole number ≥ 0, got {self.least_blocks!r}")
        check_share(self, "search_share")
        check_choice(self, "alignment", ("mask", "cwi"))


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
        self.choices = WidthChoices(widths, ranks, temperature=config.tau_start,
                                    interpolate=config.alignment == "cwi")
        self.depth = None
        if config.depth and graph.cost_model.branches:
            depth = StageDepth(stages(graph), len(graph.cost_model.branches), least=config.least_blocks,
                               temperature=config.tau_start)
            self.depth = depth if depth.searched else None  # no stage with a choice: widths only
        self.space = SearchSpace(graph, self.choices, self.depth)

    def prepare(self):
        return self.space.prepare()

    def arch_parameters(self):
        return self.space.parameters()

    def arch_optimizer(self):
        return torch.optim.Adam(self.arch_parameters(), lr=self.config.arch_lr, betas=(0.5, 0.999),
                                weight_decay=self.config.arch_weight_decay)

    def on_step(self, progress: float) -> None:
        config = self.config  # decayed linearly over the search
        tau = config.tau_start - (config.tau_start - config.tau_end) * min(max(progress, 0.0), 1.0)
        self.choices.temperature = tau
        if self.depth is not None:
            self.depth.temperature = tau

    def penalty(self) -> dict[str, torch.Tensor]:
        return self.expected_ratios(*self.space.probabilities())

    def arch_loss(self, expected: dict[str, torch.Tensor], progress: float) -> torch.Tensor | None:
        reached = self._most_probable_cost()
        losses = [tolerance_loss(ratio, reached[metric], self.goals[metric], self.config.tolerance)
                  for metric, ratio in expected.items()]
        return self.config.cost_weight * sum(losses) if losses else None

    def _most_probable_cost(self) -> dict[str, float]:
        keep, alive = self.space.settled()
        with torch.no_grad():
            ratios = self.expected_ratios(keep.double(), None if alive is None else alive.double())
        return {m: float(r) for m, r in ratios.items()}

    def decide(self, model) -> Decision:
        widths = self.choices.most_probable().cpu().tolist()
        removed = self.space.removed()
        proposal = {group.name: 0.0 if group.name in removed else float(width)
                    for group, width in zip(self.graph.groups, widths)}
        return Decision(scores=self.scores, family=scaled_family(self.graph, proposal))

"""`figs`: Fine-Grained Stochastic architecture search (FiGS, ../shared/papers/figs-*).

1. One logistic-sigmoid (binary Concrete) gate per channel group channel, inserted where the reference
   masks go, so one sample is shared by every tensor of the group (the paper's group masking). Logits start
   at `init_logit` (2.5: keep-probability 0.92), temperature `temperature` (1e-3, no annealing). With
   `estimator="expected"` (the default) a gate's forward value is the tau -> 0 draw (Bernoulli(p)) and its
   gradient is the mean derivative p(1 - p) of that draw's relaxation; `"concrete"` back-propagates through
   the sampled sigmoid, whose gradient is a rare 1/tau spike (the task loss then reaches a logit only now
   and then, too seldom in a search of a few epochs).
2. The penalty is the expected cost: the core cost model evaluated at the keep-probabilities, which makes
   each layer's cost the product of its input and output groups' expected widths (the paper's eq. 6), for
   FLOPs and parameters alike. It is exact when the probabilities are 0 or 1. Its gradient is rescaled so
   that every group's logits feel the same mean push (`cost_balance="group"`): with the raw gradient the
   costliest group (a full-resolution residual stream) collapses to one channel in a short search. The
   logits are trained with the paper's optimiser, Adam with eps = 1 (lr 1.6).
3. The exported architecture gives each group floor(sum of its keep-probabilities) channels, the most
   probable ones (ties, e.g. channels the search never touched, go to the larger filter norm); the budget
   projection then scales those widths so the plan meets every target. A group whose residual branch the
   depth analysis lets go and whose gates keep under one channel in expectation is removed with its block
   (elsewhere a group keeps at least its minimum width).
4. The search decides the architecture only: the compressed network starts from the baseline's weights of
   the kept channels (`weights="baseline"`), as the paper retrains its exported architecture rather than
   keeping the search's weights, which were trained under random channel drops.
5. With `branch_gates` (--branch-gates), depth is searched too: one more gate per residual branch the depth
   analysis lets go (kernels/branch_gates.py), drawn like the channel gates and multiplying the branch where
   it is merged back; the expected cost weights what each branch removes by its alive-probability (the
   channel gates' probabilities then read as given that the branch stays). The branch gates' logits are
   trained with the channel gates' optimiser, their cost push balanced as one more group. A branch whose
   gate ends below one half is removed with its block.
The gates live in the search space (cascomp.methods.search_space): a channel choice and, with depth, a branch choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cascomp.config import check_choice, check_positive, check_share, option
from cascomp.kernels.branch_gates import BranchGates
from cascomp.kernels.channel_gates import ConcreteGates
from cascomp.methods.base import Decision, Method
from cascomp.methods.families import scaled_family
from cascomp.methods.scores import filter_norms, normalised
from cascomp.methods.search_space import SearchSpace


@dataclass(frozen=True, kw_only=True)
class FigsConfig:
    """FiGS: logistic-sigmoid gates (temperature, initial logit) and the optimiser of the gate logits."""

    temperature: float = option(1e-3, "--temperature", "FiGS Concrete temperature, read by --estimator concrete "
                                "only (default 1e-3)", requires=("estimator", "concrete"))
    init_logit: float = 2.5
    logit_lr: float = 1.6
    estimator: str = option("expected", "--estimator", "FiGS gate gradient: 'expected' (default; Bernoulli draws "
                            "with their mean derivative) or 'concrete' (through the sampled sigmoid at "
                            "--temperature)", choices=("expected", "concrete"))
    cost_balance: str = "group"
    logit_optimizer: str = "adam"
    weights: str = option("baseline", "--keep-search-weights", "FiGS: fine-tune from the weights trained during "
                          "the search (default: the baseline's weights of the kept channels)", value="search")
    branch_gates: bool = option(False, "--branch-gates", "FiGS: also gate every removable residual branch, so "
                                "the search may remove blocks", value=True)
    search_share: float = 0.5  # of a total --epochs budget, the share spent searching (rounded down)

    def __post_init__(self) -> None:
        check_positive(self, "temperature", "logit_lr")
        check_share(self, "search_share")
        check_choice(self, "estimator", ("concrete", "expected"))
        check_choice(self, "cost_balance", ("group", "raw"))
        check_choice(self, "logit_optimizer", ("sgd", "adam"))
        check_choice(self, "weights", ("baseline", "search"))


class Figs(Method):
    title = "FiGS"
    config_type = FigsConfig
    searches = True

    def __init__(self, graph, config, goals=None) -> None:
        super().__init__(graph, config, goals)
        self.gates = ConcreteGates(tuple(g.size for g in graph.groups), init_logit=config.init_logit, temperature=config.temperature,
                                   estimator=config.estimator)
        branches = None
        if config.branch_gates and graph.cost_model.branches:  # case 5
            branches = BranchGates(len(graph.cost_model.branches), init_logit=config.init_logit,
                                   temperature=config.temperature, estimator=config.estimator)
        self.space = SearchSpace(graph, self.gates, branches)
        self.keeps_search_weights = config.weights == "search"

    def prepare(self):
        return self.space.prepare()

    def arch_parameters(self):
        return self.space.parameters()

    def arch_optimizer(self):
        if self.config.logit_optimizer == "adam":
            return torch.optim.Adam(self.arch_parameters(), lr=self.config.logit_lr, eps=1.0)
        return torch.optim.SGD(self.arch_parameters(), lr=self.config.logit_lr)

    def cost_direction(self, gradients):
        if self.config.cost_balance == "raw":
            return gradients
        gradient = gradients[0]
        overall = gradient.abs().mean()
        direction = torch.zeros_like(gradient)
        start = 0
        for group in self.graph.groups:
            part = slice(start, start + group.size)
            direction[part] = gradient[part] * (overall / gradient[part].abs().mean().clamp_min(1e-30))
            start += group.size
        # the branch gates' push is balanced as one more group
        return [direction] + [g * (overall / g.abs().mean().clamp_min(1e-30)) for g in gradients[1:]]

    def penalty(self) -> dict[str, torch.Tensor]:
        return self.expected_ratios(*self.space.probabilities())  # case 2

    def decide(self, model) -> Decision:
        probabilities = self.gates.probabilities().detach().double()
        norms = normalised(filter_norms(self.graph, model))
        scores, proposal = {}, {}
        removed = self.space.removed()
        for group, offset in zip(self.graph.groups, self.graph.offsets):
            chosen = probabilities[offset:offset + group.size]
            tie_break = 1e-6 * norms[group.name] / norms[group.name].max().clamp_min(1e-12)
            scores[group.name] = chosen + tie_break
            # case 3; a group whose residual branch may go (graph.depth.removable) and keeps under one expected
            # channel is proposed at width 0: the block is removed
            least = 0 if group.name in self.graph.depth.removable else 1
            proposal[group.name] = float(max(math.floor(float(chosen.sum())), least))
            if group.name in removed:  # case 5: its branch gate went below one half
                proposal[group.name] = 0.0
        return Decision(scores=scores, family=scaled_family(self.graph, proposal))

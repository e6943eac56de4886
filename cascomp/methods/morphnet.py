"""`morphnet`: shrink with a cost-weighted ℓ1 on the normalisation scales, then expand every layer by one
width multiplier (the survey's §2.3, ../shared/papers/survey-*: F(layer L) = C Σ_i A_L,i Σ_j B_L,j with A, B
the alive inputs and outputs, relaxed to an ℓ1 on the batch-norm scales).

1. Shrink: the penalty Σ_c w_c m_g ||γ_c|| over every channel's normalisation scales (every norm's scale a
   channel group holds: a residual stream's channel has one per block; a group with no norm scale falls back
   to all its weights). w_c is the channel's cost: the derivative of the targeted costs (FLOPs, parameters:
   whichever the budget binds) with respect to keeping the channel, at the channels alive now, so a channel
   counts the alive channels on its inputs and outputs (eq. 3), re-evaluated every step and scaled to mean 1;
   m_g is the group's median |γ| at the start, so λ is the same pressure in every layer. Applied as the
   proximal step (soft-thresholding, exact zeros) on the channels the scheduled budget cuts at this step's
   ranking by |γ| per unit of cost, with the strength set by the budget (as `group-lasso`, cascomp.search).
2. Expand: one multiplier for every group's alive width, solved by the core's budget projection so the
   target holds exactly (within 1 % below); the kept channels are each group's largest |γ|. A removable
   group with no channel alive goes with its block.
3. Rounds (`rounds`, default 1): the search is cut into that many shrinks; between two, the expand's widths
   are applied to the search network (the dead channels the multiplier brings back get their baseline
   scales again) and the next shrink starts from there.
4. The compressed network starts from the baseline's weights of the kept channels (`weights="search"` keeps
   the search's): MorphNet's shrink decides the architecture, which is then trained.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from cascomp.config import check_choice, check_share
from cascomp.errors import ConfigError
from cascomp.methods.base import Decision, Method
from cascomp.methods.channel_slices import ChannelSlices
from cascomp.methods.families import scaled_family
from cascomp.methods.sparsity import alive_keep, below_cut, median_per_channel, per_group

NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
ROUNDS = "cascomp_morphnet_expands"


@dataclass(frozen=True, kw_only=True)
class MorphNetConfig:
    """MorphNet: shrink/expand rounds, the strength at the start (then set by the budget), fine-tuning start."""

    rounds: int = 1
    initial_strength: float = 0.2  # λ: each step shrinks a cut channel's |γ| by lr * λ * w_c * its group's median
    weights: str = "baseline"  # fine-tune from the baseline's weights of the kept channels, or "search"
    search_share: float = 0.5  # of a total --epochs budget, the share spent searching (rounded down)

    def __post_init__(self) -> None:
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise ConfigError(f"MorphNetConfig.rounds must be a whole number >= 1, got {self.rounds!r}")
        if not self.initial_strength > 0:
            raise ConfigError(f"MorphNetConfig.initial_strength must be positive, got {self.initial_strength!r}")
        check_choice(self, "weights", ("search", "baseline"))
        check_share(self, "search_share")


def is_norm_scale(param: str, module: nn.Module | None) -> bool:
    return isinstance(module, NORMS) and param.rpartition(".")[2] == "weight"


class MorphNet(Method):
    title = "MorphNet"
    config_type = MorphNetConfig
    searches = True
    regularised = True

    def __init__(self, graph, config, goals=None) -> None:
        super().__init__(graph, config, goals)
        self.initial_strength = config.initial_strength
        self.keeps_search_weights = config.weights == "search"
        self.slices = ChannelSlices(graph, graph.gm, is_norm_scale)
        self.scale = median_per_channel(graph, self.slices.rms(graph.gm))  # m_g (case 1)
        self.tie_break = 1e-6 * self.slices.rms(graph.gm) / self.scale
        self.model = None

    def prepare(self):
        self.model = copy.deepcopy(self.graph.gm)
        # the expands done so far, in the model's state: a resumed search goes on from its checkpoint's
        self.model.register_buffer(ROUNDS, torch.zeros((), dtype=torch.long))
        return self.model

    def cost_weights(self, alive: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """w_c (case 1): d(targeted cost ratios)/d(keep_c) at the alive channels, scaled to mean 1."""
        keep = alive_keep(self.graph, alive, scores).requires_grad_(True)
        ratios = self.expected_ratios(keep)
        total = sum(ratios[m] for m in (self.goals or ratios) if m in ratios)
        (gradient,) = torch.autograd.grad(total, keep)
        gradient = gradient.detach().clamp_min(0)
        return gradient / gradient.mean().clamp_min(1e-30)

    def _scores(self, model) -> tuple[torch.Tensor, torch.Tensor]:
        rms = self.slices.rms(model)
        return rms / self.scale + self.tie_break, rms > 0

    def measured_ratios(self, model) -> dict[str, float]:
        scores, alive = self._scores(model)
        return {m: float(r) for m, r in self.expected_ratios(alive_keep(self.graph, alive, scores)).items()}

    def shrink(self, model, step: float, goals: dict[str, float]) -> None:  # case 1
        scores, alive = self._scores(model)
        with torch.enable_grad():
            weights = self.cost_weights(alive, scores)
        cut = below_cut(self.graph, self.expected_ratios, scores / weights.clamp_min(1e-6), goals)
        norms = self.slices.squared_norms(model).detach().double().cpu().sqrt()  # ||γ_c||
        factors = (1 - step * weights * self.scale * self.slices.sizes.clamp_min(1).sqrt() / norms.clamp_min(1e-30))
        self.slices.scale(model, torch.where(cut, factors.clamp_min(0), torch.ones_like(factors)))

    def on_step(self, progress: float) -> None:  # case 3: expand between two shrinks
        rounds = self.config.rounds
        done = getattr(self.model, ROUNDS)
        if int(done) >= rounds - 1 or progress < (int(done) + 1) / rounds:
            return
        done += 1
        scores, alive = self._scores(self.model)
        widths = self.expanded_widths(per_group(self.graph, alive.double()))
        revive = torch.zeros_like(alive)
        for group, offset in zip(self.graph.groups, self.graph.offsets):
            order = torch.argsort(scores[offset:offset + group.size], descending=True)[:widths[group.name]]
            revive[offset + order] = True
        self.slices.restore(self.model, self.graph.gm, revive & ~alive)

    def expanded_widths(self, alive: dict[str, torch.Tensor]) -> dict[str, int]:
        """Case 3: every group's alive width times one multiplier, the largest whose cost meets the goals."""
        counts = {name: int(a.sum()) for name, a in alive.items()}

        def widths(multiplier: float) -> dict[str, int]:
            return {g.name: min(g.size, math.ceil(multiplier * counts[g.name])) if counts[g.name] or
                    g.name in self.graph.depth.removable else 1 for g in self.graph.groups}

        def fits(multiplier: float) -> bool:
            keep = torch.cat([(torch.arange(g.size) < w).double() for g, w in
                              zip(self.graph.groups, widths(multiplier).values())])
            reached = self.expected_ratios(keep)
            return all(float(reached[m]) <= goal for m, goal in self.goals.items() if m in reached)

        low, high = 1.0, max(g.size for g in self.graph.groups) * 1.0
        for _ in range(30):
            middle = (low + high) / 2
            low, high = (middle, high) if fits(middle) else (low, middle)
        return widths(low)

    def decide(self, model) -> Decision:  # case 2
        scores, alive = self._scores(model)
        proposal = {g.name: float(int(alive[o:o + g.size].sum()) if alive[o:o + g.size].any() or
                                  g.name in self.graph.depth.removable else 1)
                    for g, o in zip(self.graph.groups, self.graph.offsets)}
        return Decision(scores=per_group(self.graph, scores), family=scaled_family(self.graph, proposal))

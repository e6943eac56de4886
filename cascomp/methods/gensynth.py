"""`gensynth`: a generator-inquisitor loop in the spirit of Generative Synthesis (the survey's §2.4,
../shared/papers/survey-*). The original is closed and learns a generator network; this is not it. What it
keeps is the loop the survey describes: probe the current network, synthesise a more compact one under the
targets and the operational requirements, inherit its weights, train it briefly, repeat until the targets
hold.

1. Inquisitor: every channel's importance is the first-order loss change when it goes, |Σ activation ×
   gradient| of its gate (kernels/channel_mask.py), gathered over the training batches of the current
   stage (not a held-out split: the search reads none).
2. Generator: `iterations` stages spaced over the first 60 % of the search; stage k removes the channels of
   least importance per unit of cost (the cost model's derivative at the current architecture, so a channel
   counts its alive neighbours) until the cost is at 1 - k/K of the way from the baseline to the target.
   Each architecture is a subset of the one before (the loop shrinks monotonically), a group keeps its
   minimum width unless its residual branch may go, and the weights are inherited: the search keeps
   training the same network under the new mask, which is the brief fine-tuning between stages.
3. The exported architecture is the last stage's, projected by the core onto the budget under its channel
   multiples (`round_to`), within 1 % below every target; fine-tuning starts from the search's weights.
   The survey's accuracy tolerance (`--target drop=...`: the most compact network within a drop of the
   baseline's top-1) is not built: the loop stops at the FLOPs/params targets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cascomp.config import check_choice, check_share
from cascomp.errors import ConfigError
from cascomp.kernels.channel_mask import ChannelMask
from cascomp.methods.base import Decision, Method
from cascomp.methods.sparsity import alive_keep, below_cut, per_group, ranked_without_dead
from cascomp.passes import InsertChannelGatesPass
from cascomp.passes.insert_channel_gates import GATES

SHRINKING = 0.6  # the share of the search over which the stages are spaced; the rest trains the last one
STAGE = "cascomp_gensynth_stage"


@dataclass(frozen=True, kw_only=True)
class GenSynthConfig:
    """GenSynth: how many generator stages, and where fine-tuning starts."""

    iterations: int = 8
    weights: str = "search"
    search_share: float = 0.5  # of a total --epochs budget, the share spent searching (rounded down)

    def __post_init__(self) -> None:
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 1:
            raise ConfigError(f"GenSynthConfig.iterations must be a whole number >= 1, got {self.iterations!r}")
        check_choice(self, "weights", ("search", "baseline"))
        check_share(self, "search_share")


class GenSynth(Method):
    title = "GenSynth-style loop"
    config_type = GenSynthConfig
    searches = True

    def __init__(self, graph, config, goals=None) -> None:
        super().__init__(graph, config, goals)
        self.keeps_search_weights = config.weights == "search"
        self.mask = ChannelMask(graph.channels)
        self.model = None
        self.history: list[dict[str, float]] = []  # the cost after every stage

    def prepare(self):
        self.model = InsertChannelGatesPass(self.graph.record, self.graph.slot_of_label, self.mask)(self.graph.gm).gm
        # the stages done so far, in the model's state: a resumed search goes on from its checkpoint's
        self.model.register_buffer(STAGE, torch.zeros((), dtype=torch.long))
        return self.model

    def penalty(self) -> dict[str, torch.Tensor]:  # what the progress line shows: the current architecture's cost
        return self.expected_ratios(self.mask.keep.detach().double())

    def on_step(self, progress: float) -> None:  # case 2
        iterations = self.config.iterations
        stage = min(iterations, math.floor(progress / SHRINKING * iterations + 1e-9))
        done = getattr(self.model, STAGE)
        while int(done) < stage:
            done += 1
            self.generate({m: 1 - (1 - goal) * int(done) / iterations for m, goal in self.goals.items()})

    def generate(self, goals: dict[str, float]) -> None:
        """One generator stage: drop the least important channels per unit of cost until `goals` hold."""
        importance = self.mask.take_importance()  # gathered since the last stage (checkpointed with the model)
        keep = self.mask.keep.detach().cpu().double()
        alive = keep > 0
        with torch.enable_grad():
            point = alive_keep(self.graph, alive, importance).requires_grad_(True)
            ratios = self.expected_ratios(point)
            (cost,) = torch.autograd.grad(sum(ratios[m] for m in goals if m in ratios), point)
        value = importance / importance[alive].mean().clamp_min(1e-30) / cost.clamp_min(1e-12)
        value = torch.where(alive, value, torch.full_like(value, -1.0))  # the dead stay dead
        cut = below_cut(self.graph, self.expected_ratios, value, goals)
        kept = alive & ~cut
        with torch.no_grad():
            self.mask.keep.copy_((alive_keep(self.graph, kept, value) > 0).to(self.mask.keep.dtype))
        self.history.append({m: float(r) for m, r in self.expected_ratios(self.mask.keep.detach().cpu().double()).items()})

    def decide(self, model) -> Decision:  # case 3
        importance = model.get_submodule(GATES).importance.detach().cpu()  # since the last stage
        alive = model.get_submodule(GATES).keep.detach().cpu() > 0
        scores = alive.double() + 1e-6 * importance / importance.max().clamp_min(1e-30)
        return Decision(scores=per_group(self.graph, scores), family=ranked_without_dead(self.graph, scores, alive))

"""`sensitivity`: widths allocated from each group's measured sensitivity, channels ranked by filter norm.

1. Probes (measured by the driver, `cascomp.train.probe`, without training): the unpruned model, and every
   group alone cut to each of `fractions` of its width (its lowest filter-norm channels go); each probe's
   distillation loss against the baseline after its BatchNorm statistics are re-estimated.
2. A group's sensitivity curve is its probes' loss increase over the unpruned model by width, made monotone
   (a narrower width never hurts less than a wider one: a curve that dips is measurement noise). The loss
   of a set of widths is estimated as the sum of each group's increase at its width.
3. A greedy path from the full model down: each step moves one group to one of its narrower probed widths,
   the move with the least estimated loss per unit of cost saved (looking past the next width, so a flat
   stretch after a steep one is found). The cost is the targeted metrics' ratios, each over its target.
   The path ends with every group at its smallest legal width.
4. The family is that path (s = 0 its end, s = 1 the full model, the group that moves between two members
   interpolated); the budget projection takes its widest member that fits and fills the rest by score.
5. With `remove_blocks` (the default; --keep-blocks turns it off), every group whose residual branch the
   depth analysis lets go (graph.depth.removable) is probed at width 0 too (the branch rewritten away), and the path may take it there: a block goes where
   its measured loss per unit of cost saved is the lowest move. That point is not made monotone with the
   widths before it (a removed block leaves the identity, which can hurt less than a one-channel branch).
Probes cost forward passes only: (1 + groups x fractions [+ removable groups]) x (calibration + scoring) batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cascomp.config import option
from cascomp.errors import ConfigError
from cascomp.ir.plan import Plan
from cascomp.methods.base import Decision, Method
from cascomp.methods.scores import filter_norms, normalised


@dataclass(frozen=True, kw_only=True)
class SensitivityConfig:
    """Sensitivity: each group probed alone at these keep fractions, on a few fixed training batches (BN
    statistics re-estimated on `calibration_batches`, the loss averaged over `scoring_batches`)."""

    fractions: tuple[float, ...] = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)
    calibration_batches: int = 4
    scoring_batches: int = 4
    remove_blocks: bool = option(True, "--keep-blocks", "sensitivity: remove no residual block (by default each "
                                 "block the depth analysis allows is probed at width 0 and removed where that "
                                 "costs the least loss per unit of cost saved)", value=False)

    def __post_init__(self) -> None:
        fractions = tuple(self.fractions)
        if not fractions or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1
                                for f in fractions):
            raise ConfigError(f"SensitivityConfig.fractions must be keep fractions in (0, 1), got {self.fractions!r}; "
                              "e.g. (0.25, 0.5, 0.75)")
        object.__setattr__(self, "fractions", fractions)
        for name in ("calibration_batches", "scoring_batches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"SensitivityConfig.{name} must be a whole number ≥ 1, got {value!r}")


class Sensitivity(Method):
    config_type = SensitivityConfig
    def __init__(self, graph, config, goals: dict[str, float] | None = None) -> None:
        super().__init__(graph, config, goals)
        self.scores = normalised(filter_norms(graph, graph.gm))
        self.probed: list[tuple[str, int]] = []  # (group, width) of each probe after the unpruned one
        self.losses: list[float] | None = None

    def probes(self) -> list[Plan]:
        self.probed = []
        for group in self.graph.groups:
            widths = sorted({self.graph.constraints.width(group.size, f) for f in self.config.fractions}, reverse=True)
            self.probed += [(group.name, width) for width in widths if width < group.size]
        if self.config.remove_blocks:
            self.probed += [(g.name, 0) for g in self.graph.groups if g.name in self.graph.depth.removable]
        plans = [Plan.full(self.graph)]
        plans += [Plan.from_widths(self.graph, self.scores, {name: width}) for name, width in self.probed]
        return plans

    def take_measurements(self, losses: list[float]) -> None:
        self.losses = list(losses)

    def decide(self, model) -> Decision:
        if self.losses is None:
            raise RuntimeError("sensitivity decides from probe measurements; the driver measures probes() first")
        curves = self._curves()
        path = self._greedy_path(curves)
        return Decision(scores=self.scores, family=_path_family(self.graph, path))

    def _curves(self) -> dict[str, list[tuple[int, float]]]:
        """Per group: (width, loss increase) from the full width down, monotone (case 2)."""
        unpruned = self.losses[0]
        curves = {g.name: [(g.size, 0.0)] for g in self.graph.groups}
        removed = {}
        for (name, width), loss in zip(self.probed, self.losses[1:]):
            if width == 0:
                removed[name] = loss - unpruned
            else:
                curves[name].append((width, max(loss - unpruned, curves[name][-1][1])))
        for group in self.graph.groups:  # the path's end: the smallest legal width, at least as bad as probed
            smallest = self.graph.constraints.smallest(group.size)
            if curves[group.name][-1][0] > smallest:
                curves[group.name].append((smallest, curves[group.name][-1][1]))
            if group.name in removed:  # and past it, no width at all (case 5), as measured: a removed block
                # leaves the skip connection alone, which may hurt less than a branch of one channel
                curves[group.name].append((0, removed[group.name]))
        return curves

    def _greedy_path(self, curves: dict[str, list[tuple[int, float]]]) -> list[dict[str, int]]:
        """Width sets from the full model to every group at its smallest width, one move per step (case 3)."""
        position = {name: 0 for name in curves}
        widths = {name: curve[0][0] for name, curve in curves.items()}
        path = [dict(widths)]
        current = self._cost(widths)
        while True:
            best = None
            for name, curve in curves.items():
                here = curve[position[name]][1]
                for index in range(position[name] + 1, len(curve)):
                    saved = current - self._cost({**widths, name: curve[index][0]})
                    if saved <= 0:
                        continue
                    rate = (curve[index][1] - here) / saved
                    if best is None or rate < best[0] or (rate == best[0] and saved > best[3]):
                        best = (rate, name, index, saved)
            if best is None:
                return path
            _, name, index, saved = best
            position[name], widths[name] = index, curves[name][index][0]
            current -= saved
            path.append(dict(widths))

    def _cost(self, widths: dict[str, int]) -> float:
        keep = torch.zeros(self.graph.channels, dtype=torch.float64)
        for group, offset in zip(self.graph.groups, self.graph.offsets):
            keep[offset:offset + widths[group.name]] = 1
        cost, baseline = self.graph.cost_model.cost(keep), self.baseline
        goals = self.goals or {"flops": 1.0}
        return sum(getattr(cost, metric) / max(getattr(baseline, metric), 1e-12) / goal for metric, goal in goals.items())


def _path_family(graph, path: list[dict[str, int]]):
    """s in [0, 1] -> keep fractions along the path reversed (s = 1: its first member, the full model)."""
    steps = len(path) - 1

    def fractions(s: float) -> dict[str, float]:
        position = (1 - min(max(s, 0.0), 1.0)) * steps
        index = min(int(position), max(steps - 1, 0))
        within = position - index
        wide, narrow = path[index], path[min(index + 1, steps)]
        # a group at width 0 on both sides is removed (a fraction of exactly 0); between widths it keeps some
        return {g.name: 0.0 if wide[g.name] == narrow[g.name] == 0 or (within == 1 and narrow[g.name] == 0) else
                max(((1 - within) * wide[g.name] + within * narrow[g.name]) / g.size, 1e-9) for g in graph.groups}

    return fractions

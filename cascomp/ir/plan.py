"""Plans: which channels of each group survive, and which convolutions become cheaper operators first.
JSON-serialisable and validated against a graph.

Format 2 (format 1, widths only, still loads): {"format": 2, "keep": {group: [indices]}, "operators":
{module path: candidate name}}. `operators` (DARC's substitutions: "3x3DS", "1x1FC", "3x3DS+1x1FC",
"shift") name convolutions of the original network; `keep` then names the groups of the network with those operators
substituted (`cascomp.apply_plan` substitutes, traces again and prunes).

Constraints every method respects live in the graph (`Constraints`: ignored modules, channel multiple,
minimum width) and are checked here, so no method has to re-implement them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from cascomp.errors import PlanError
from cascomp.ir.keep import statistic_masks

if TYPE_CHECKING:
    from cascomp.ir.graph import Graph

PLAN_FORMAT = 2
READS = (1, 2)  # the formats from_dict takes (1: before operators)


@dataclass(frozen=True)
class Plan:
    """`keep[group name]` = sorted channel indices kept; groups not listed keep every channel.

    An empty tuple removes the residual branch behind a group, where `graph.depth.removable` allows it.
    `operators[module path]` = the candidate operator that convolution becomes before the widths apply.
    """

    keep: dict[str, tuple[int, ...]] = field(default_factory=dict)
    operators: dict[str, str] = field(default_factory=dict)

    # -- construction --------------------------------------------------------------------------------------
    @classmethod
    def full(cls, graph: "Graph") -> "Plan":
        return cls({g.name: tuple(range(g.size)) for g in graph.groups})

    @classmethod
    def uniform(cls, graph: "Graph", keep: float) -> "Plan":
        """The first channels of every group, the same fraction `keep` everywhere (rounded to the graph's
        channel multiple)."""
        _check_fraction(keep)
        return cls({g.name: tuple(range(graph.constraints.width(g.size, keep))) for g in graph.groups})

    @classmethod
    def random(cls, graph: "Graph", keep: float, seed: int = 0) -> "Plan":
        """Random channels of every group, about the fraction `keep` of each (for tests and baselines)."""
        _check_fraction(keep)
        generator = torch.Generator().manual_seed(seed)
        chosen = {}
        for group in graph.groups:
            count = graph.constraints.width(group.size, keep)
            chosen[group.name] = tuple(sorted(torch.randperm(group.size, generator=generator)[:count].tolist()))
        return cls(chosen)

    @classmethod
    def from_widths(cls, graph: "Graph", scores: dict[str, torch.Tensor], widths: dict[str, int]) -> "Plan":
        """Keep the `widths[name]` highest-scoring channels of each group."""
        chosen = {}
        for group in graph.groups:
            width = widths.get(group.name, group.size)
            order = torch.argsort(scores[group.name], descending=True, stable=True)[:width]
            chosen[group.name] = tuple(sorted(order.tolist()))
        return cls(chosen)

    # -- checks --------------------------------------------------------------------------------------------
    def validate(self, graph: "Graph") -> None:
        if self.operators:
            raise PlanError(f"this plan substitutes operators ({len(self.operators)} convolutions, e.g. "
                            f"{next(iter(self.operators))!r}): its groups are those of the substituted network; "
                            "use cascomp.apply_plan / mask_model, which substitute first, or validate "
                            "Plan(plan.keep) against cascomp.substitute_operators(graph, plan.operators)")
        by_name = {g.name: g for g in graph.groups}
        for name, kept in self.keep.items():
            group = by_name.get(name)
            if group is None:
                close = ", ".join(sorted(by_name)[:8])
                raise PlanError(f"plan names group {name!r}, which this graph does not have (groups: {close}, ...); "
                                "was the plan made for another model or other trace options?")
            if len(set(kept)) != len(kept) or any(not 0 <= i < group.size for i in kept):
                raise PlanError(f"plan for group {name!r} must list distinct channel indices in [0, {group.size}), "
                                f"got {list(kept)[:10]}")
            if not kept:
                _check_removable(graph, name, group.size)
                continue
            problem = graph.constraints.check_width(len(kept), group.size)
            if problem:
                raise PlanError(f"plan for group {name!r} keeps {len(kept)} of {group.size} channels: {problem}")

    def kept_channels(self, graph: "Graph") -> torch.Tensor:
        """Bool per global channel of the graph (groups in graph order)."""
        self.validate(graph)
        mask = torch.ones(sum(g.size for g in graph.groups), dtype=torch.bool)
        for group, offset in zip(graph.groups, graph.offsets):
            if group.name in self.keep:
                part = torch.zeros(group.size, dtype=torch.bool)
                part[list(self.keep[group.name])] = True
                mask[offset:offset + group.size] = part
        return mask

    def widths(self, graph: "Graph") -> dict[str, int]:
        return {g.name: len(self.keep.get(g.name, range(g.size))) for g in graph.groups}

    # -- serialisation -------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": PLAN_FORMAT, "keep": {k: list(v) for k, v in self.keep.items()},
                "operators": dict(self.operators)}

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        if not isinstance(data, dict) or data.get("format") not in READS or not isinstance(data.get("keep"), dict):
            raise PlanError(f"not a cascomp plan (expected {{'format': {PLAN_FORMAT}, 'keep': {{group: [indices]}}, "
                            "'operators': {module: candidate}}; format 1 has no 'operators')")
        operators = data.get("operators", {}) if data["format"] >= 2 else {}
        if not isinstance(operators, dict) or not all(isinstance(v, str) for v in operators.values()):
            raise PlanError("plan 'operators' must map module paths to candidate names, e.g. {'conv1': '3x3DS'}")
        try:
            return cls({str(k): tuple(int(i) for i in v) for k, v in data["keep"].items()},
                       {str(k): v for k, v in operators.items()})
        except (TypeError, ValueError) as error:
            raise PlanError(f"plan indices must be integers: {error}") from error

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as error:
            raise PlanError(f"plan is not valid JSON: {error}") from error


def check_statistics(graph: "Graph", label_keep: torch.Tensor) -> None:
    """A statistic over parameter positions (weight standardisation) must keep the positions it needs: a
    variance over one position is NaN, or refused by `F.batch_norm`, in the pruned model as in the masked."""
    for fact in graph.record.statistics:
        masks = statistic_masks(graph.record.param_axes, label_keep, fact)
        left = math.prod(int(mask.sum()) for mask in masks.values())
        if left < fact.minimum:
            axis = fact.axes[0]
            groups = [g.name for g in graph.groups for m in g.members
                      if (m.param, m.dim) in {(a.name, a.dim) for a in fact.axes}]
            raise PlanError(f"the plan leaves {left} position(s) of {axis.name!r} to node {fact.node!r}, which computes "
                            f"a variance over them (weight standardisation) and needs {fact.minimum}: keep at least "
                            f"{fact.minimum} channels in group {', '.join(dict.fromkeys(groups)) or '?'} (min_keep="
                            f"{fact.minimum}, --min-keep {fact.minimum})")


def _check_removable(graph: "Graph", name: str, size: int) -> None:
    """Width 0 is legal only for a group whose removal drops a residual branch exactly (cascomp.ir.depth)."""
    reason = graph.depth.refusal(name)
    if reason is not None:
        raise PlanError(f"plan for group {name!r} keeps 0 of {size} channels: below the minimum of "
                        f"{graph.constraints.smallest(size)}; a group may keep no channel only where that removes a "
                        f"residual branch exactly (see graph.depth.removable), and this one may not: {reason}")


def _check_fraction(keep: float) -> None:
    if not (isinstance(keep, (int, float)) and 0 < keep <= 1):
        raise PlanError(f"keep must be a fraction in (0, 1], got {keep!r}")


def round_width(size: int, keep: float, multiple: int, minimum: int) -> int:
    """Width closest to `keep * size` that is a multiple of `multiple` (or the full size), at least `minimum`."""
    width = max(minimum, int(math.floor(keep * size + 0.5)))
    if multiple > 1 and width < size:
        width = max(multiple, int(round(width / multiple)) * multiple)
    return min(width, size)

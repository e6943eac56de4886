"""`Graph`: a traced model with its channel groups and cost model, what `cascomp.trace` returns."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, replace

import torch
import torch.fx as fx
import torch.nn as nn

from cascomp.errors import CascompWarning, ConfigError
from cascomp.ir.analysis import analyze
from cascomp.ir.context import Record
from cascomp.ir.cost import Cost, CostModel
from cascomp.ir.depth import DepthAnalysis, removable_branches
from cascomp.ir.groups import ChannelGroup, FrozenChannels, build_groups, check_patterns, keep_mask_of_labels
from cascomp.ir.plan import Plan, check_statistics, round_width
from cascomp.ir.trace import graph_inputs, trace_module

LOW_PRUNABLE_SHARE = 0.5  # below this share of its cost in prunable layers, a model is said to prune little


@dataclass(frozen=True, kw_only=True)
class Constraints:
    """Rules every plan obeys: modules to leave alone, a channel multiple, a minimum width per group.

    `min_keep` bounds the width of every group that keeps channels. A plan may also give a group width 0,
    but only a group whose removal drops a residual branch exactly (`graph.depth.removable`); that is an
    explicit choice of the plan's author: `smallest`, `width` and so every search and budget fit still
    keep at least `min_keep` channels (at least one) in every group.
    """

    ignore: tuple[str, ...] = ()
    round_to: int = 1
    min_keep: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.ignore, str) or not all(isinstance(p, str) for p in self.ignore):
            raise ConfigError(f"ignore must be a tuple of module-name patterns, got {self.ignore!r}; "
                              "e.g. ignore=('head.*',) (--ignore 'head.*' on the command line)")
        if isinstance(self.round_to, bool) or not isinstance(self.round_to, int) or self.round_to < 1:
            raise ConfigError(f"round_to (--round-to) must be a positive integer, got {self.round_to!r}; "
                              "e.g. --round-to 8")
        if isinstance(self.min_keep, bool) or not isinstance(self.min_keep, int) or self.min_keep < 1:
            raise ConfigError(f"min_keep (--min-keep) must be a positive integer, got {self.min_keep!r}")

    def width(self, size: int, keep: float) -> int:
        return round_width(size, keep, self.round_to, self.smallest(size))

    def smallest(self, size: int) -> int:
        """Smallest legal width of a group of `size` channels."""
        base = max(self.min_keep, 1)
        if self.round_to > 1:
            base = -(-base // self.round_to) * self.round_to
        return min(base, size)

    def check_width(self, width: int, size: int) -> str | None:
        if width < self.smallest(size):
            return f"below the minimum of {self.smallest(size)} (min_keep={self.min_keep}, round_to={self.round_to})"
        if width != size and width % self.round_to:
            return f"not a multiple of round_to={self.round_to}"
        return None


class Graph:
    """A traced model (`gm`, eval mode) with its `groups`, `frozen` channels (those a plan could remove but for
    the reason given), `output_frozen` (the model output's channels, always kept) and cost model."""

    def __init__(self, model: nn.Module, example_inputs, example_kwargs: dict | None = None, *,
                 constraints: Constraints | None = None) -> None:
        self.example_inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        self.example_kwargs = dict(example_kwargs or {})
        self.constraints = constraints or Constraints()
        self.gm: fx.GraphModule = trace_module(model, self.example_inputs, self.example_kwargs)
        self._inputs = graph_inputs(model, self.example_inputs, self.example_kwargs)
        check_patterns(self.constraints.ignore, self.gm)
        self._ctx = analyze(self.gm, self._inputs)
        grouping = build_groups(self._ctx, self.constraints.ignore)
        self._grouping = grouping
        self.groups: tuple[ChannelGroup, ...] = grouping.groups
        self.frozen: tuple[FrozenChannels, ...] = grouping.frozen
        self.output_frozen: tuple[FrozenChannels, ...] = grouping.output  # the output keeps its channels
        self.offsets = grouping.offsets
        self.depth: DepthAnalysis = removable_branches(self.gm, self._ctx.record, grouping)
        self.cost_model = CostModel(self._ctx, grouping, self.gm, self.depth)
        self._warn_if_little_prunes()

    def with_width_multiple(self, round_to: int) -> "Graph":
        """The same traced model and analysis under another width multiple (nothing is traced again; the
        grouping does not depend on it). The copy shares `gm`, the groups and the cost model."""
        view = copy.copy(self)
        view.constraints = replace(self.constraints, round_to=round_to)
        return view

    def run(self, module: nn.Module):
        """Call a module built from this graph (or the model itself) on the example inputs, passed by
        position in forward's order: keyword inputs in their place, baked-in values given again."""
        with torch.no_grad():
            return module(*self._inputs)

    # -- facts ---------------------------------------------------------------------------------------------
    @property
    def record(self) -> Record:
        return self._ctx.record

    @property
    def slot_of_label(self):
        """Per channel label: 0 when it is frozen, else 1 + its global channel index (groups in order)."""
        return self._grouping.slot_of_label

    @property
    def channels(self) -> int:
        """Prunable channels over all groups (the length of a keep vector)."""
        return sum(g.size for g in self.groups)

    def output_shapes(self) -> list[tuple[int, ...]] | None:
        """Shapes of the model's output tensors, in order (tuples, lists and dicts flattened), as the analysis
        recorded them; None when an output holds a value whose tensors the record does not list (a
        non-tensor, or a container other than a tuple or list)."""
        output = next(node for node in reversed(self.gm.graph.nodes) if node.op == "output")
        nodes: list[fx.Node] = []
        fx.node.map_arg(output.args[0], nodes.append)
        shapes: list[tuple[int, ...]] = []
        for node in nodes:
            if not _flatten_shapes(self.record.shapes.get(node.name), shapes):
                return None
        return shapes

    def group(self, name: str) -> ChannelGroup:
        for group in self.groups:
            if group.name == name:
                return group
        raise ConfigError(f"no channel group named {name!r}; see graph.groups")

    def label_keep(self, plan: Plan) -> torch.Tensor:
        """Bool per channel label: does it survive `plan` (frozen labels always do)."""
        label_keep = keep_mask_of_labels(self._grouping, plan.kept_channels(self))
        check_statistics(self, label_keep)
        return label_keep

    def cost(self, plan: Plan | None = None) -> Cost:
        keep = None if plan is None else plan.kept_channels(self).double()
        return self.cost_model.cost(keep)

    def node_costs(self, plan: Plan | None = None) -> dict[str, float]:
        """MACs per node (per sample) under `plan`."""
        keep = None if plan is None else plan.kept_channels(self)
        return self.cost_model.node_macs(keep)

    def min_cost(self) -> Cost:
        """The smallest cost any plan can reach under the constraints (every group at its minimum width)."""
        keep = torch.zeros(sum(g.size for g in self.groups), dtype=torch.float64)
        for group, offset in zip(self.groups, self.offsets):
            keep[offset:offset + self.constraints.smallest(group.size)] = 1
        return self.cost_model.cost(keep)

    def prunable_share(self) -> dict[str, float | None]:
        """The share of the FLOPs and of the params that scales with some group's width: what pruning can
        touch at all (1 - the cost left with every group emptied). None for a metric the model has none of."""
        full = self.cost_model.cost(None)
        empty = self.cost_model.cost(torch.zeros(self.channels, dtype=torch.float64))
        return {metric: (1 - getattr(empty, metric) / getattr(full, metric)) if getattr(full, metric) else None
                for metric in ("flops", "params")}

    def frozen_reasons(self) -> list[tuple[str, int]]:
        """(reason, channels) for every distinct reason channels are frozen, the most channels first; the
        model output's freeze last."""
        totals: dict[str, int] = {}
        for frozen in self.frozen:
            totals[frozen.reason] = totals.get(frozen.reason, 0) + frozen.channels
        ranked = sorted(totals.items(), key=lambda item: -item[1])
        return ranked + [(frozen.reason, frozen.channels) for frozen in self.output_frozen]

    def _warn_if_little_prunes(self) -> None:
        """A model that traces and rewrites fine but prunes almost nothing must not pass in silence."""
        share = self.prunable_share()
        metric = "flops" if share["flops"] is not None else "params"
        if share[metric] is None or share[metric] >= LOW_PRUNABLE_SHARE:
            return
        reasons = [f"{reason} ({channels} channel{'s' * (channels != 1)})" for reason, channels in
                   self.frozen_reasons()[:3]]
        why = f"; frozen: {'; '.join(reasons)}" if reasons else ""
        uncounted = sorted({what for what, _ in self.record.uncounted + self.record.counted_opaque})
        if uncounted:
            why += f"; not understood: {'; '.join(uncounted[:3])}"
        warnings.warn(f"only {share[metric]:.0%} of this model's {'FLOPs' if metric == 'flops' else 'parameters'} can be pruned (the rest is in layers "
                      f"whose channels are all frozen){why}; `cascomp analyze` lists every reason",
                      CascompWarning, stacklevel=3)

    def __repr__(self) -> str:
        cost = self.cost()
        return (f"Graph({type(self.gm).__name__}: {len(self.gm.graph.nodes)} nodes, {len(self.groups)} groups, "
                f"{cost.flops / 1e6:.2f} MFLOPs, {cost.params / 1e6:.3f} M params)")


def _flatten_shapes(recorded, into: list[tuple[int, ...]]) -> bool:
    """Append the tensor shapes in one node's recorded value; False when part of it is not described."""
    if isinstance(recorded, tuple) and all(isinstance(size, int) for size in recorded):
        into.append(recorded)  # a tensor's shape (an empty tuple: a scalar)
        return True
    return isinstance(recorded, tuple) and all(_flatten_shapes(item, into) for item in recorded)

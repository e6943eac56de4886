"""The search space: a method's choices over a traced graph and what they mean for cost and plan.

A searching method picks one channel choice (kernels/choices.py: a gate per channel, or a categorical width
per group) and, to search depth, one branch choice (a gate per removable residual branch, or a categorical
depth per stage). `SearchSpace` puts them into the model and reads them back:

    choices ──forward (sample | settle)──▶ gate table, branch multipliers ──passes──▶ search model
       │
       ├─ keep_probabilities, alive_probabilities ──▶ cost model ──▶ expected cost (exact at one-hot)
       └─ settled ──▶ proposal: widths per group, 0 where a branch goes ──▶ fit_widths ──▶ plan

Branches are the groups whose emptying removes a residual branch exactly (`graph.depth`), in the cost
model's order (`graph.cost_model.branches`); `stages()` orders them by the residual stream they merge into.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from cascomp.ir.graph import Graph
from cascomp.kernels.choices import BranchChoice, ChannelChoice, GateTable
from cascomp.kernels.width_choices import WidthChoices
from cascomp.passes import InsertBranchGatesPass, InsertChannelGatesPass, InterpolateChannelsPass


def stages(graph: Graph) -> list[list[int]]:
    """The removable branches (indices into `graph.cost_model.branches`) grouped by the residual stream they
    are merged into (the channel groups of their first merge's result), each stage in the order the network
    runs its blocks; a branch merged into a stream of frozen channels is a stage of its own."""
    names = graph.cost_model.branches
    if not names:
        return []
    position = {node.name: index for index, node in enumerate(graph.gm.graph.nodes)}
    starts = torch.tensor(graph.offsets, dtype=torch.long)
    slot_of_label = torch.from_numpy(graph.slot_of_label)
    keyed: dict[object, list[tuple[int, int]]] = {}
    for index, name in enumerate(names):
        branch = graph.depth.branches[name]
        merge = min((m for fold in branch.folds for m in fold.merges), key=position.__getitem__)
        labels = graph.record.labels.get(merge)
        slots = slot_of_label[labels.reshape(-1)] if isinstance(labels, torch.Tensor) else torch.zeros(0)
        slots = slots[slots > 0]
        groups = frozenset((torch.searchsorted(starts, slots - 1, right=True) - 1).tolist())
        key = groups if groups else ("alone", index)
        keyed.setdefault(key, []).append((position[merge], index))
    ordered = sorted((sorted(members) for members in keyed.values()), key=lambda members: members[0][0])
    return [[index for _, index in members] for members in ordered]


class SearchSpace:
    def __init__(self, graph: Graph, channels: ChannelChoice, branches: BranchChoice | None = None) -> None:
        self.graph = graph
        self.channels = channels
        self.branches = branches
        self.branch_names = graph.cost_model.branches if branches is not None else ()
        branch_of_channel = torch.full((graph.channels,), -1, dtype=torch.long)
        starts = {group.name: (offset, group.size) for group, offset in zip(graph.groups, graph.offsets)}
        for index, name in enumerate(self.branch_names):
            first, size = starts[name]
            branch_of_channel[first:first + size] = index
        # without a branch choice the channel choice is the table itself (its state keeps its old keys)
        self.table = channels if branches is None else GateTable(channels, branches, branch_of_channel)

    def prepare(self) -> fx.GraphModule:
        """The search model: the traced graph with the channel choice's gates on every group's tensors (TAS's
        channel-wise interpolation where the width choices ask for it and a site allows it) and the branch
        choice's multipliers where each branch is merged back."""
        gm = InsertChannelGatesPass(self.graph.record, self.graph.slot_of_label, self.table)(self.graph.gm).gm
        if self.branches is not None:  # before the interpolation: it finds each merge's gated branch value
            branches = [self.graph.depth.branches[name] for name in self.branch_names]
            gm = InsertBranchGatesPass(branches, self.branches)(gm, copy_input=False).gm
        if isinstance(self.channels, WidthChoices) and self.channels.interpolate:
            gm = InterpolateChannelsPass(self.channels)(gm, copy_input=False).gm
        return gm

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.channels.parameters()) + (list(self.branches.parameters()) if self.branches else [])

    def probabilities(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(keep-probability per channel given its branch stays, alive-probability per branch or None)."""
        alive = self.branches.alive_probabilities() if self.branches is not None else None
        return self.channels.keep_probabilities(), alive

    def settled(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The architecture the choices export now, as 0/1 (keep, alive)."""
        alive = self.branches.settled().detach() if self.branches is not None else None
        return self.channels.settled().detach(), alive

    def removed(self) -> frozenset[str]:
        """The groups whose branches the branch choice settles on removing."""
        if self.branches is None:
            return frozenset()
        stays = self.branches.settled().tolist()
        return frozenset(name for name, alive in zip(self.branch_names, stays) if not alive)

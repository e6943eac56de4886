"""InterpolateChannelsPass: TAS's channel-wise interpolation at the gate sites that can take it.

Runs after `InsertChannelGatesPass` with a `WidthChoices` table (`interpolate=True`). Rule:
1. a gate site (`apply_gate(x, table, index)`) whose index holds, along dim 1 only, every channel of one
   group once and nothing else (no frozen channel, no other group's: a convolution's or linear layer's
   output, a BatchNorm's, a residual stream's tensor) becomes `interpolate_channels(x, table, index, order,
   group, channels)`, `order` the positions of its channels top-ranked first;
2. every other site keeps its mask (a group spread over several tensors' parts, channels along another dim);
3. in evaluation both compute `x * table[index]`, the masked reference: the pass changes training only.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from cascomp.kernels.channel_gates import apply_gate
from cascomp.kernels.width_choices import WidthChoices, interpolate_channels
from cascomp.passes.base import Pass, PassResult


class InterpolateChannelsPass(Pass):
    def __init__(self, choices: WidthChoices) -> None:
        self.choices = choices

    def call(self, gm: fx.GraphModule) -> PassResult:
        modified = False
        channels = len(self.choices.rank)
        for node in list(gm.graph.nodes):
            if node.op != "call_function" or node.target is not apply_gate:
                continue
            x, table, index = node.args
            site = self._site(gm.get_buffer(str(index.target)))  # case 1
            if site is None:
                continue  # case 2
            group, order = site
            name = f"{index.target}_order"
            gm.register_buffer(name, order)
            with gm.graph.inserting_before(node):
                order_node = gm.graph.get_attr(name)
                interpolated = gm.graph.call_function(interpolate_channels,
                                                      (x, table, index, order_node, group, channels))
            node.replace_all_uses_with(interpolated)
            gm.graph.erase_node(node)
            modified = True
        return PassResult(gm, modified)

    def _site(self, slots: torch.Tensor) -> tuple[int, torch.Tensor] | None:
        """(group, positions of its channels top-ranked first) when `slots` holds one whole group along dim 1."""
        if slots.dim() < 2 or any(size != 1 for d, size in enumerate(slots.shape) if d != 1):
            return None
        channel = slots.flatten() - 1
        if bool((channel < 0).any()) or len(set(channel.tolist())) != len(channel):
            return None
        groups = self.choices.group[channel].unique()
        if len(groups) != 1 or len(channel) != self.choices.group_sizes[int(groups[0])]:
            return None
        return int(groups[0]), torch.argsort(self.choices.rank[channel], stable=True)

"""Every channel's slices of the weights, gathered from the core's group members: what a channel-level
regulariser reads (ℓ2 norm over all of a channel's slices) and its proximal step writes (a scale per channel).

A channel of a group owns positions along one dim of each member parameter: a conv's output rows, the
BatchNorm scale and shift, the next conv's input columns, and for a residual stream every block's slices
alike, so one norm covers everything that goes when the channel goes. Built once per model: per member, a
table from each position along its dim to the channel that owns it (-1: another group's or a frozen one), so
a norm or a scaling is one reduction and one `index_add_`/`index_select` per member, on whatever device the
weights are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cascomp.ir.graph import Graph


@dataclass(frozen=True)
class _Slice:
    param: str
    dim: int
    channel_at: torch.Tensor  # per position along dim: the global channel owning it, or -1


class ChannelSlices:
    """The slices of every group channel (global order: group by group, as `graph.offsets`) in the members
    `select(param_name, module)` accepts, or in all members of a group where it accepts none."""

    def __init__(self, graph: Graph, model: nn.Module,
                 select: Callable[[str, nn.Module], bool] | None = None) -> None:
        params = dict(model.named_parameters())
        modules = dict(model.named_modules())
        self.channels = sum(group.size for group in graph.groups)
        self.slices: list[_Slice] = []
        for group, offset in zip(graph.groups, graph.offsets):
            members = [m for m in group.members if m.param in params]
            chosen = [m for m in members if select is None or select(m.param, modules.get(m.param.rpartition(".")[0]))]
            for member in chosen or members:
                channel_at = torch.full((params[member.param].shape[member.dim],), -1, dtype=torch.long)
                for channel, positions in enumerate(member.indices):
                    channel_at[list(positions)] = offset + channel
                self.slices.append(_Slice(member.param, member.dim, channel_at))
        self.sizes = self._sum(model, lambda w, dim: torch.full((w.shape[dim],), w.numel() / w.shape[dim],
                                                                dtype=torch.float64, device=w.device)).cpu()

    def squared_norms(self, model: nn.Module) -> torch.Tensor:
        """Per channel, the sum of squares of all its slices (differentiable)."""
        return self._sum(model, lambda w, dim: _sum_except(w.pow(2), dim))

    def rms(self, model: nn.Module) -> torch.Tensor:
        """Per channel, the root mean square of its slices (comparable across layers of different fan-in)."""
        with torch.no_grad():
            return (self.squared_norms(model).double().cpu() / self.sizes.clamp_min(1)).sqrt()

    def scale(self, model: nn.Module, factors: torch.Tensor) -> None:
        """Multiply every slice of channel c by factors[c] (in place, no gradient)."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for piece in self.slices:
                weight = params[piece.param]
                table = torch.cat([factors.new_ones(1), factors]).to(weight.device, weight.dtype)
                factor = table[piece.channel_at.to(weight.device) + 1]  # -1 (not this group's) reads the 1
                shape = [1] * weight.dim()
                shape[piece.dim] = -1
                weight.mul_(factor.view(shape))

    def restore(self, model: nn.Module, source: nn.Module, channels: torch.Tensor) -> None:
        """Copy the slices of the `channels` (a bool per channel) from `source`, a model with the same
        parameter names and shapes (in place, no gradient)."""
        params, original = dict(model.named_parameters()), dict(source.named_parameters())
        with torch.no_grad():
            for piece in self.slices:
                weight = params[piece.param]
                owned = piece.channel_at >= 0
                positions = torch.nonzero(owned).flatten()
                chosen = positions[channels[piece.channel_at[positions]]].to(weight.device)
                weight.index_copy_(piece.dim, chosen,
                                   original[piece.param].detach().to(weight.device).index_select(piece.dim, chosen))

    def _sum(self, model: nn.Module, per_position: Callable[[torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
        params = dict(model.named_parameters())
        device = next(iter(params.values())).device if params else torch.device("cpu")
        total = None
        for piece in self.slices:
            weight = params[piece.param]
            values = per_position(weight, piece.dim)
            owned = piece.channel_at >= 0
            index = piece.channel_at[owned].to(values.device)
            if total is None:
                total = values.new_zeros(self.channels)
            total = total.index_add(0, index, values[owned.to(values.device)].to(total.dtype))
        return total if total is not None else torch.zeros(self.channels, device=device)


def _sum_except(tensor: torch.Tensor, dim: int) -> torch.Tensor:
    """`tensor` summed over every dim but `dim` (torch's sum over an empty dim list would sum everything)."""
    others = [d for d in range(tensor.dim()) if d != dim]
    return tensor.sum(dim=others) if others else tensor

"""Search nodes of TAS's width search: per channel group, a categorical distribution over candidate widths.

`WidthChoices` holds, per group, logits over K candidate widths (fractions of the group's size, rounded to
legal widths) and a fixed ranking of the group's channels (the most important first: a width w keeps the
group's w top-ranked channels). Like `ConcreteGates` it returns, once per forward pass, a gate table
`[1, g_0, g_1, ...]` that every site of the group multiplies its tensor by, so all tensors of a group (a
residual stream, a concatenation's parts) share one sampled width.

Training (TAS, ../shared/papers/tas-*, eqs. 3-4): the logits are perturbed with Gumbel noise at temperature
tau, two distinct candidate widths are drawn per group from the perturbed distribution, and the group's
output is their combination weighted by the softmax of their perturbed logits (the weights carry the
gradient to the logits). By default the two widths are aligned by their channel masks — channel c is scaled
by the total weight of the drawn widths that keep it — rather than by the paper's channel-wise interpolation
(adaptive average pooling across channels), which mixes the channels of a trained baseline's features and
does not apply to a group whose channels sit in several tensors or along other dims.
With `interpolate=True` the table also carries, after the channel gates, each group's two drawn widths and
their weights, and the sites that hold one whole group along dim 1 (passes/interpolate_channels.py) align
the two widths by the paper's **channel-wise interpolation** instead (`interpolate_channels`: the w
top-ranked channels average-pooled over channels back to the group's size, each width's result weighted,
eq. 4); the other sites use the masks.
Evaluation uses the most probable width of every group. `keep_probabilities()` is each channel's probability
of being kept, sum_k p_k [rank(c) < w_k]: the cost model evaluated there is the expected cost's estimate that
is exact whenever every distribution is one-hot.
"""

from __future__ import annotations

import torch
from torch import nn

from cascomp.kernels.choices import ChannelChoice


class WidthChoices(ChannelChoice):
    def __init__(self, widths: list[list[int]], ranks: list[torch.Tensor], *, temperature: float = 10.0,
                 interpolate: bool = False) -> None:
        """`widths[g]`: group g's K candidate widths (the same K for every group); `ranks[g]`: the rank of each
        of its channels (0: kept first)."""
        super().__init__()
        if not widths or len({len(w) for w in widths}) != 1:
            raise ValueError("every group needs the same number of candidate widths")
        self.group_sizes = tuple(len(rank) for rank in ranks)
        self.register_buffer("widths", torch.tensor(widths, dtype=torch.long))  # [G, K]
        self.register_buffer("rank", torch.cat([r.long() for r in ranks]))  # per global channel
        self.register_buffer("group", torch.cat([torch.full((len(r),), g, dtype=torch.long)
                                                 for g, r in enumerate(ranks)]))
        self.logits = nn.Parameter(torch.zeros(len(widths), len(widths[0])))
        self.temperature = float(temperature)
        self.interpolate = bool(interpolate)

    def masks(self) -> torch.Tensor:
        """[channels, K]: 1 where candidate k of the channel's group keeps the channel."""
        return (self.rank[:, None] < self.widths[self.group]).to(self.logits.dtype)

    def probabilities(self) -> torch.Tensor:
        """[G, K]: the distribution over each group's candidate widths (differentiable)."""
        return torch.softmax(self.logits, dim=1)

    def keep_probabilities(self) -> torch.Tensor:
        """Per global channel, the probability that its group's width keeps it (differentiable)."""
        return (self.probabilities()[self.group] * self.masks()).sum(dim=1)

    def most_probable(self) -> torch.Tensor:
        """[G]: each group's most probable width."""
        return self.widths.gather(1, self.logits.argmax(dim=1, keepdim=True)).squeeze(1)

    def settled(self) -> torch.Tensor:
        """0/1 per global channel: kept by its group's most probable width (the evaluation architecture)."""
        return (self.rank < self.most_probable()[self.group]).to(self.logits.dtype)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Two distinct candidates per group ([G, 2] indices) and their weights ([G, 2], rows summing to 1)."""
        perturbed = self.logits.log_softmax(dim=1)
        if self.temperature > 0:
            uniform = torch.rand_like(self.logits).clamp(1e-10, 1 - 1e-10)
            perturbed = (perturbed - torch.log(-torch.log(uniform))) / self.temperature
        count = min(2, self.logits.shape[1])
        with torch.no_grad():
            chosen = torch.multinomial(torch.softmax(perturbed, dim=1) + 1e-12, count, replacement=False)
        return chosen, torch.softmax(perturbed.gather(1, chosen), dim=1)

    def forward(self) -> torch.Tensor:
        if self.training:
            chosen, weights = self.sample()
            kept = self.rank[:, None] < self.widths.gather(1, chosen)[self.group]  # [channels, 2]
            gates = (weights[self.group] * kept.to(weights.dtype)).sum(dim=1)
            if self.interpolate:  # the drawn widths ([G, 2]) and their weights ([G, 2]) for the CWI sites
                drawn = self.widths.gather(1, chosen).to(weights.dtype)
                return torch.cat([gates.new_ones(1), gates, drawn.flatten(), weights.flatten()])
        else:
            gates = self.settled()
        return torch.cat([gates.new_ones(1), gates])

    def extra_repr(self) -> str:
        return (f"groups={len(self.group_sizes)}, candidates={self.logits.shape[1]}, "
                f"temperature={self.temperature:g}, interpolate={self.interpolate}")


def channel_interpolation(x: torch.Tensor, width: int) -> torch.Tensor:
    """TAS's CWI(x[:, :width], C): the first `width` channels of `x` ([N, C, ...]) average-pooled over
    channels back to C: output channel i is the mean of input channels floor(i w / C) ... ceil((i + 1) w / C) - 1
    (adaptive average pooling, so width C is the identity)."""
    size = x.shape[1]
    i = torch.arange(size, device=x.device)
    start, end = (i * width) // size, ((i + 1) * width + size - 1) // size
    sums = torch.cat([torch.zeros_like(x[:, :1]), x[:, :width].cumsum(dim=1)], dim=1)
    shape = (1, size) + (1,) * (x.dim() - 2)
    return (sums.index_select(1, end) - sums.index_select(1, start)) / (end - start).to(x.dtype).view(shape)


def interpolate_channels(x: torch.Tensor, table: torch.Tensor, index: torch.Tensor, order: torch.Tensor,
                         group: int, channels: int) -> torch.Tensor:
    """A site holding group `group`'s channels along dim 1 (`order`: their positions in `x`, top-ranked first):
    in training, the two drawn widths aligned by channel-wise interpolation and weighted (eq. 4); without
    drawn widths in `table` (evaluation) the plain gates, `x * table[index]`."""
    tail = table[1 + channels:]
    if tail.numel() == 0:
        return x * table[index].to(x.dtype)
    groups = tail.numel() // 4
    widths, weights = tail[:2 * groups].view(groups, 2)[group], tail[2 * groups:].view(groups, 2)[group]
    ranked = x.index_select(1, order)
    mixed = sum(weights[k].to(x.dtype) * channel_interpolation(ranked, int(widths[k])) for k in range(2))
    return mixed.index_select(1, torch.argsort(order))

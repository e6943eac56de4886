"""The search space's choices: what a searching method learns, one kind per file in `kernels/`.

Two families, each a module whose forward pass samples (training) or settles (evaluation):
- **channel choices** (`ConcreteGates`: a gate per channel; `WidthChoices`: a categorical width per group)
  return the gate table `[1, g_0, g_1, ...]` every masked site multiplies its tensor by
  (`passes/insert_channel_gates.py`), give each channel's keep-probability (`keep_probabilities()`), and
  `settled()`: 0/1 per channel, the architecture they export;
- **branch choices** (`BranchGates`: a gate per removable residual branch; `StageDepth`: a categorical number
  of blocks per stage) return one multiplier per branch, applied where the branch is merged back
  (`passes/insert_branch_gates.py`), give each branch's alive-probability (`alive_probabilities()`), and
  `settled()`: 0/1 per branch.
The cost model takes both probabilities (`CostModel.evaluate(keep, alive)`: keep-probabilities read as given
that the branch stays), so one expected cost serves every method, depth included.

In evaluation a branch choice multiplies by 1 and the branches it settles on removing keep no channel instead
(`GateTable`): the search model then computes exactly the masked reference of the plan it exports (a branch
whose group keeps no channel is the constant the rewrite folds in its place; cascomp.ir.depth).
"""

from __future__ import annotations

import torch
from torch import nn


class ChannelChoice(nn.Module):
    """A choice over channels. forward() -> the gate table [1, g_0, ...] (one entry per global channel)."""

    kind = "channels"

    def keep_probabilities(self) -> torch.Tensor:  # pragma: no cover - abstract
        """Per global channel, the probability that it is kept (differentiable)."""
        raise NotImplementedError

    def settled(self) -> torch.Tensor:  # pragma: no cover - abstract
        """0/1 per global channel: the architecture the choice exports now."""
        raise NotImplementedError


class BranchChoice(nn.Module):
    """A choice over removable branches. forward() -> one multiplier per branch (1 in evaluation)."""

    kind = "branches"

    def alive_probabilities(self) -> torch.Tensor:  # pragma: no cover - abstract
        """Per branch, the probability that it stays (differentiable)."""
        raise NotImplementedError

    def settled(self) -> torch.Tensor:  # pragma: no cover - abstract
        """0/1 per branch: 1 where the exported architecture keeps it."""
        raise NotImplementedError


class GateTable(nn.Module):
    """The channel choice's gate table; in evaluation, also 0 on every channel of a group whose branch the
    branch choice settles on removing (`branch_of_channel`: per global channel, its branch's index, -1 for
    channels of groups that remove no branch)."""

    def __init__(self, channels: ChannelChoice, branches: BranchChoice | None = None,
                 branch_of_channel: torch.Tensor | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.branches = branches
        if branches is not None:
            if branch_of_channel is None:
                raise ValueError("a branch choice needs branch_of_channel")
            self.register_buffer("branch_of_channel", branch_of_channel.long().clone())

    def forward(self) -> torch.Tensor:
        table = self.channels()
        if self.branches is None or self.training:
            return table
        stays = torch.cat([self.branches.settled().new_ones(1), self.branches.settled()])
        return table * torch.cat([table.new_ones(1), stays[self.branch_of_channel + 1].to(table.dtype)])

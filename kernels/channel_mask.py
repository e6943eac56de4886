"""A fixed 0/1 mask per channel (the gate table of `channel_gates`: entry 0 is the always-on slot of frozen
channels) that also measures, in training, every channel's first-order importance: the gradient of the loss
with respect to its gate, Σ over the batch and positions of activation × gradient (a Taylor estimate of the
loss change when the channel goes), accumulated in absolute value until `take_importance()` reads it.
It measures in every forward pass with gradients while `measuring` is set (the default); a method that
measures on held-out data only clears it for training and sets it around its inquiries."""

from __future__ import annotations

import torch
from torch import nn


class ChannelMask(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("keep", torch.ones(channels))
        self.register_buffer("importance", torch.zeros(channels, dtype=torch.float64))
        self.measuring = True

    def forward(self) -> torch.Tensor:
        gates = self.keep
        if self.measuring and torch.is_grad_enabled():
            gates = self.keep.detach().clone().requires_grad_(True)
            gates.register_hook(self._accumulate)
        return torch.cat([gates.new_ones(1), gates])

    def _accumulate(self, gradient: torch.Tensor) -> None:
        self.importance.add_(gradient.detach().abs().to(self.importance.dtype))

    def take_importance(self) -> torch.Tensor:
        """The importance gathered since the last call (then reset)."""
        taken = self.importance.detach().cpu().clone()
        self.importance.zero_()
        return taken

    def extra_repr(self) -> str:
        return f"channels={self.keep.numel()}"

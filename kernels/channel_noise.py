"""Variational dropout per channel (Molchanov, Ashukha and Vetrov 2017, structured as in Neklyudov et al.):
each channel of a group is multiplied by 1 + sqrt(α_c) ε, ε ~ N(0, 1), with a learned log α_c shared by
every tensor of the group (the gate table of `channel_gates`: entry 0 is the always-on slot of frozen
channels). One draw per forward pass, shared by the batch (the gate table is one vector). In evaluation a
channel is on while log α_c is under `threshold` (3: noise with a standard deviation over 4.5 times the
signal carries nothing) and off above, which is the architecture the method exports.
"""

from __future__ import annotations

import torch
from torch import nn

LOG_ALPHA_RANGE = (-8.0, 8.0)  # the KL approximation and the noise stay finite


class ChannelNoise(nn.Module):
    def __init__(self, channels: int, *, init_log_alpha: float = -4.0, threshold: float = 3.0) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.full((channels,), float(init_log_alpha)))
        self.threshold = float(threshold)

    def clamped(self) -> torch.Tensor:
        return self.log_alpha.clamp(*LOG_ALPHA_RANGE)

    def forward(self) -> torch.Tensor:
        if self.training:
            noise = torch.randn_like(self.log_alpha)
            gates = 1 + torch.exp(0.5 * self.clamped()) * noise
        else:
            gates = (self.log_alpha < self.threshold).to(self.log_alpha.dtype)
        return torch.cat([gates.new_ones(1), gates])

    def extra_repr(self) -> str:
        return f"channels={self.log_alpha.numel()}, threshold={self.threshold}"


def kl_divergence(log_alpha: torch.Tensor) -> torch.Tensor:
    """Per channel, Molchanov et al.'s approximation of KL(q || log-uniform prior) (their eq. 14):
    -KL ≈ k1 σ(k2 + k3 log α) - 0.5 log(1 + 1/α) - k1, decreasing in log α (more noise, less information)."""
    k1, k2, k3 = 0.63576, 1.87320, 1.48695
    log_alpha = log_alpha.clamp(*LOG_ALPHA_RANGE)
    return k1 - k1 * torch.sigmoid(k2 + k3 * log_alpha) + 0.5 * nn.functional.softplus(-log_alpha)

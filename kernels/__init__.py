"""Modules that cascomp passes insert or substitute; importable without the compiler."""

from cascomp.kernels.channel_gates import ConcreteGates, apply_gate
from cascomp.kernels.channel_mask import ChannelMask
from cascomp.kernels.channel_noise import ChannelNoise
from cascomp.kernels.masked_norm import MaskedGroupNorm, MaskedLayerNorm, masked_layer_norm
from cascomp.kernels.width_choices import WidthChoices

__all__ = ["ChannelMask", "ChannelNoise", "ConcreteGates", "MaskedGroupNorm", "MaskedLayerNorm", "WidthChoices", "apply_gate", "masked_layer_norm"]

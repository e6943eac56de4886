"""Modules that cascomp passes insert or substitute; importable without the compiler."""

from cascomp.kernels.masked_norm import MaskedGroupNorm, MaskedLayerNorm, masked_layer_norm

__all__ = ["MaskedGroupNorm", "MaskedLayerNorm", "masked_layer_norm"]

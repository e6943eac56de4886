"""Modules that cascomp passes insert or substitute; importable without the compiler."""

from cascomp.kernels.branch_gates import BranchGates, scale_branch
from cascomp.kernels.candidates import DepthwiseSeparable, Shift, ShiftConv, candidates_for
from cascomp.kernels.channel_gates import ConcreteGates, apply_gate
from cascomp.kernels.channel_mask import ChannelMask
from cascomp.kernels.channel_noise import ChannelNoise
from cascomp.kernels.choices import BranchChoice, ChannelChoice, GateTable
from cascomp.kernels.masked_norm import MaskedGroupNorm, MaskedLayerNorm, masked_layer_norm
from cascomp.kernels.operator_choice import OperatorChoice
from cascomp.kernels.stage_depth import StageDepth
from cascomp.kernels.width_choices import WidthChoices

__all__ = ["BranchChoice", "BranchGates", "ChannelChoice", "ChannelMask", "ChannelNoise", "ConcreteGates", "DepthwiseSeparable",
           "Shift", "ShiftConv",
           "GateTable", "MaskedGroupNorm", "MaskedLayerNorm", "OperatorChoice", "StageDepth", "WidthChoices", "apply_gate", "candidates_for",
           "masked_layer_norm", "scale_branch"]

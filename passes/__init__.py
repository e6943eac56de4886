"""Graph passes, installed as cascomp.passes: one pass per file, each with a declared rule."""

from cascomp.passes.base import Pass, PassResult, run_passes
from cascomp.passes.eliminate_dead_code import EliminateDeadCodePass
from cascomp.passes.insert_branch_gates import InsertBranchGatesPass
from cascomp.passes.insert_channel_gates import InsertChannelGatesPass
from cascomp.passes.insert_operator_choices import InsertOperatorChoicesPass
from cascomp.passes.interpolate_channels import InterpolateChannelsPass
from cascomp.passes.mask_channels import MaskChannelsPass
from cascomp.passes.prune_channels import PruneChannelsPass
from cascomp.passes.remove_branches import RemoveBranchesPass
from cascomp.passes.resize_shape_args import ResizeShapeArgsPass
from cascomp.passes.substitute_ops import SubstituteOpsPass

__all__ = [
    "EliminateDeadCodePass", "InsertBranchGatesPass", "InsertChannelGatesPass", "InsertOperatorChoicesPass",
    "InterpolateChannelsPass", "MaskChannelsPass", "Pass", "PassResult", "PruneChannelsPass", "RemoveBranchesPass",
    "ResizeShapeArgsPass", "SubstituteOpsPass", "run_passes",
]

"""InsertBranchGatesPass: put a branch choice's multiplier where every removable branch is merged back.

Rule:
1. a `gates` module (a branch choice: forward() returns one multiplier per branch, in the order of
   `branches`) is registered as `cascomp_branch_gates` and called once, before the first op, so one sample
   serves the whole forward pass;
2. for every branch (cascomp.ir.depth.Branch) and every merge of its folds, the merge reads the branch's value
   times the branch's multiplier. The value the merge reads is the fold's node, or that node gated by
   `InsertChannelGatesPass` (which runs first: the branch's last tensor carries the stream's channels);
3. nothing else changes, so with every multiplier 1 (evaluation) the model computes what it computed before.
A merge that does not read its fold's node is an inconsistency between the depth analysis and the graph: the
pass fails naming the branch rather than gate something else.
"""

from __future__ import annotations

import torch.fx as fx
from torch import nn

from cascomp.ir.depth import Branch
from cascomp.kernels.branch_gates import scale_branch
from cascomp.kernels.channel_gates import apply_gate
from cascomp.passes.base import Pass, PassResult

BRANCH_GATES = "cascomp_branch_gates"


class InsertBranchGatesPass(Pass):
    def __init__(self, branches: list[Branch], gates: nn.Module) -> None:
        self.branches = list(branches)
        self.gates = gates

    def call(self, gm: fx.GraphModule) -> PassResult:
        if not self.branches:
            return PassResult(gm, False)
        gm.add_submodule(BRANCH_GATES, self.gates)  # case 1
        nodes = {node.name: node for node in gm.graph.nodes}
        first_op = next(n for n in gm.graph.nodes if n.op != "placeholder")
        with gm.graph.inserting_before(first_op):
            table = gm.graph.call_module(BRANCH_GATES)
        for index, branch in enumerate(self.branches):  # case 2
            for fold in branch.folds:
                for merge_name in fold.merges:
                    merge = nodes[merge_name]
                    positions = [p for p, arg in enumerate(merge.args) if _reads(arg, fold.node)]
                    if len(positions) != 1:
                        raise ValueError(f"the merge {merge_name!r} of group {branch.group!r}'s branch does not "
                                         f"read the branch's value {fold.node!r} once")
                    with gm.graph.inserting_before(merge):
                        scaled = gm.graph.call_function(scale_branch, (merge.args[positions[0]], table, index))
                    merge.update_arg(positions[0], scaled)
        return PassResult(gm, True)


def _reads(arg, name: str) -> bool:
    """`arg` is the node `name`, or that node gated by InsertChannelGatesPass."""
    if not isinstance(arg, fx.Node):
        return False
    if arg.name == name:
        return True
    return arg.op == "call_function" and arg.target is apply_gate and isinstance(arg.args[0], fx.Node) \
        and arg.args[0].name == name

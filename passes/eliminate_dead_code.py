"""EliminateDeadCodePass: drop nodes whose results nothing uses and that change nothing in place, and the
submodules they called."""

from __future__ import annotations

import torch.fx as fx

from cascomp.ir.dead_code import eliminate_dead_code
from cascomp.passes.base import Pass, PassResult


class EliminateDeadCodePass(Pass):
    def call(self, gm: fx.GraphModule) -> PassResult:
        modified = eliminate_dead_code(gm)
        if modified:
            gm.delete_all_unused_submodules()
        return PassResult(gm, modified)

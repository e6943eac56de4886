"""EliminateDeadCodePass: drop nodes whose results nothing uses, and the submodules they called."""

from __future__ import annotations

import torch.fx as fx

from cascomp.passes.base import Pass, PassResult


class EliminateDeadCodePass(Pass):
    def call(self, gm: fx.GraphModule) -> PassResult:
        modified = gm.graph.eliminate_dead_code()
        if modified:
            gm.delete_all_unused_submodules()
        return PassResult(gm, modified)

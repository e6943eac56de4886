"""RemoveBranchesPass: replace each branch whose inner group keeps no channel by the constant it computes.

Rule (the branches come from `cascomp.ir.depth.removable_branches`, which states when this is exact):
1. the branch's constants are evaluated once, in eval mode: each frontier layer runs on zeros of its
   input's shape (its bias, or zero, at every position) and the chain after it runs on that;
2. at every fold, the constant is taken at one position along every dim but its channel dim, sliced to
   the channels the plan keeps there, registered as a buffer, and read with `get_attr` by the merges in
   place of the chain's value;
3. the branch's nodes, and every node left without a user (`dead_nodes`), are erased; so are the
   submodules, parameters and buffers only they read, so the module holds exactly what it runs.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from cascomp.errors import PassError
from cascomp.ir.context import Record
from cascomp.ir.depth import Branch, Fold
from cascomp.ir.graph_index import dead_nodes, tensor_users
from cascomp.ir.labels import along
from cascomp.ir.rules_tensor import align
from cascomp.passes.base import Pass, PassResult


class RemoveBranchesPass(Pass):
    def __init__(self, record: Record, label_keep: torch.Tensor, branches: tuple[Branch, ...]) -> None:
        self.record = record
        self.label_keep = label_keep
        self.branches = branches

    def call(self, gm: fx.GraphModule) -> PassResult:
        if not self.branches:
            return PassResult(gm, False)
        nodes = {node.name: node for node in gm.graph.nodes}
        read_before = set(tensor_users(gm))
        for branch in self.branches:
            values = _evaluate(gm, self.record, branch, nodes)  # case 1
            for fold in branch.folds:
                read_before.add(self._fold(gm, nodes, fold, values[fold.node]))  # case 2
        dead = dead_nodes(gm.graph, frozenset().union(*(b.removed for b in self.branches)))
        for node in reversed(list(gm.graph.nodes)):  # case 3
            if node.name in dead:
                if node.users:
                    reader = next(iter(node.users)).name
                    raise PassError(f"RemoveBranchesPass: node {node.name!r} is to go but {reader!r} still reads it; "
                                    "please report this model")
                gm.graph.erase_node(node)
        gm.delete_all_unused_submodules()
        _delete_unread(gm, read_before - set(tensor_users(gm)))
        return PassResult(gm, True)

    def _fold(self, gm: fx.GraphModule, nodes: dict[str, fx.Node], fold: Fold, value: torch.Tensor) -> str:
        """Merge the constant at `fold` as a buffer; returns the buffer's name."""
        constant = value
        for dim in range(value.dim()):
            if dim != fold.channel_dim:
                constant = constant.narrow(dim, 0, 1)
        scale = float(value.abs().max()) if value.numel() else 0.0
        if not torch.allclose(constant.expand_as(value), value, rtol=1e-5, atol=1e-6 * scale + 1e-12):
            raise PassError(f"RemoveBranchesPass: the value of node {fold.node!r} is not constant per channel; "
                            "please report this model")
        labels = align(self.record.labels[fold.node], value.dim())
        keep = self.label_keep[along(labels, fold.channel_dim, value.shape[fold.channel_dim])]
        constant = constant.index_select(fold.channel_dim, keep.nonzero().reshape(-1))
        name = f"cascomp_depth_{fold.node}"
        gm.register_buffer(name, constant.detach().clone())
        for merge in fold.merges:
            with gm.graph.inserting_before(nodes[merge]):
                attribute = gm.graph.get_attr(name)
            nodes[merge].replace_input_with(nodes[fold.node], attribute)
        return name


def _evaluate(gm: fx.GraphModule, record: Record, branch: Branch,
              nodes: dict[str, fx.Node]) -> dict[str, torch.Tensor]:
    """Values of the branch's constant nodes, with its zero tensors zero and every module in eval mode."""
    interpreter = fx.Interpreter(gm)
    for name in branch.frontier:
        source = nodes[name].args[0]
        interpreter.env[source] = torch.zeros(record.shapes[source.name], dtype=_dtype(gm, nodes[name]))
    wanted = [node for node in gm.graph.nodes if node.name in branch.constants]
    modes = {module: module.training for module in gm.modules()}
    gm.eval()
    try:
        with torch.no_grad():
            for node in wanted:
                for source in node.all_input_nodes:
                    if source not in interpreter.env:
                        interpreter.env[source] = _parameter_value(interpreter, source)
                interpreter.env[node] = interpreter.run_node(node)
    finally:
        for module, training in modes.items():
            module.train(training)
    return {node.name: interpreter.env[node] for node in wanted}


def _parameter_value(interpreter: fx.Interpreter, node: fx.Node):
    """A chain operand: computed from parameters only (the analysis checked that)."""
    for source in node.all_input_nodes:
        if source not in interpreter.env:
            interpreter.env[source] = _parameter_value(interpreter, source)
    return interpreter.run_node(node)


def _dtype(gm: fx.GraphModule, node: fx.Node) -> torch.dtype:
    weight = getattr(gm.get_submodule(str(node.target)), "weight", None)
    return weight.dtype if isinstance(weight, torch.Tensor) else torch.get_default_dtype()


def _delete_unread(gm: fx.GraphModule, names: set[str]) -> None:
    """Parameters and buffers that only the erased nodes read (their module may stay for its other calls
    or as the parent of modules that stay), and folded constants whose merge went with another branch."""
    for name in sorted(names):
        path, _, attr = name.rpartition(".")
        try:
            owner = gm.get_submodule(path) if path else gm
        except AttributeError:
            continue  # its module went with the branch
        owner._parameters.pop(attr, None)
        owner._buffers.pop(attr, None)

"""Dead-code elimination that keeps in-place ops: torch.fx's own drops any node whose result nobody reads,
so `out.mul_(gain)` (timm NF-Net's skipinit gain), whose result is `out` itself, read afterwards through `out`,
vanished and the traced model computed something else."""

from __future__ import annotations

import torch
import torch.fx as fx


def mutates(node: fx.Node, gm: fx.GraphModule | None = None) -> bool:
    """Whether `node` changes a tensor it is given (or has another side effect fx knows of): a tensor method
    or torch function whose name ends in one underscore (`mul_`, `torch.relu_`), `inplace=True`, an ATen
    op whose schema writes an argument, or a module built with `inplace=True`."""
    if node.is_impure():
        return True
    if node.kwargs.get("inplace") is True:
        return True
    if node.op == "call_method":
        return _in_place_name(str(node.target))
    if node.op == "call_function":
        if isinstance(node.target, torch._ops.OpOverload):
            return node.target._schema.is_mutable
        return _in_place_name(getattr(node.target, "__name__", ""))
    if node.op == "call_module" and gm is not None:
        try:
            return getattr(gm.get_submodule(str(node.target)), "inplace", False) is True
        except AttributeError:
            return False
    return False


def _in_place_name(name: str) -> bool:
    return name.endswith("_") and not name.endswith("__")


def eliminate_dead_code(gm: fx.GraphModule) -> bool:
    """Drop the nodes whose results nothing reads and that change nothing (`mutates`); True when any went."""
    return gm.graph.eliminate_dead_code(is_impure_node=lambda node: mutates(node, gm))

"""The cascomp pipeline, top to bottom: trace -> analyse groups -> plan -> rewrite -> verify -> export.

Every entry point copies the caller's model once at the boundary; nothing here mutates user objects.
"""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
import torch.nn as nn

from cascomp.errors import PassError
from cascomp.ir.graph import Constraints, Graph
from cascomp.ir.plan import Plan
from cascomp.passes import EliminateDeadCodePass, MaskChannelsPass, PruneChannelsPass, ResizeShapeArgsPass


def trace(model: nn.Module, example_inputs, example_kwargs: dict | None = None, *, ignore=(), round_to: int = 1,
          min_keep: int = 1) -> Graph:
    """Trace `model` (a copy, in eval mode) on `example_inputs` and analyse its channel groups.

    `ignore`: module-name patterns whose channels stay (e.g. ["head.*"]); `round_to`: every pruned width is
    a multiple of this (heads count as units); `min_keep`: smallest width of any group.
    """
    constraints = Constraints(ignore=tuple(ignore), round_to=round_to, min_keep=min_keep)
    return Graph(model, example_inputs, example_kwargs, constraints=constraints)


def apply_plan(graph: Graph, plan: Plan) -> fx.GraphModule:
    """A new, physically smaller module computing what `mask_model(graph, plan)` computes."""
    label_keep = graph.label_keep(plan)
    gm = _copy_sharing_tensors(graph.gm)  # the prune pass gives every parameter and buffer a fresh tensor
    gm = PruneChannelsPass(graph.record, label_keep)(gm, copy_input=False).gm
    gm = ResizeShapeArgsPass(graph.record, label_keep)(gm, copy_input=False).gm
    gm = EliminateDeadCodePass()(gm, copy_input=False).gm
    _verify_runs(graph, gm)
    return gm


def mask_model(graph: Graph, plan: Plan) -> fx.GraphModule:
    """Same sizes as the traced model, with every dropped channel zeroed on every tensor of its group."""
    label_keep = graph.label_keep(plan)
    return MaskChannelsPass(graph.record, label_keep)(graph.gm).gm


def _copy_sharing_tensors(gm: fx.GraphModule) -> fx.GraphModule:
    memo = {id(t): t for t in list(gm.parameters()) + list(gm.buffers())}
    return copy.deepcopy(gm, memo)


def _verify_runs(graph: Graph, gm: fx.GraphModule) -> None:
    """The rewritten model must run and give outputs of the original shapes on the example inputs."""
    try:
        out = graph.run(gm)
    except Exception as error:
        raise PassError(f"the pruned model does not run on the example inputs: {type(error).__name__}: {error}; "
                        "please report this model") from error
    expected = graph.run(graph.gm)
    shapes = lambda value: [tuple(t.shape) for t in _flatten(value)]  # noqa: E731
    if shapes(out) != shapes(expected):
        raise PassError(f"the pruned model's outputs have shapes {shapes(out)}, expected {shapes(expected)}")


def _flatten(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _flatten(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _flatten(v)]
    return []

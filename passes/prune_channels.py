"""PruneChannelsPass: physically remove the channels a plan drops from every parameter, buffer and module.

Rule:
1. every parameter/buffer dim the analysis linked to channel labels is sliced to the surviving positions,
   and every parameter and buffer becomes a tensor of its own (the input module may share them);
2. every module's size attributes (in/out channels, features, num_features, normalized_shape, num_channels,
   embedding_dim) are set from the surviving widths, by its op table entry's `resize`, so the module's own
   checks and repr stay true and `torch.save` gives a consistent plain module;
3. a depthwise conv's `groups` and a per-channel GroupNorm's `num_groups` follow the width; any other
   group count stays, since the analysis kept every group equally wide.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from cascomp.ir.context import Record
from cascomp.ir.keep import new_size
from cascomp.ir.op_table import module_op
from cascomp.passes.base import Pass, PassResult


class PruneChannelsPass(Pass):
    def __init__(self, record: Record, label_keep: torch.Tensor) -> None:
        self.record = record
        self.label_keep = label_keep

    def call(self, gm: fx.GraphModule) -> PassResult:
        modified = False
        label_keep = self.label_keep.numpy()  # numpy: a few microseconds per lookup where torch takes tens
        owners = dict(gm.named_modules())  # each module under its first path, as named_parameters names them
        for name, _ in list(gm.named_parameters()) + list(gm.named_buffers()):  # case 1
            path, _, attr = name.rpartition(".")
            modified |= _slice(owners[path], attr, self.record.param_axes.get(name, ()), label_keep)
        for node in gm.graph.nodes:  # case 2
            if node.op == "call_module":
                target = str(node.target)
                self._resize_module(owners[target] if target in owners else gm.get_submodule(target), node)
        return PassResult(gm, modified)

    def _resize_module(self, module: nn.Module, node: fx.Node) -> None:
        """Cases 2-3: the module's entry in the op table resizes it."""
        if not node.args or not isinstance(node.args[0], fx.Node):
            return
        if not isinstance(self.record.labels.get(node.args[0].name), torch.Tensor):
            return
        resize = module_op(module).resize
        if resize is not None:
            resize(module, _Widths(self.record, self.label_keep, node))


class _Widths:
    """A module call's widths after pruning (cascomp.ir.ops.Widths), from the kept labels of its input and
    output."""

    def __init__(self, record: Record, label_keep: torch.Tensor, node: fx.Node) -> None:
        self.record, self.label_keep, self.node = record, label_keep, node

    def input(self, dim: int) -> int:
        return self._size(self.node.args[0].name, dim)

    def output(self, dim: int) -> int:
        return self._size(self.node.name, dim)

    def _size(self, source: str, dim: int) -> int:
        labels = self.record.labels[source]
        shape = self.record.shapes[source]
        return new_size(labels, dim % len(shape), shape[dim], self.label_keep)


def _slice(owner: nn.Module, attr: str, axes: list, label_keep: np.ndarray) -> bool:
    """Give `owner.attr` a fresh tensor holding the positions that survive along every linked dim."""
    tensor = owner._parameters[attr] if attr in owner._parameters else owner._buffers[attr]
    sliced = tensor.detach()
    for dim, vector in enumerate(axes):
        if vector is None:
            continue
        keep = label_keep[vector.numpy()]
        if not keep.all():
            sliced = sliced.index_select(dim, torch.from_numpy(np.flatnonzero(keep)))
    fresh = sliced if sliced.shape != tensor.shape else sliced.clone()
    if attr in owner._parameters:
        owner._parameters[attr] = nn.Parameter(fresh, requires_grad=tensor.requires_grad)
    else:
        owner._buffers[attr] = fresh
    return sliced.shape != tensor.shape

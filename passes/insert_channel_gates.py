"""InsertChannelGatesPass: put a search node on every channel group, where `MaskChannelsPass` puts masks.

Rule:
1. a `gates` module (any module whose forward() returns the gate table `[1, g_0, ...]`, one entry per global
   channel after the always-on entry) is registered as `cascomp_gates` and called once, before the first
   op, so one sample serves the whole forward pass;
2. every floating tensor that carries a prunable channel is multiplied by its channels' gates right where it
   is made (the same sites `MaskChannelsPass` masks, so a 0/1 gate table computes exactly what the masked
   reference computes, which is what the rewrite builds);
3. tensors whose channels are all frozen are left alone;
4. a tensor read only by BatchNorm (the op table's `needs_gated_input` off) is not gated: BatchNorm is per
   channel and its output is gated, so the result is the same, and in training its batch statistics then
   describe the channel as it is when kept, instead of being dragged toward zero by the batches in which
   the gate was off;
5. a zero-preserving activation (ReLU, GELU, SiLU, ...: the op table's `zero_preserving`) of a gated tensor
   is not gated again: it is zero wherever its input is. Cases 4 and 5 keep the 0/1 semantics exact and cut
   the elementwise work of search.
Normalisation statistics (LayerNorm over channels) are not re-masked during search: a gated-off channel
still counts in the mean there, a small difference the rewrite's exact masking does not have.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from cascomp.ir.context import Record
from cascomp.ir.op_table import op_of
from cascomp.kernels.channel_gates import apply_gate
from cascomp.passes.base import Pass, PassResult

GATES = "cascomp_gates"


class InsertChannelGatesPass(Pass):
    def __init__(self, record: Record, slot_of_label: np.ndarray, gates: nn.Module) -> None:
        self.record = record
        self.slot_of_label = torch.from_numpy(slot_of_label)
        self.gates = gates

    def call(self, gm: fx.GraphModule) -> PassResult:
        gm.add_submodule(GATES, self.gates)  # case 1
        nodes = list(gm.graph.nodes)
        first_op = next(n for n in nodes if n.op != "placeholder")
        with gm.graph.inserting_before(first_op):
            table = gm.graph.call_module(GATES)
        modified = False
        modules = dict(gm.named_modules(remove_duplicate=False))
        gated_nodes: set[fx.Node] = set()
        for index, node in enumerate(nodes):
            if node.op not in ("call_module", "call_function", "call_method"):
                continue
            labels = self.record.labels.get(node.name)
            if not isinstance(labels, torch.Tensor) or node.name not in self.record.floating:
                continue
            slots = self.slot_of_label[labels]
            if not bool((slots > 0).any()):
                continue  # case 3
            if _read_only_by_batch_norm(modules, node):
                continue  # case 4
            gated_nodes.add(node)
            if _zero_preserving(modules, node) and node.args and node.args[0] in gated_nodes:
                continue  # case 5
            name = f"cascomp_gate_index_{index}"
            gm.register_buffer(name, slots.clone())
            with gm.graph.inserting_after(node):
                buffer = gm.graph.get_attr(name)
            with gm.graph.inserting_after(buffer):
                gated = gm.graph.call_function(apply_gate, (node, table, buffer))  # case 2
            node.replace_all_uses_with(gated, delete_user_cb=lambda user: user is not gated)
            gated_nodes.add(gated)  # users now read the gate's output; case 5 must recognise it
            modified = True
        return PassResult(gm, modified)


def _zero_preserving(modules: dict[str, nn.Module], node: fx.Node) -> bool:
    return op_of(node, modules).zero_preserving


def _read_only_by_batch_norm(modules: dict[str, nn.Module], node: fx.Node) -> bool:
    """Every user reads `node` as its input and needs no gated input (the op table: BatchNorm)."""
    users = list(node.users)
    return bool(users) and all(not op_of(u, modules).needs_gated_input and u.args[0] is node for u in users)

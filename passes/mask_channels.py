"""MaskChannelsPass: the reference semantics of a plan, at full size.

Rule:
1. every floating tensor that carries a dropped channel is replaced by `torch.where(keep, x, 0)` right
   where it is made (a bool buffer `keep`), so dropped channels are zero on every tensor of their group; a
   select, not a product with a 0/1 mask, so a dropped -inf (an attention mask added to the scores) becomes
   0 rather than NaN;
2. normalisations whose statistics span channels (LayerNorm over the channel dim, GroupNorm with fewer
   groups than channels; module or functional form) compute them over kept channels only, per group,
   which is what the pruned layer sees;
3. statistics over parameter positions (weight standardisation: a conv weight's mean and standard deviation
   over its input channels, `F.batch_norm` of the reshaped weight) are computed over the positions that
   survive: the node reads its input sliced to them (`index_select`), and a normalisation's result is
   copied back into the full-size input (`index_copy`), as the pruned parameter gives.
`apply_plan(graph, plan)(x)` must equal `mask_model(graph, plan)(x)`: the tests hold the rewrite to that.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

from cascomp.ir.context import ParamStatistic, Record
from cascomp.ir.keep import kept, kept_along, statistic_masks
from cascomp.ir.op_table import function_op, module_op, op_name
from cascomp.ir.ops import Kind
from cascomp.kernels.masked_norm import MaskedGroupNorm, MaskedLayerNorm, masked_group_norm, masked_layer_norm
from cascomp.passes.base import Pass, PassResult


class MaskChannelsPass(Pass):
    def __init__(self, record: Record, label_keep: torch.Tensor) -> None:
        self.record = record
        self.label_keep = label_keep

    def call(self, gm: fx.GraphModule) -> PassResult:
        modified = False
        for node in list(gm.graph.nodes):  # case 2, before masks re-route the inputs
            if node.op in ("call_module", "call_function"):
                modified |= self._mask_statistics(gm, node)
        nodes = {node.name: node for node in gm.graph.nodes}
        for fact in self.record.statistics:  # case 3
            modified |= self._mask_parameter_statistic(gm, nodes[fact.node], fact)
        for index, node in enumerate(list(gm.graph.nodes)):
            if node.op not in ("call_module", "call_function", "call_method"):
                continue
            labels = self.record.labels.get(node.name)
            if not isinstance(labels, torch.Tensor) or node.name not in self.record.floating:
                continue
            mask = kept(labels, self.label_keep)
            if bool(mask.all()):
                continue
            name = f"cascomp_mask_{index}"  # case 1
            gm.register_buffer(name, mask)
            with gm.graph.inserting_after(node):
                buffer = gm.graph.get_attr(name)
            with gm.graph.inserting_after(buffer):
                masked = gm.graph.call_function(torch.where, (buffer, node, 0.0))
            node.replace_all_uses_with(masked, delete_user_cb=lambda user: user is not masked)
            modified = True
        return PassResult(gm, modified)

    def _channel_mask(self, node: fx.Node, dim: int) -> torch.Tensor | None:
        labels = self.record.labels.get(node.args[0].name) if node.args else None
        if not isinstance(labels, torch.Tensor) or labels.shape[dim] == 1:
            return None
        mask = kept_along(labels, dim, self.label_keep)
        return None if bool(mask.all()) else mask

    def _mask_statistics(self, gm: fx.GraphModule, node: fx.Node) -> bool:
        """Case 2, for the ops the op table calls layer and group norms."""
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            kind, replacement = module_op(module).kind, None
            if kind is Kind.LAYER_NORM and len(module.normalized_shape) == 1:
                mask = self._channel_mask(node, -1)
                replacement = None if mask is None else MaskedLayerNorm(module, mask)
            elif kind is Kind.GROUP_NORM and module.num_groups < module.num_channels:
                mask = self._channel_mask(node, 1)
                replacement = None if mask is None else MaskedGroupNorm(module, mask)
            if replacement is not None:
                _replace_module(gm, node.target, replacement)
            return replacement is not None
        kind = function_op(op_name(node)).kind
        if kind is Kind.LAYER_NORM:
            return self._mask_function(gm, node, -1, masked_layer_norm)
        if kind is Kind.GROUP_NORM and _fewer_groups_than_channels(self.record, node):
            return self._mask_function(gm, node, 1, masked_group_norm)
        return False

    def _mask_parameter_statistic(self, gm: fx.GraphModule, node: fx.Node, fact: ParamStatistic) -> bool:
        """Case 3: slice the statistic's input to the surviving positions (and put a normalisation's result
        back in place)."""
        surviving = _surviving(self.record, self.label_keep, fact)
        if not surviving:
            return False
        chain, buffers = [node.args[0]], []
        with gm.graph.inserting_before(node):
            for dim, index in surviving.items():
                name = f"cascomp_statistic_keep_{node.name}_{dim}"
                gm.register_buffer(name, index)
                buffers.append(gm.graph.get_attr(name))
                chain.append(gm.graph.call_function(torch.index_select, (chain[-1], dim, buffers[-1])))
        node.args = (chain[-1],) + tuple(node.args[1:])
        if fact.same_shape:
            copies = [node]
            for dim, buffer, base in reversed(list(zip(surviving, buffers, chain[:-1]))):
                with gm.graph.inserting_after(copies[-1]):
                    copies.append(gm.graph.call_function(torch.index_copy, (base, dim, buffer, copies[-1])))
            node.replace_all_uses_with(copies[-1], delete_user_cb=lambda user: user is not copies[1])
        return True

    def _mask_function(self, gm: fx.GraphModule, node: fx.Node, dim: int, masked) -> bool:
        """Retarget a functional norm to its masked twin, fed the kept-channel mask along `dim`."""
        mask = self._channel_mask(node, dim)
        if mask is None:
            return False
        name = f"cascomp_norm_mask_{node.name}"
        gm.register_buffer(name, mask.float())
        with gm.graph.inserting_before(node):
            buffer = gm.graph.get_attr(name)
        node.target = masked
        # ATen's layer_norm and group_norm have a sixth, cudnn_enable(d), which the masked twin lacks
        node.args = node.args[:5]
        node.kwargs = {**{k: v for k, v in node.kwargs.items() if k not in ("cudnn_enable", "cudnn_enabled")},
                       "mask": buffer}
        return True


def _surviving(record: Record, label_keep: torch.Tensor, fact: ParamStatistic) -> dict[int, torch.Tensor]:
    """Per dim of the statistic's input that loses positions, the indices of those that survive."""
    masks = statistic_masks(record.param_axes, label_keep, fact)
    return {dim: mask.nonzero().reshape(-1) for dim, mask in masks.items() if not bool(mask.all())}


def _replace_module(gm: fx.GraphModule, path: str, module: nn.Module) -> None:
    parent, _, attr = path.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, attr, module)


def _fewer_groups_than_channels(record: Record, node: fx.Node) -> bool:
    """A functional group norm whose groups hold several channels (one channel per group needs no mask)."""
    groups = node.args[1] if len(node.args) > 1 else node.kwargs.get("num_groups")
    source = node.args[0] if node.args else None
    shape = record.shapes.get(source.name) if isinstance(source, fx.Node) else None
    return isinstance(groups, int) and isinstance(shape, tuple) and len(shape) > 1 and groups < shape[1]

"""The channel rules of the op table's module entries: each reads one module call (`cascomp.ir.ops.Call`,
with its module and path) and hands its tensors, labels and parameter names to rules_tensor / rules_layers.
"""

from __future__ import annotations

from cascomp.ir import rules_layers as layers
from cascomp.ir import rules_tensor as tensor
from cascomp.ir.decompose import kept_whole_reason
from cascomp.ir.ops import Call
from cascomp.ir.rules_ops import shuffle_pixels, unknown


def _names(call: Call, *attrs: str) -> tuple[str | None, ...]:
    """The paths of the module's parameters and buffers `attrs` (None for those it does not have)."""
    return tuple(f"{call.path}.{a}" if getattr(call.module, a, None) is not None else None for a in attrs)


def pointwise(call: Call):
    return call.lfirst


def softmax(call: Call):
    module = call.module
    return tensor.softmax(call.ctx, call.lfirst, module.dim if module.dim is not None else -1, type(module).__name__)


def spatial(call: Call):
    if isinstance(call.out, tuple):  # max pooling with indices
        return tuple(tensor.channelwise(call.ctx, call.lfirst, o) for o in call.out)
    return tensor.channelwise(call.ctx, call.lfirst, call.out)


def pixel_shuffle(call: Call):
    return shuffle_pixels(call.ctx, call.first, call.lfirst, call.module.upscale_factor, call.module, call.out)


def movement(call: Call):
    return tensor.movement(call.ctx, call.first, call.lfirst, call.module, call.out)


def conv(call: Call):
    w = layers.Weights(f"{call.path}.weight", _names(call, "bias")[0])
    return layers.conv(call.ctx, w, call.first, call.lfirst, call.out, call.module.groups)


def conv_transpose(call: Call):
    w = layers.Weights(f"{call.path}.weight", _names(call, "bias")[0], out_dim=1, in_dim=0)
    return layers.conv(call.ctx, w, call.first, call.lfirst, call.out, call.module.groups, transposed=True)


def linear(call: Call):
    w = layers.Weights(f"{call.path}.weight", _names(call, "bias")[0])
    return layers.linear(call.ctx, w, call.first, call.lfirst, call.out)


def per_channel_norm(call: Call):
    """BatchNorm and InstanceNorm: affine parameters and running statistics per channel of dim 1."""
    names = _names(call, "weight", "bias", "running_mean", "running_var")
    return layers.per_channel(call.ctx, names, call.first, call.lfirst, 1, type(call.module).__name__)


def layer_norm(call: Call):
    normalized = len(call.module.normalized_shape)
    return layers.layer_norm(call.ctx, _names(call, "weight", "bias"), call.first, call.lfirst, normalized)


def group_norm(call: Call):
    groups = call.module.num_groups
    return layers.group_norm(call.ctx, _names(call, "weight", "bias"), call.first, call.lfirst, groups)


def prelu(call: Call):
    return layers.per_channel(call.ctx, _names(call, "weight"), call.first, call.lfirst, 1, "PReLU")


def embedding(call: Call):
    return layers.embedding(call.ctx, f"{call.path}.weight", call.out)


def attention(call: Call):
    """Only the nn.MultiheadAttention instances the tracer could not decompose get here."""
    why = kept_whole_reason(call.module) or ("its calls on the example inputs differed in mask dtype or input "
                                             "rank, or it sits inside a submodule fx cannot trace")
    return unknown(call.ctx, f"nn.MultiheadAttention {call.path!r} kept whole ({why}; write the block with q/k/v "
                   "Linear layers and F.scaled_dot_product_attention to prune it)", call.operand_labels, call.out,
                   call.module)


def unknown_module(call: Call):
    return unknown(call.ctx, f"module {call.path!r} ({type(call.module).__name__})", call.operand_labels, call.out,
                   call.module)

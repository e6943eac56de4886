"""Decomposing nn.MultiheadAttention, before tracing, into ops the channel analysis already understands.

Traced whole, nn.MultiheadAttention is one opaque module whose packed `in_proj_weight` hides the q/k/v
split, so every channel it touches is frozen. `trace_module` swaps each instance in its private copy of the
model for `MultiheadAttentionParts`, which fx traces through like hand-written attention: heads then prune
as units and the rewrite resizes the head split. The parts compute what the module computes (both
outputs, eval mode). Cases:
1. projections: the packed `in_proj_weight` (or `q/k/v_proj_weight` when kdim/vdim differ) and
   `in_proj_bias` become the Linear layers `q_proj`, `k_proj`, `v_proj` under the module's path;
   `out_proj` stays as it is;
2. masks are made float as torch makes them (a bool True becomes -inf) and summed; a key padding mask
   broadcasts over heads and queries; a 3D attn_mask holds one mask per (sample, head);
3. `is_causal` is what torch makes of it: it replaces attn_mask only when there is no key padding mask and
   no weights are asked for; otherwise attn_mask is applied as given;
4. the attention: (a) one F.scaled_dot_product_attention call; weights, when asked for, are a side branch
   softmax(q k^T * scale + mask) that tracing erases when the caller ignores them (read, they reduce over
   heads, which freezes the heads); (b) with dropout > 0 (an nn.Dropout submodule, so it follows
   train/eval) or a per-head mask, the output is computed from those probabilities, as torch does (masked
   positions get `MASKED_OUT` instead of -inf): that is also where the analysis sees a per-head mask and
   ties the heads to it. The scale is 1/sqrt(head_dim) of the original, passed explicitly (pruning only
   ever removes whole heads);
5. what the parts cannot reproduce keeps the module whole and frozen, with the reason from
   `kept_whole_reason`: add_bias_kv, add_zero_attn, subclasses, and instances whose calls the example run
   did not show consistently (fx proxies cannot tell a mask's dtype or a tensor's rank, so the parts are
   specialised to what one eager run on the example inputs saw).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

_FORWARD = inspect.signature(nn.MultiheadAttention.forward)
# Where scores feed the output and carry heads, channel masks and search gates multiply them by 0, and
# -inf * 0 is NaN: there a masked position gets this finite stand-in, which softmax still maps to exactly 0
# (only a row with every key masked differs: uniform instead of torch's NaN).
MASKED_OUT = torch.finfo(torch.float32).min


@dataclass(frozen=True)
class ObservedCall:
    """What an eager call showed that a traced call cannot: tensor ranks, mask dtypes, flag values."""

    batched: bool
    attn_mask: str | None  # "bool", "float" or None
    attn_mask_dims: int
    key_padding_mask: str | None
    need_weights: bool
    average_attn_weights: bool
    is_causal: bool


class MultiheadAttentionParts(nn.Module):
    """nn.MultiheadAttention written with Linear layers, a head split and scaled_dot_product_attention.

    Only ever traced through: the traced GraphModule keeps its Linear and Dropout submodules, never this
    class, so a pruned model loads with torch alone.
    """

    def __init__(self, attention: nn.MultiheadAttention, call: ObservedCall) -> None:
        super().__init__()
        self.num_heads, self.head_dim = attention.num_heads, attention.head_dim
        self.batch_first, self.observed = attention.batch_first, call
        self.scale = math.sqrt(1.0 / attention.head_dim)  # as torch computes it
        biases = attention.in_proj_bias.chunk(3) if attention.in_proj_bias is not None else (None, None, None)
        projections = zip(_projections(attention), biases)
        self.q_proj, self.k_proj, self.v_proj = (_linear(weight, bias) for weight, bias in projections)
        self.out_proj = attention.out_proj
        self.attention_dropout = nn.Dropout(attention.dropout) if attention.dropout > 0 else None
        self.train(attention.training)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        # Flags and which masks exist come from the observed call: a traced argument that defaults to None
        # or True is a proxy, and branching on it would be wrong or fail.
        call = self.observed
        q, k, v = (self._split_heads(proj(self._batch_major(x)))
                   for proj, x in ((self.q_proj, query), (self.k_proj, key), (self.v_proj, value)))
        causal = call.is_causal and call.key_padding_mask is None and not call.need_weights  # case 3
        attn_mask = attn_mask if call.attn_mask is not None and not causal else None
        mask = self._mask(query, attn_mask, key_padding_mask if call.key_padding_mask is not None else None)
        per_head = attn_mask is not None and call.attn_mask_dims == 3
        if self.attention_dropout is not None or per_head:  # case 4b
            finite = None if mask is None else mask.clamp_min(MASKED_OUT)
            weights = self._probabilities(q, k, finite, causal, MASKED_OUT)
            out = self._attend(weights) @ v
        else:  # case 4a
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=causal,
                                                 scale=self.scale)
            weights = self._probabilities(q, k, mask, causal, float("-inf")) if call.need_weights else None
        out = self._unbatch_major(self.out_proj(out.transpose(1, 2).flatten(2)))
        if not call.need_weights:
            return out, None
        weights = weights.mean(dim=1) if call.average_attn_weights else weights
        return out, weights if call.batched else weights.squeeze(0)

    def _batch_major(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, E) whatever layout the module takes."""
        if not self.observed.batched:
            return x.unsqueeze(0)
        return x if self.batch_first else x.transpose(0, 1)

    def _unbatch_major(self, x: torch.Tensor) -> torch.Tensor:
        if not self.observed.batched:
            return x.squeeze(0)
        return x if self.batch_first else x.transpose(0, 1)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, E) -> (N, heads, L, head_dim); the rewrite resizes the head count here."""
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def _mask(self, query, attn_mask, key_padding_mask):
        """The float mask to add to the scores (N or 1, heads or 1, L or 1, S), or None (case 2)."""
        mask = None
        if attn_mask is not None:
            mask = _as_float(attn_mask, self.observed.attn_mask, query)
            if self.observed.attn_mask_dims == 3:
                mask = mask.unflatten(0, (-1, self.num_heads))
        if key_padding_mask is not None:
            padding = _as_float(key_padding_mask, self.observed.key_padding_mask, query)
            padding = (padding if self.observed.batched else padding.unsqueeze(0)).unsqueeze(1).unsqueeze(2)
            mask = padding if mask is None else mask + padding  # torch's order: attn_mask + padding
        return mask

    def _probabilities(self, q, k, mask, causal: bool, masked_out: float) -> torch.Tensor:
        """softmax(q k^T * scale + mask), as torch writes it out when weights are asked for."""
        scores = (q * self.scale) @ k.transpose(-2, -1)
        if mask is not None:
            scores = scores + mask
        if causal:  # what SDPA's is_causal does: query i sees keys 0..i
            allowed = torch.ones((q.size(-2), k.size(-2)), dtype=torch.bool, device=q.device).tril()
            scores = scores.masked_fill(allowed.logical_not(), masked_out)
        return scores.softmax(dim=-1)

    def _attend(self, weights: torch.Tensor) -> torch.Tensor:
        return weights if self.attention_dropout is None else self.attention_dropout(weights)


def _as_float(mask: torch.Tensor, kind: str | None, query: torch.Tensor) -> torch.Tensor:
    """torch's canonical mask: a float mask is added as it is, a bool True masks the position out."""
    if kind == "bool":
        return torch.zeros_like(mask, dtype=query.dtype).masked_fill(mask, float("-inf"))
    return mask


def _projections(attention: nn.MultiheadAttention) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if attention.in_proj_weight is not None:
        return attention.in_proj_weight.chunk(3)
    return attention.q_proj_weight, attention.k_proj_weight, attention.v_proj_weight


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """A Linear holding a copy of one projection (case 1)."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device,
                       dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    linear.weight.requires_grad_(weight.requires_grad)
    if bias is not None:
        linear.bias.requires_grad_(bias.requires_grad)
    return linear


# -- which instances, and putting them back ------------------------------------------------------------------
def kept_whole_reason(attention: nn.Module) -> str | None:
    """Why this instance has no decomposition (case 5), or None when it has one."""
    if type(attention) is not nn.MultiheadAttention:
        return f"{type(attention).__name__} is a subclass whose forward may differ"
    if attention.bias_k is not None or attention.bias_v is not None:
        return "add_bias_kv=True appends a learned key/value that is not split into heads"
    if attention.add_zero_attn:
        return "add_zero_attn=True appends a zero key/value that is not split into heads"
    return None


@dataclass
class Decomposition:
    """The nn.MultiheadAttention instances replaced in a model, by module path, so they can be put back."""

    model: nn.Module
    originals: dict[str, nn.Module] = field(default_factory=dict)

    @property
    def paths(self) -> frozenset[str]:
        return frozenset(self.originals)

    def restore_under(self, leaves: set[str]) -> None:
        """Put the original module back wherever a leaf holds the parts: a module that fx keeps whole
        must contain torch classes only, or the traced model would need cascomp to load."""
        for path in list(self.originals):
            if any(path == leaf or path.startswith(leaf + ".") for leaf in leaves):
                self.model.set_submodule(path, self.originals.pop(path))


def decompose_attention(model: nn.Module, example_inputs: tuple, example_kwargs: dict) -> Decomposition:
    """Replace in `model` (a private copy: it is modified) every nn.MultiheadAttention that can be
    decomposed and was called consistently on the example inputs."""
    decomposition = Decomposition(model)
    candidates = [m for m in model.modules()
                  if isinstance(m, nn.MultiheadAttention) and kept_whole_reason(m) is None]
    if not candidates:
        return decomposition
    calls = _observe_calls(model, candidates, example_inputs, example_kwargs)
    paths = [(path, m) for path, m in model.named_modules(remove_duplicate=False) if id(m) in calls and path]
    parts = {id(m): MultiheadAttentionParts(m, calls[id(m)]) for _, m in paths}
    for path, module in paths:
        model.set_submodule(path, parts[id(module)])
        decomposition.originals[path] = module
    return decomposition


def _observe_calls(model: nn.Module, candidates: list[nn.Module], args: tuple,
                   kwargs: dict) -> dict[int, ObservedCall]:
    """Run `model` once and keep, per instance, the one kind of call it got (none if calls differ)."""
    seen: dict[int, set[ObservedCall]] = {id(m): set() for m in candidates}

    def remember(module, call_args, call_kwargs):
        bound = _FORWARD.bind(module, *call_args, **call_kwargs)
        bound.apply_defaults()
        given = bound.arguments
        attn_mask = given["attn_mask"]
        seen[id(module)].add(ObservedCall(
            batched=given["query"].dim() == 3, attn_mask=_kind(attn_mask),
            attn_mask_dims=attn_mask.dim() if isinstance(attn_mask, torch.Tensor) else 0,
            key_padding_mask=_kind(given["key_padding_mask"]), need_weights=bool(given["need_weights"]),
            average_attn_weights=bool(given["average_attn_weights"]), is_causal=bool(given["is_causal"])))

    hooks = [m.register_forward_pre_hook(remember, with_kwargs=True) for m in candidates]
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    except Exception:  # tracing reports what is wrong with the model; without a run, nothing is decomposed
        return {}
    finally:
        for hook in hooks:
            hook.remove()
    return {key: next(iter(kinds)) for key, kinds in seen.items() if len(kinds) == 1}


def _kind(mask) -> str | None:
    if not isinstance(mask, torch.Tensor):
        return None
    return "bool" if mask.dtype == torch.bool else "float"

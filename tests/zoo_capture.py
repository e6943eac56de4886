"""Zoo models whose forward torch.fx cannot trace (see ENTRIES): captured by the fallback paths of
cascomp.ir.trace (torch.export for a submodule, or the submodule kept whole; torch.export for the top-level
forward).

tests.models merges ENTRIES into its ZOO, whose builders randomise the normalisation and switch to eval
mode."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cascomp.zoo import ZooEntry


class ShapeBranchNet(nn.Module):
    """A top-level forward that branches on its input's size (as multi-scale models do): fx cannot trace it,
    torch.export specialises the branch to the example's size."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU())
        self.small = nn.Conv2d(24, 24, 1)
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(self.stem(x))
        if x.shape[-1] > 8:  # large inputs are pooled first
            x = F.avg_pool2d(x, 2)
        else:
            x = self.small(x)
        return self.head(x.mean(dim=(2, 3)))


class ChunkScaled(nn.Module):
    """Loops over its input's channels in chunks (`range` of a size): torch.fx cannot trace that; torch.export
    captures it with the loop unrolled at the example's width (its channels then frozen by the slices)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        return torch.cat([y[:, i:i + 4] * (1 + i / 4) for i in range(0, x.shape[1], 4)], dim=1)


def unblock(x: torch.Tensor, block: int) -> torch.Tensor:
    """NesT's deblockify: (B, T, N, C) blocks back to a (B, C, H, W) map, the grid side as a Python number
    computed from a size (`int(math.sqrt(T))`), which fx cannot do with a traced size."""
    B, T, _, C = x.shape
    side = int(math.sqrt(T))
    x = x.reshape(B, side, side, block, block, C).transpose(2, 3)
    return x.reshape(B, side * block, side * block, C).permute(0, 3, 1, 2)


class BlockMixer(nn.Module):
    """A LayerNorm and a per-token linear map over NesT-style blocks (ATen's layer_norm and linear once
    captured), then `unblock`."""

    def __init__(self, width: int, block: int = 4) -> None:
        super().__init__()
        self.block = block
        self.norm = nn.LayerNorm(width)
        self.mix = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        s = self.block
        blocks = x.permute(0, 2, 3, 1).reshape(B, H // s, s, W // s, s, C).transpose(2, 3).reshape(B, -1, s * s, C)
        return unblock(F.gelu(self.mix(self.norm(blocks))), s)


class OpaqueBlockNet(nn.Module):
    """A prunable stem and head around a submodule fx cannot trace, called twice at two resolutions (a
    torch.export capture at the first call's sizes fails at the second): kept whole, its channels frozen, its
    cost counted at both calls."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.inner = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 16, 3, padding=1))
        self.gate = ChunkScaled(16)
        self.head = nn.Sequential(nn.Conv2d(16, 32, 1), nn.ReLU())
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gate(self.inner(self.stem(x)))
        x = self.gate(F.avg_pool2d(x, 2))
        return self.fc(self.head(x).mean(dim=(2, 3)))


class ExportedBlocksNet(nn.Module):
    """Two submodules fx cannot trace that torch.export captures (a loop over channel chunks, NesT's size
    turned into a Python number): traced through as ATen ops, the mixer's channels prunable."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.mixer = BlockMixer(16)
        self.chunks = ChunkScaled(16)
        self.head = nn.Sequential(nn.Conv2d(16, 32, 1), nn.ReLU())
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.chunks(x + self.mixer(x))
        return self.fc(self.head(x).mean(dim=(2, 3)))


class SharedMixerNet(nn.Module):
    """One submodule fx cannot trace (NesT's unblock) called twice with the same weights: one torch.export
    capture, checked at both calls, traced through at each; the mixer's channels prune with the stream."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.mixer = BlockMixer(16)
        self.head = nn.Sequential(nn.Conv2d(16, 32, 1), nn.ReLU())
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.mixer(x)
        x = x + self.mixer(x)
        return self.fc(self.head(x).mean(dim=(2, 3)))


class _Cache:
    """A key-value cache: an object torch.export cannot return (not a pytree container)."""

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []


class _DecoderOutput:
    """A model-output object holding the hidden states and the cache (transformers' ModelOutput-like)."""

    def __init__(self, hidden: torch.Tensor, cache: _Cache) -> None:
        self.hidden, self.cache = hidden, cache


class TinyDecoder(nn.Module):
    """GPT-2-style: token and position tables read by F.embedding, Conv1D layers computed with torch.addmm over
    flattened tokens, a branch on the sequence length (fx cannot trace it; torch.export specialises it) and a
    cache object in its output (torch.export cannot return it)."""

    def __init__(self, vocab: int = 50, width: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.wte = nn.Parameter(torch.randn(vocab, width) * 0.5)
        self.wpe = nn.Parameter(torch.randn(16, width) * 0.5)
        self.norm = nn.LayerNorm(width)
        self.fc_weight, self.fc_bias = nn.Parameter(torch.randn(width, hidden) * 0.2), nn.Parameter(torch.randn(hidden))
        self.proj_weight, self.proj_bias = nn.Parameter(torch.randn(hidden, width) * 0.2), nn.Parameter(torch.randn(width))

    def forward(self, ids: torch.Tensor) -> _DecoderOutput:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = F.embedding(ids, self.wte) + F.embedding(positions, self.wpe)
        if ids.shape[1] > self.wpe.shape[0]:
            raise ValueError("sequence longer than the position table")
        h = self.norm(x)
        h = torch.addmm(self.fc_bias, h.view(-1, h.shape[-1]), self.fc_weight).view(*h.shape[:-1], -1)
        h = torch.addmm(self.proj_bias, F.gelu(h).view(-1, h.shape[-1]), self.proj_weight).view(x.shape)
        cache = _Cache()
        cache.keys.append(h)
        return _DecoderOutput(x + h, cache)


class CachedDecoderNet(nn.Module):
    """A classifier over TinyDecoder's hidden states: the caller reads one field of the decoder's output."""

    def __init__(self) -> None:
        super().__init__()
        self.body = TinyDecoder()
        self.head = nn.Linear(32, 10)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(ids).hidden.mean(dim=1))


class KeywordMixer(nn.Module):
    """BERT's attention signature: optional inputs passed as None, some through **kwargs, and a branch on a
    size (fx cannot trace it). torch.export fails on the None under **kwargs with a dynamic batch."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.mix = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if x.shape[-1] > 64:
            raise ValueError("too wide")
        bias = kwargs.get("position_bias")
        y = self.mix(x) + (0.0 if bias is None else bias)
        return y if mask is None else y * mask


class KeywordNet(nn.Module):
    """Calls KeywordMixer with None keyword inputs, as BertLayer calls BertSelfAttention."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(8, 16)
        self.mixer = KeywordMixer(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.mixer(x, mask=None, position_bias=None, cache=None)
        return self.head(torch.relu(x).mean(dim=1))


class BiasedMixer(nn.Module):
    """A mixer that adds a bias given with batch 1 (broadcast over the batch, as T5's position bias passed
    from block to block) cut to the sequence's length (ATen's slice on a position dim, as T5 cuts its bias),
    with a branch on a size fx cannot trace."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.mix = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > 64:
            raise ValueError("too wide")
        return torch.relu(self.mix(x) + bias[:, -x.shape[1]:])


class BroadcastBiasNet(nn.Module):
    """Calls BiasedMixer with an input of batch 1 beside the batch: captured at the example, that input must
    keep its batch of 1 (doubling it as a batch of one is doubled fixed the capture to the wrong size)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(8, 16)
        self.position = nn.Parameter(torch.randn(1, 9, 16))
        self.mixer = BiasedMixer(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.mixer(x, self.position * 0.5)
        return self.head(x.mean(dim=1))


class SkipinitBlock(nn.Module):
    """A residual block scaled in place by a learned gain (timm NF-Net's skipinit: `out.mul_(gain)`, whose
    result nobody reads: `out` itself is read afterwards)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.gain = nn.Parameter(torch.tensor(0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.conv(x))
        out.mul_(self.gain)
        return out + x


class SkipinitNet(nn.Module):
    """Skipinit blocks beside a submodule fx cannot trace (so the capture path runs dead-code elimination
    over the whole graph, which dropped the in-place gains)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block1, self.block2 = SkipinitBlock(8), SkipinitBlock(8)
        self.mixer = BlockMixer(8)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.mixer(self.block1(self.stem(x))))
        return self.head(x.mean(dim=(2, 3)))


class PatchFold(nn.Module):
    """MobileViT's unfolding: (B, C, H, W) -> (B * C * H/p, p, W/p, p) -> tokens (B * p * p, patches, C), a
    linear map over the channels, and back; a branch on a size fx cannot trace, so torch.export captures it
    with C a constant: the merged dim is B * (C * H/p), which the rewrite must scale, not write out at the
    example's batch."""

    def __init__(self, width: int, patch: int = 2) -> None:
        super().__init__()
        self.patch = patch
        self.mix = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        if H % self.patch:
            raise ValueError("the height must be a multiple of the patch")
        p, nh, nw = self.patch, H // self.patch, W // self.patch
        t = x.reshape(B * C * nh, p, nw, p).transpose(1, 2)
        t = t.reshape(B, C, nh * nw, p * p).transpose(1, 3).reshape(B * p * p, nh * nw, -1)
        t = torch.relu(self.mix(t))
        t = t.contiguous().view(B, p * p, nh * nw, -1).transpose(1, 3).reshape(B * C * nh, nw, p, p)
        return t.transpose(1, 2).reshape(B, C, H, W)


class PatchFoldNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.fold = PatchFold(8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.fold(torch.relu(self.stem(x))))
        return self.head(torch.relu(x).mean(dim=(2, 3)))


ENTRIES: dict[str, ZooEntry] = {
    "shape_branch": ZooEntry(ShapeBranchNet, ((2, 3, 16, 16),),
                             "Top-level forward branching on the input size: captured by torch.export.",
                             fx_traceable=False),
    "opaque_block": ZooEntry(OpaqueBlockNet, ((2, 3, 16, 16),),
                             "A submodule fx cannot trace, called twice, kept whole between prunable layers.",
                             fx_traceable=False),
    "exported_blocks": ZooEntry(ExportedBlocksNet, ((2, 3, 16, 16),),
                                "Submodules fx cannot trace (a channel-chunk loop, int(math.sqrt(size))), captured "
                                "by torch.export.", fx_traceable=False),
    "cached_decoder": ZooEntry(CachedDecoderNet, ((2, 12),),
                               "A GPT-2-style decoder fx cannot trace whose output holds a cache object; the caller "
                               "reads its hidden states.", input_dtypes=(torch.int64,), fx_traceable=False),
    "keyword_none": ZooEntry(KeywordNet, ((2, 6, 8),),
                             "A submodule fx cannot trace, called with None keyword inputs (some via **kwargs).",
                             fx_traceable=False),
    "broadcast_input": ZooEntry(BroadcastBiasNet, ((2, 6, 8),),
                                "A submodule fx cannot trace, given an input of batch 1 beside the batch.",
                                fx_traceable=False),
    "skipinit_gain": ZooEntry(SkipinitNet, ((2, 3, 16, 16),),
                              "In-place gains whose results nobody reads, beside a submodule fx cannot trace.",
                              fx_traceable=False),
    "patch_fold": ZooEntry(PatchFoldNet, ((1, 3, 16, 16),),
                           "MobileViT's patch unfolding (batch and channels merged in one dim) in a submodule fx "
                           "cannot trace, at an example batch of 1.", fx_traceable=False),
    "broadcast_input_b1": ZooEntry(BroadcastBiasNet, ((1, 6, 8),),
                                   "The same at an example batch of 1: only the inputs whose dim 0 follows the "
                                   "model's batch are captured with a dynamic batch (T5's encoder).",
                                   fx_traceable=False),
    "shared_exported": ZooEntry(SharedMixerNet, ((2, 3, 16, 16),),
                                "A submodule fx cannot trace, called twice: one torch.export capture for both calls.",
                                fx_traceable=False),
}

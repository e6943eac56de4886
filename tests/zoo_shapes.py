"""Zoo models reproducing a class of failures seen on real model libraries (see ENTRIES): shapes computed
at run time (from `x.shape`, from other nodes, layer scales reshaped to `[C, 1, 1]`, biases concatenated
from parameters and buffers, attention heads on a computed dim) and normalising ops across channels.

tests.models merges ENTRIES into its ZOO, whose builders randomise the normalisation and switch to eval
mode."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cascomp.zoo import ZooEntry


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | float = 0.0):
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # the scale reads a dim that keeps its size
    return (scores + bias).softmax(dim=-1) @ v


class TokenBlock(nn.Module):
    """Attention and MLP over (B, N, C) tokens; every size it reshapes by comes from `x.shape`."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        qkv = self.qkv(y).reshape(y.shape[0], y.shape[1], 3, self.heads, y.shape[-1] // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        x = x + self.proj(_attention(q, k, v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class PoolingTransformer(nn.Module):
    """PiT-like: tokens go back to a feature map between stages (`reshape(B, C, H, W)` from `x.shape`), the
    class token is split off by a length read from another tensor, a depthwise strided conv pools."""

    def __init__(self, dims: tuple[int, int] = (16, 32), heads: tuple[int, int] = (2, 4)) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dims[0], 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, dims[0]) * 0.1)
        self.blocks = nn.ModuleList(TokenBlock(d, h) for d, h in zip(dims, heads))
        self.pool_conv = nn.Conv2d(dims[0], dims[1], 3, stride=2, padding=1, groups=dims[0])
        self.pool_fc = nn.Linear(dims[0], dims[1])
        self.norm, self.head = nn.LayerNorm(dims[1]), nn.Linear(dims[1], 10)

    def _stage(self, block: TokenBlock, x: torch.Tensor, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        token_length = cls.shape[1]
        B, C, H, W = x.shape
        tokens = block(torch.cat((cls, x.flatten(2).transpose(1, 2)), dim=1))
        return tokens[:, token_length:].transpose(1, 2).reshape(B, C, H, W), tokens[:, :token_length]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        x, cls = self._stage(self.blocks[0], x, self.cls.expand(x.shape[0], -1, -1))
        x, cls = self._stage(self.blocks[1], self.pool_conv(x), self.pool_fc(cls))
        return self.head(self.norm(cls[:, 0]) + x.mean((2, 3)))


class SplitConvBlock(nn.Module):
    """EdgeNeXt-like: the channels are split into parts sized from `x.shape[1]`, filtered hierarchically and
    concatenated; then cross-covariance attention over the tokens of a feature map reshaped with sizes read
    from the tensor, and a positional encoding built from the spatial size."""

    def __init__(self, dim: int, parts: int = 4, heads: int = 2) -> None:
        super().__init__()
        self.parts, self.heads = parts, heads
        width = dim // parts
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1, groups=width) for _ in range(parts - 1))
        self.position = nn.Conv2d(4, dim, 1)
        self.norm = nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.temperature = nn.Parameter(torch.rand(heads, 1, 1) + 0.5)

    def _positions(self, batch: int, height: int, width: int) -> torch.Tensor:
        rows = torch.arange(height, dtype=torch.float32).view(1, height, 1).expand(batch, height, width)
        cols = torch.arange(width, dtype=torch.float32).view(1, 1, width).expand(batch, height, width)
        grid = torch.stack((rows.sin(), rows.cos(), cols.sin(), cols.cos()), dim=1)
        return self.position(grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, x.shape[1] // self.parts, dim=1)
        out, previous = [], None
        for i, conv in enumerate(self.convs):  # fx cannot iterate the parts: they are indexed
            previous = conv(parts[i] if previous is None else parts[i] + previous)
            out.append(previous)
        x = torch.cat(out + [parts[len(self.convs)]], dim=1)
        B, C, H, W = x.shape
        x = x + self._positions(B, H, W)
        tokens = x.reshape(B, C, H * W).permute(0, 2, 1)
        qkv = self.qkv(self.norm(tokens)).reshape(B, H * W, 3, self.heads, C // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 4, 1).unbind(0)  # (B, heads, head_dim, tokens)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)  # over tokens: fine
        attention = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)  # across head_dim: frozen
        tokens = tokens + self.proj((attention @ v).permute(0, 3, 1, 2).reshape(B, H * W, C))
        return tokens.reshape(B, H, W, C).permute(0, 3, 1, 2)


class EdgeNet(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 4, stride=4), nn.BatchNorm2d(dim))
        self.block = SplitConvBlock(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)).mean((2, 3)))


class PoolBlock(nn.Module):
    """PoolFormer-like: pooling as token mixer, layer scales reshaped to `[C, 1, 1]` three ways (a shape
    baked at construction, `reshape(-1, 1, 1)`, and a size read from the activation)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.shape = (dim, 1, 1)
        self.norm1, self.norm2 = nn.GroupNorm(1, dim), nn.GroupNorm(1, dim)
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.fc1, self.fc2 = nn.Conv2d(dim, 2 * dim, 1), nn.Conv2d(2 * dim, dim, 1)
        self.scale1, self.scale2 = nn.Parameter(torch.rand(dim) + 0.5), nn.Parameter(torch.rand(dim) + 0.5)
        self.scale3 = nn.Parameter(torch.rand(2 * dim) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.scale1.view(self.shape) * (self.pool(y) - y)
        hidden = self.scale3.view(x.shape[1] * 2, 1, 1) * F.gelu(self.fc1(self.norm2(x)))
        return x + self.scale2.reshape(-1, 1, 1) * self.fc2(hidden)


class PoolFormer(nn.Module):
    def __init__(self, dims: tuple[int, int] = (16, 24)) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dims[0], 3, stride=2, padding=1)
        self.stage1, self.down, self.stage2 = PoolBlock(dims[0]), nn.Conv2d(dims[0], dims[1], 2, 2), PoolBlock(dims[1])
        self.head = nn.Linear(dims[1], 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage2(self.down(self.stage1(self.stem(x)))).mean((2, 3)))


class BiasCatAttention(nn.Module):
    """BEiT-like: the qkv bias is `cat(q_bias, zeros, v_bias)` (a buffer, or `zeros_like` in the block
    without a table) fed to `F.linear` with the qkv layer's weight; a relative position bias table indexed by
    a buffer is added to the scores."""

    def __init__(self, dim: int, heads: int, tokens: int, buffer: bool) -> None:
        super().__init__()
        self.heads, self.buffer = heads, buffer
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.randn(dim) * 0.1), nn.Parameter(torch.randn(dim) * 0.1)
        self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
        self.table = nn.Parameter(torch.randn(2 * tokens - 1, heads) * 0.1)
        position = torch.arange(tokens)
        self.register_buffer("index", position[:, None] - position[None, :] + tokens - 1, persistent=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        zeros = self.k_bias if self.buffer else torch.zeros_like(self.v_bias)
        qkv = F.linear(x, self.qkv.weight, torch.cat((self.q_bias, zeros, self.v_bias)))
        q, k, v = qkv.reshape(B, N, 3, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.table[self.index.view(-1)].view(N, N, -1).permute(2, 0, 1).unsqueeze(0) if self.buffer else 0.0
        return self.proj(_attention(q, k, v, bias).transpose(1, 2).reshape(B, N, C))


class BeitLike(nn.Module):
    def __init__(self, dim: int = 24, heads: int = 3) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, stride=4)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(2))
        self.blocks = nn.ModuleList(BiasCatAttention(dim, heads, 16, buffer) for buffer in (True, False))
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)
        for norm, block in zip(self.norms, self.blocks):
            x = x + block(norm(x))
        return self.head(x.mean(1))


class WindowAttention(nn.Module):
    """MaxViT/CoAtNet-like: a feature map cut into windows with sizes computed from `x.shape`, heads on a
    computed dim (`-1`), a relative position bias table `(heads, positions)` gathered and viewed as
    `(num_heads, N, N)`, and the windows put back."""

    def __init__(self, dim: int, head_dim: int, window: int) -> None:
        super().__init__()
        self.head_dim, self.window, self.num_heads = head_dim, window, dim // head_dim
        self.norm = nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.table = nn.Parameter(torch.randn(self.num_heads, (2 * window - 1) ** 2) * 0.1)
        rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        flat = torch.stack((rows.flatten(), cols.flatten()))
        relative = (flat[:, :, None] - flat[:, None, :]) + window - 1
        self.register_buffer("index", relative[0] * (2 * window - 1) + relative[1], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        s = self.window
        windows = x.view(B, C, H // s, s, W // s, s).permute(0, 2, 4, 3, 5, 1).reshape(-1, s * s, C)
        tokens = windows.shape[1]
        qkv = self.qkv(self.norm(windows)).view(windows.shape[0], tokens, 3, -1, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.table[:, self.index.view(-1)].view(self.num_heads, tokens, tokens)
        out = self.proj(_attention(q, k, v, bias).transpose(1, 2).reshape(windows.shape[0], tokens, -1))
        out = out.view(B, H // s, W // s, s, s, -1).permute(0, 5, 1, 3, 2, 4).reshape(B, -1, H, W)
        return x + out


class WindowNet(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 3, stride=2, padding=1), nn.BatchNorm2d(dim), nn.GELU())
        self.attention = WindowAttention(dim, head_dim=4, window=4)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attention(self.stem(x)).mean((2, 3)))


class SelectiveKernel(nn.Module):
    """SK-Net-like: branch features stacked (B, branches, C, H, W), attention logits viewed as
    (B, branches, C // branches, 1, 1) from a size read off the tensor, softmax over the branches."""

    def __init__(self, dim: int, branches: int = 2) -> None:
        super().__init__()
        self.branches = branches
        self.paths = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1 + i, dilation=1 + i, bias=False), nn.BatchNorm2d(dim),
                          nn.ReLU()) for i in range(branches))
        self.reduce = nn.Sequential(nn.Conv2d(dim, dim // 2, 1), nn.ReLU())
        self.select = nn.Conv2d(dim // 2, dim * branches, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.stack([path(x) for path in self.paths], dim=1)
        logits = self.select(self.reduce(features.sum(1).mean((2, 3), keepdim=True)))
        B, C, H, W = logits.shape
        weights = logits.view(B, self.branches, C // self.branches, H, W).softmax(dim=1)
        return (features * weights).sum(1)


class SelectiveKernelNet(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 3, padding=1), nn.BatchNorm2d(dim), nn.ReLU())
        self.block = SelectiveKernel(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)).mean((2, 3)))


class ChannelNormalising(nn.Module):
    """Normalising ops across the channel dim (softmax, F.normalize, division by the channel sum or by
    `x.norm(2, 1, True)`, logsumexp): the channels they see cannot be pruned exactly; the conv before them can."""

    def __init__(self) -> None:
        super().__init__()
        widths = (3, 8, 8, 8, 8, 8, 8)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(widths[:-1], widths[1:]))
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn(self.convs[0](x)))
        b = self.convs[1](a).softmax(dim=1)
        c = F.normalize(self.convs[2](b), dim=1)
        d = self.convs[3](c).exp()
        d = d / d.sum(1, keepdim=True)
        e = self.convs[4](d)
        e = e / e.norm(2, 1, True)
        f = self.convs[5](e)
        return self.head((f - torch.logsumexp(f, dim=1, keepdim=True)).mean((2, 3)))


class HeadsInBatchAttention(nn.Module):
    """BoTNet-like bottleneck attention: q, k, v split off one 1x1 conv, heads merged into the batch with a
    size computed from it (`B * self.heads`), a relative position term from a parameter, the map put back
    with sizes read off `x.shape`."""

    def __init__(self, dim: int, heads: int = 4, head_qk: int = 4, tokens: int = 64) -> None:
        super().__init__()
        self.heads, self.head_qk, self.head_v, self.dim = heads, head_qk, dim // heads, dim
        self.qkv = nn.Conv2d(dim, 2 * heads * head_qk + dim, 1, bias=False)
        self.position = nn.Parameter(torch.randn(tokens, head_qk) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = torch.split(self.qkv(x), [self.heads * self.head_qk, self.heads * self.head_qk, self.dim], dim=1)
        q = q.reshape(B * self.heads, self.head_qk, -1).transpose(-1, -2)
        k = k.reshape(B * self.heads, self.head_qk, -1)
        v = v.reshape(B * self.heads, self.head_v, -1).transpose(-1, -2)
        attn = ((q @ k) * self.head_qk ** -0.5 + q @ self.position.t()).softmax(dim=-1)
        return (attn @ v).transpose(-1, -2).reshape(B, self.dim, H, W)


class HaloAttention(nn.Module):
    """HaloNet-like blocked local attention: the queries cut into blocks and the keys/values into
    overlapping windows (`unfold` after a halo pad), heads merged into the batch (`B * self.heads`), the
    blocks folded back with sizes computed from `x.shape`."""

    def __init__(self, dim: int, heads: int = 2, head_qk: int = 4, block: int = 4, halo: int = 1) -> None:
        super().__init__()
        self.heads, self.head_qk, self.head_v, self.dim = heads, head_qk, dim // heads, dim
        self.block, self.halo, self.window = block, halo, block + 2 * halo
        self.q = nn.Conv2d(dim, heads * head_qk, 1, bias=False)
        self.kv = nn.Conv2d(dim, heads * head_qk + dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        rows, cols, s = H // self.block, W // self.block, self.block
        blocks = rows * cols
        q = self.q(x).reshape(-1, self.head_qk, rows, s, cols, s).permute(0, 1, 3, 5, 2, 4)
        q = q.reshape(B * self.heads, self.head_qk, -1, blocks).transpose(1, 3)
        kv = F.pad(self.kv(x), [self.halo] * 4)
        kv = kv.unfold(2, self.window, s).unfold(3, self.window, s).reshape(
            B * self.heads, self.head_qk + self.head_v, blocks, -1).permute(0, 2, 3, 1)
        k, v = torch.split(kv, [self.head_qk, self.head_v], dim=-1)
        attn = (q @ k.transpose(-1, -2) * self.head_qk ** -0.5).softmax(dim=-1)
        out = (attn @ v).transpose(1, 3).reshape(-1, s, s, rows, cols)
        return out.permute(0, 3, 1, 4, 2).contiguous().view(B, self.dim, H, W)


class AttentionBottlenecks(nn.Module):
    """Two residual bottleneck blocks whose middle is a heads-in-batch attention (BoTNet, HaloNet): the
    attention's own channels are frozen (they meet a per-head linear map along two dims), the stream and
    the bottlenecks' reducing convs prune, and the batch stays dynamic."""

    def __init__(self, dim: int = 16, inner: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(dim), nn.ReLU())
        self.blocks = nn.ModuleList()
        for attention in (HeadsInBatchAttention(inner), HaloAttention(inner)):
            self.blocks.append(nn.Sequential(
                nn.Conv2d(dim, inner, 1, bias=False), nn.BatchNorm2d(inner), nn.ReLU(), attention,
                nn.BatchNorm2d(inner), nn.ReLU(), nn.Conv2d(inner, dim, 1, bias=False), nn.BatchNorm2d(dim)))
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = torch.relu(x + block(x))
        return self.head(x.mean((2, 3)))


_IMAGE_16 = ((2, 3, 16, 16),)

ENTRIES: dict[str, ZooEntry] = {
    "pit_pooling": ZooEntry(
        PoolingTransformer, _IMAGE_16,
        "PiT-like stages: reshapes from x.shape, class token split by a length read off a tensor, conv pooling."),
    "edgenext_split": ZooEntry(
        EdgeNet, _IMAGE_16,
        "EdgeNeXt-like split sized from x.shape[1], concat, positional encoding, cross-covariance attention."),
    "poolformer_scales": ZooEntry(
        PoolFormer, _IMAGE_16, "PoolFormer-like blocks with layer scales viewed as [C, 1, 1]."),
    "beit_bias_cat": ZooEntry(
        BeitLike, _IMAGE_16,
        "BEiT-like qkv bias cat(q_bias, zeros, v_bias) fed to F.linear; relative position bias table."),
    "window_relpos": ZooEntry(
        WindowNet, _IMAGE_16,
        "Window attention, heads on a computed dim, bias table gathered and viewed as (num_heads, N, N)."),
    "sknet_select": ZooEntry(
        SelectiveKernelNet, _IMAGE_16,
        "SK-Net-like selective kernel: stacked branches, softmax over the branch dim."),
    "attention_bottlenecks": ZooEntry(
        AttentionBottlenecks, _IMAGE_16,
        "BoTNet- and HaloNet-like bottlenecks: heads merged into the batch by sizes computed from it."),
    "channel_softmax": ZooEntry(
        ChannelNormalising, _IMAGE_16,
        "Softmax, F.normalize, sum and norm division, logsumexp across channels (frozen), convs around them."),
}

"""Cheaper candidate operators for a convolution (DARC, ../shared/papers/darc-*, §5 "Choice of Compression
Candidates").

Every candidate is built for one convolution (`candidates_for(conv)`) and is a plain module of nn.Conv2d
layers: it reads the convolution's input channels and writes its output channels at its stride, so it gives
the same output shape, exports to ONNX with standard nodes, and the channel analysis understands it (a
depthwise convolution ties its channels to its input's, so width pruning still applies after substitution).
- "3x3DS": a depthwise convolution with the original's kernel, stride, padding and dilation (one filter per
  input channel), then a pointwise 1x1 convolution to the output channels, which carries the original's bias;
- "1x1FC": one 1x1 convolution at the original's stride (padding 0: the same output size as the original's
  "same"-style padding);
- "3x3DS+1x1FC": 3x3DS followed by a 1x1 convolution from the output channels to themselves;
- "shift": a shift (Wu et al. 2017, "Shift: a zero flop, zero parameter alternative to spatial convolutions";
  the DARC paper's cheapest alternative, §3) then the pointwise 1x1 convolution at the original's stride: the
  input channels are split into k x k nearly equal contiguous blocks (the centre first, then by distance) and
  each block is moved by one kernel offset (times the dilation), zeros filling in. Zero MACs and zero
  parameters for the shift itself, so the candidate costs what 1x1FC costs while seeing the kernel's window.
  It is built of `split`, `pad`, slicing and `cat` (ONNX Split, Pad, Slice, Concat): the channel analysis
  follows every channel through it, so width pruning later shrinks the blocks (each kept channel keeps its
  offset) and the rewrite resizes the split. Its data movement is not in the per-layer latency table (no
  convolution or linear layer: like activations and adds), the measured latency is.
A convolution is eligible when it is a dense (groups = 1) 2-d convolution with an odd square kernel larger
than 1x1, zero padding of the "same" kind (padding = dilation x (kernel - 1) / 2) and enough channels that a
candidate is cheaper (`eligible` says why not otherwise).

`analytic_init` starts each candidate near the original in weight space: the depthwise-separable pair is, per
input channel, the best rank-1 factorisation of that channel's slice of the kernel (output channels x kernel
positions, by SVD: exact when the convolution is depthwise-separable); the 1x1 convolution sums the kernel
over its positions (exact on inputs that are constant over a kernel's window); the shift's 1x1 convolution
takes, for each input channel, the kernel's tap at that channel's offset (exact when the kernel has only that
tap per input channel). Student-teacher training
(cascomp.methods.mimic) refines them on data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NAMES = ("3x3DS", "1x1FC", "3x3DS+1x1FC", "shift")
DEFAULT = NAMES[:3]  # what darc offers unless asked for the shift (slower than 3x3DS in onnxruntime at batch 1)


class DepthwiseSeparable(nn.Module):
    """depthwise k x k (stride, padding, dilation of the original) -> pointwise 1x1 [-> 1x1 mix]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride, padding, dilation,
                 bias: bool, mix: bool = False) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, dilation,
                                   groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias and not mix)
        self.mix = nn.Conv2d(out_channels, out_channels, 1, bias=bias) if mix else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pointwise(self.depthwise(x))
        return self.mix(y) if self.mix is not None else y


class Shift(nn.Module):
    """Moves contiguous blocks of channels by the offsets of a k x k kernel (zero MACs, zero parameters):
    out[c, y, x] = in[c, y + dy_c, x + dx_c], 0 outside the image, where (dy_c, dx_c) is c's block's offset."""

    def __init__(self, channels: int, kernel_size: int, dilation: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        radius = kernel_size // 2
        taps = sorted(((dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)),
                      key=lambda tap: (max(map(abs, tap)), abs(tap[0]) + abs(tap[1]), tap))  # the centre first
        offsets = [(dy * dilation[0], dx * dilation[1]) for dy, dx in taps]
        count = len(offsets)
        sizes = [channels // count + (i < channels % count) for i in range(count)]
        self.sections = [size for size in sizes if size]  # fewer channels than offsets: the nearest ones
        self.offsets = offsets[:len(self.sections)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = torch.split(x, self.sections, dim=1)
        return torch.cat([_move(blocks[i], dy, dx) for i, (dy, dx) in enumerate(self.offsets)], dim=1)


def _move(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x[..., y + dy, x + dx] with zeros outside (no size read: any resolution, one Pad and one Slice)."""
    if dy == 0 and dx == 0:
        return x
    padded = F.pad(x, (max(-dx, 0), max(dx, 0), max(-dy, 0), max(dy, 0)))
    return padded[:, :, _window(dy), _window(dx)]


def _window(offset: int) -> slice:
    return slice(offset, None) if offset > 0 else slice(None, offset) if offset < 0 else slice(None)


class ShiftConv(nn.Module):
    """shift (the original's kernel offsets and dilation) -> pointwise 1x1 at the original's stride."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride, dilation, bias: bool) -> None:
        super().__init__()
        self.shift = Shift(in_channels, kernel_size, tuple(dilation))
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, stride, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.shift(x))


def eligible(conv: nn.Module) -> str | None:
    """Why `conv` may not be replaced by a candidate (None when it may)."""
    if type(conv) is not nn.Conv2d:
        return "not an nn.Conv2d"
    k, d, p = conv.kernel_size, conv.dilation, conv.padding
    if conv.groups != 1:
        return "a grouped or depthwise convolution already"
    if k[0] != k[1] or k[0] % 2 == 0 or k[0] == 1:
        return f"kernel {k[0]}x{k[1]}: candidates replace odd square kernels larger than 1x1"
    if isinstance(p, str) or conv.padding_mode != "zeros" or any(p[i] != d[i] * (k[i] - 1) // 2 for i in (0, 1)):
        return "padding is not zero padding of the 'same' kind"
    if conv.in_channels < 2:
        return "one input channel: a depthwise-separable convolution saves nothing"
    return None


def candidates_for(conv: nn.Conv2d, names: tuple[str, ...] = NAMES) -> dict[str, nn.Module]:
    """The candidates `names` of an eligible convolution, in that order, initialised by `analytic_init`."""
    problem = eligible(conv)
    if problem:
        raise ValueError(f"no candidates for this convolution: {problem}")
    unknown = [name for name in names if name not in NAMES]
    if unknown:
        raise ValueError(f"no candidate operator {unknown[0]!r} (there are {', '.join(NAMES)})")
    shape = (conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride, conv.padding, conv.dilation,
             conv.bias is not None)
    builders = {"3x3DS": lambda: DepthwiseSeparable(*shape),
                "1x1FC": lambda: nn.Conv2d(conv.in_channels, conv.out_channels, 1, conv.stride,
                                           bias=conv.bias is not None),
                "3x3DS+1x1FC": lambda: DepthwiseSeparable(*shape, mix=True),
                "shift": lambda: ShiftConv(conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride,
                                           conv.dilation, conv.bias is not None)}
    made = {name: builders[name]() for name in names}
    dtype, device = conv.weight.dtype, conv.weight.device
    for candidate in made.values():
        candidate.to(device=device, dtype=dtype)
        analytic_init(conv, candidate)
    return made


@torch.no_grad()
def analytic_init(conv: nn.Conv2d, candidate: nn.Module) -> None:
    """Set `candidate`'s weights from `conv`'s (see the module docstring)."""
    weight = conv.weight.detach()  # [out, in, k, k]
    bias = conv.bias.detach() if conv.bias is not None else None
    if isinstance(candidate, nn.Conv2d):  # 1x1FC
        candidate.weight.copy_(weight.sum(dim=(2, 3), keepdim=True))
        if bias is not None:
            candidate.bias.copy_(bias)
        return
    out_channels, in_channels, k, _ = weight.shape
    if isinstance(candidate, ShiftConv):  # each input channel's tap at its block's offset
        (dh, dw), radius = conv.dilation, k // 2
        taps = [(dy // dh + radius) * k + dx // dw + radius
                for size, (dy, dx) in zip(candidate.shift.sections, candidate.shift.offsets) for _ in range(size)]
        flat = weight.reshape(out_channels, in_channels, k * k)
        candidate.pointwise.weight.copy_(flat[:, torch.arange(in_channels), torch.tensor(taps)].unsqueeze(-1).unsqueeze(-1))
        if bias is not None:
            candidate.pointwise.bias.copy_(bias)
        return
    slices = weight.permute(1, 0, 2, 3).reshape(in_channels, out_channels, k * k).float()  # per input channel
    u, s, vh = torch.linalg.svd(slices, full_matrices=False)
    scale = s[:, :1].sqrt()
    candidate.depthwise.weight.copy_((vh[:, 0, :] * scale).reshape(in_channels, 1, k, k))
    pointwise = (u[:, :, 0] * scale).t().reshape(out_channels, in_channels, 1, 1)
    candidate.pointwise.weight.copy_(pointwise)
    last = candidate.pointwise
    if candidate.mix is not None:  # the mix starts as the identity
        candidate.mix.weight.copy_(torch.eye(out_channels, dtype=weight.dtype).reshape(out_channels, out_channels, 1, 1))
        last = candidate.mix
    if bias is not None:
        last.bias.copy_(bias)


def conv_cost(module: nn.Module, output_positions: int) -> tuple[float, float]:
    """(MACs, parameters) per sample of `module` (a convolution or a candidate) writing `output_positions`
    spatial positions (the original convolution's output height x width: every layer of a candidate runs at
    that resolution)."""
    macs = 0.0
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            kernel = layer.kernel_size[0] * layer.kernel_size[1]
            macs += layer.out_channels * (layer.in_channels // layer.groups) * kernel * output_positions
    return macs, float(sum(p.numel() for p in module.parameters()))

"""Cheaper candidate operators for a convolution (DARC, ../shared/papers/darc-*, §5 "Choice of Compression
Candidates").

Every candidate is built for one convolution (`candidates_for(conv)`) and is a plain module of nn.Conv2d
layers: it reads the convolution's input channels and writes its output channels at its stride, so it gives
the same output shape, exports to ONNX with standard Conv nodes, and the channel analysis understands it (a
depthwise convolution ties its channels to its input's, so width pruning still applies after substitution).
- "3x3DS": a depthwise convolution with the original's kernel, stride, padding and dilation (one filter per
  input channel), then a pointwise 1x1 convolution to the output channels, which carries the original's bias;
- "1x1FC": one 1x1 convolution at the original's stride (padding 0: the same output size as the original's
  "same"-style padding);
- "3x3DS+1x1FC": 3x3DS followed by a 1x1 convolution from the output channels to themselves.
A convolution is eligible when it is a dense (groups = 1) 2-d convolution with an odd square kernel larger
than 1x1, zero padding of the "same" kind (padding = dilation x (kernel - 1) / 2) and enough channels that a
candidate is cheaper (`eligible` says why not otherwise).

`analytic_init` starts each candidate near the original in weight space: the depthwise-separable pair is, per
input channel, the best rank-1 factorisation of that channel's slice of the kernel (output channels x kernel
positions, by SVD: exact when the convolution is depthwise-separable); the 1x1 convolution sums the kernel
over its positions (exact on inputs that are constant over a kernel's window). Student-teacher training
(cascomp.methods.mimic) refines them on data.
"""

from __future__ import annotations

import torch
from torch import nn

NAMES = ("3x3DS", "1x1FC", "3x3DS+1x1FC")


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


def candidates_for(conv: nn.Conv2d) -> dict[str, nn.Module]:
    """The three candidates of an eligible convolution, in NAMES order, initialised by `analytic_init`."""
    problem = eligible(conv)
    if problem:
        raise ValueError(f"no candidates for this convolution: {problem}")
    shape = (conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride, conv.padding, conv.dilation,
             conv.bias is not None)
    made = {"3x3DS": DepthwiseSeparable(*shape),
            "1x1FC": nn.Conv2d(conv.in_channels, conv.out_channels, 1, conv.stride, bias=conv.bias is not None),
            "3x3DS+1x1FC": DepthwiseSeparable(*shape, mix=True)}
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

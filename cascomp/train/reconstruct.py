"""Reconstruction: refit the pruned model's layers so each one reproduces the baseline's output again.

Pruning a layer's input channels changes what it computes; fine-tuning has to win that back, and a short
fine-tune does not all the way. He et al. (channel pruning, 2017) and ThiNet refit each layer by least
squares instead, before any training. Here, layer by layer in graph order:
1. the layer's input in the *pruned* model (with every earlier layer already refit) and its output in the
   baseline, at the kept output channels, on a few fixed training batches (at `positions` random spatial
   positions per image for convolutions);
2. its weights (and bias) solved by ridge regression from that input to that output (λ = 1e-4 of the mean
   diagonal of the Gram matrix, for an ill-conditioned input), in float64 on the models' device (on the CPU
   for MPS, which has no float64);
3. only plain layers: nn.Conv2d with groups = 1 and nn.Linear, whose weight's input dim is sliced by at most
   the plan's positions (a weight the analysis does not describe stays as it is).
The baseline's BatchNorm statistics fit the refit pre-normalisation outputs; the driver re-estimates them
after this anyway. Forward passes only: two per layer per batch.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cascomp.ir.graph import Graph
from cascomp.ir.plan import Plan
from cascomp.train.device import module_device, to_device
from cascomp.train.loops import first_batches

RECONSTRUCT_PHASE = 6  # the seed phase of the reconstruction batches
RIDGE = 1e-4


def kept_positions(graph: Graph, plan: Plan) -> dict[tuple[str, int], torch.Tensor]:
    """(parameter, dim) -> the positions the plan keeps along that dim (dims no group slices are absent)."""
    positions: dict[tuple[str, int], list[int]] = {}
    for group in graph.groups:
        kept = plan.keep.get(group.name, range(group.size))
        for member in group.members:
            chosen = positions.setdefault((member.param, member.dim), [])
            chosen += [p for channel in kept for p in member.indices[channel]]
    return {key: torch.tensor(sorted(set(value)), dtype=torch.long) for key, value in positions.items()}


def reconstruct(baseline: nn.Module, pruned: nn.Module, graph: Graph, plan: Plan, data, *, seed: int,
                batches: int = 8, positions: int = 64) -> list[str]:
    """Refit the plain layers of `pruned` (the rewrite of `baseline` by `plan`, on the same device) in place;
    returns their names."""
    calibration = to_device(first_batches(data, seed, RECONSTRUCT_PHASE, batches), module_device(pruned))
    kept = kept_positions(graph, plan)
    originals = dict(baseline.named_modules())
    refit = []
    was_training = pruned.training
    baseline.eval(), pruned.eval()
    layers = dict(pruned.named_modules())
    order = [n.target for n in pruned.graph.nodes if n.op == "call_module"] if hasattr(pruned, "graph") else list(layers)
    for name in dict.fromkeys(order):  # graph order: each layer refit on inputs from already refit ones
        layer, original = layers[name], originals.get(name)
        if not _plain(layer) or type(original) is not type(layer):
            continue
        outputs = kept.get((f"{name}.weight", 0))
        generator = torch.Generator().manual_seed(seed * 7919 + len(refit))
        inputs, targets = _samples(baseline, pruned, original, layer, calibration, outputs, positions, generator)
        _solve(layer, inputs, targets)
        refit.append(name)
    pruned.train(was_training)
    return refit


def _plain(layer: nn.Module) -> bool:
    return (isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.groups == 1
                                             and layer.padding_mode == "zeros"
                                             and not isinstance(layer.padding, str)))


def _samples(baseline, pruned, original, layer, calibration, outputs, positions, generator):
    """Case 1: (inputs as the layer's regression rows, baseline outputs at the kept output channels)."""
    rows, targets = [], []
    for x, _ in calibration:
        seen = {}
        hook = layer.register_forward_hook(lambda module, args, out: seen.__setitem__("input", args[0]))
        target_hook = original.register_forward_hook(lambda module, args, out: seen.__setitem__("output", out))
        try:
            with torch.no_grad():
                pruned(x)
                baseline(x)
        finally:
            hook.remove()
            target_hook.remove()
        inputs, output = seen["input"], seen["output"]
        if outputs is not None:
            output = output.index_select(1 if isinstance(layer, nn.Conv2d) else output.dim() - 1,
                                         outputs.to(output.device))
        if isinstance(layer, nn.Conv2d):
            columns = F.unfold(inputs, layer.kernel_size, dilation=layer.dilation, padding=layer.padding,
                               stride=layer.stride)  # (N, C*k*k, L), L output positions
            output = output.flatten(2)  # (N, C_out, L)
            chosen = torch.randperm(columns.shape[2], generator=generator)[:positions].to(columns.device)
            rows.append(columns[:, :, chosen].transpose(1, 2).reshape(-1, columns.shape[1]))
            targets.append(output[:, :, chosen].transpose(1, 2).reshape(-1, output.shape[1]))
        else:  # tokens of a sequence are positions too: (N, ..., C) -> (N, T, C), `positions` of the T
            inputs, output = inputs.reshape(len(x), -1, inputs.shape[-1]), output.reshape(len(x), -1, output.shape[-1])
            chosen = torch.randperm(inputs.shape[1], generator=generator)[:positions].to(inputs.device)
            rows.append(inputs[:, chosen].reshape(-1, inputs.shape[-1]))
            targets.append(output[:, chosen].reshape(-1, output.shape[-1]))
    rows, targets = torch.cat(rows), torch.cat(targets)
    solve_on = torch.device("cpu") if rows.device.type == "mps" else rows.device  # MPS has no float64
    return rows.to(solve_on, torch.float64), targets.to(solve_on, torch.float64)


def _solve(layer: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> None:
    """Case 2: ridge regression of the targets on the inputs (plus a constant column for a bias)."""
    if layer.bias is not None:
        inputs = torch.cat([inputs, torch.ones(len(inputs), 1, dtype=inputs.dtype, device=inputs.device)], dim=1)
    gram = inputs.T @ inputs
    gram += RIDGE * gram.diagonal().mean().clamp_min(1e-12) * torch.eye(len(gram), dtype=gram.dtype,
                                                                        device=gram.device)
    solution = torch.linalg.solve(gram, inputs.T @ targets)  # (features, outputs)
    weight = solution[:-1] if layer.bias is not None else solution
    with torch.no_grad():
        layer.weight.copy_(weight.T.reshape(layer.weight.shape).to(layer.weight.device, layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.copy_(solution[-1].to(layer.bias.device, layer.bias.dtype))

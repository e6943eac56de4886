"""Student-teacher initialisation of DARC's candidates (../shared/papers/darc-*, §3 step 2 and §5): every
candidate is trained to reproduce its original layer's output on the original network's activations.

All layers in one pass over at most `batches` training batches: the model runs with every operator choice
computing its original alone (`OperatorChoice.teaching`), forward hooks record each choice's input and the
original's output, and every candidate takes one optimiser step per batch on its squared error relative to
the original output's mean square (so layers of any scale learn at one rate). Adam at `lr` (the paper's
plain SGD at 0.1 diverges on un-normalised convolution outputs). Only the candidates' weights move; the
model is left in the mode it came in and its choices mix their options again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cascomp.kernels.operator_choice import OperatorChoice


@dataclass(frozen=True)
class MimicResult:
    first: dict[str, dict[str, float]]  # per choice path, per candidate: relative error on the first batch
    last: dict[str, dict[str, float]]  # ... and on the last batch (before its step)
    batches: int
    images: int


def mimic(model: nn.Module, choices: dict[str, OperatorChoice], batches_of_data, *, lr: float = 0.01) -> MimicResult:
    """Train every candidate of `choices` (path -> choice, all inside `model`) to mimic its original on the
    inputs the original network gives it, one step per batch of `batches_of_data` (an iterable of (x, y))."""
    device = next(model.parameters()).device
    parameters = [p for choice in choices.values() for option in list(choice.options)[1:] for p in option.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=lr)
    recorded: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [choice.register_forward_hook(_recorder(path, recorded)) for path, choice in choices.items()]
    was_training = model.training
    first: dict[str, dict[str, float]] = {}
    last: dict[str, dict[str, float]] = {}
    batches = images = 0
    try:
        model.eval()
        for choice in choices.values():
            choice.teaching = True
        for x, _ in batches_of_data:
            x = x.to(device)
            recorded.clear()
            with torch.no_grad():
                model(x)
            losses, errors = [], {}
            for path, choice in choices.items():
                inputs, target = recorded[path]
                scale = target.pow(2).mean().clamp_min(1e-12)
                errors[path] = {}
                for name, option in zip(choice.names[1:], list(choice.options)[1:]):
                    loss = (option(inputs) - target).pow(2).mean() / scale
                    errors[path][name] = float(loss.detach())
                    losses.append(loss)
            optimizer.zero_grad(set_to_none=True)
            torch.stack(losses).sum().backward()
            optimizer.step()
            first = first or errors
            last = errors
            batches += 1
            images += len(x)
    finally:
        for hook in hooks:
            hook.remove()
        for choice in choices.values():
            choice.teaching = False
        model.train(was_training)
    return MimicResult(first=first, last=last, batches=batches, images=images)


def _recorder(path: str, recorded: dict):
    def hook(module, inputs, output):
        recorded[path] = (inputs[0].detach(), output.detach())
    return hook

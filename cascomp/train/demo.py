"""Training and saving the demo network (`cascomp.zoo.demo`), for `cascomp demo-model` and `make demo`.

`cascomp demo-model -o demo.pt` saves it; `cascomp analyze demo.pt --input-shape 1,1,28,28` then shows
its channel groups.
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn

from cascomp.export.atomic import atomic_output, check_output_path
from cascomp.errors import ConfigError, DataError
from cascomp.train.loops import evaluate
from cascomp.zoo.demo import NUM_CLASSES, DemoNet, demo_model


def train_demo_model(model: nn.Module, data, epochs: int, *, lr: float = 0.05, log=print,
                     label: str = "demo model") -> float:
    """Train `model` on `data` (a cascomp DataBundle) with SGD and cosine decay; returns validation top-1."""

    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    total = max(epochs * len(data.train), 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    accuracy = evaluate(model, data.val)
    for epoch in range(epochs):
        model.train()
        for x, y in data.train:
            if len(y) and int(y.max()) >= data.num_classes:  # a python: factory's later batches go unchecked
                raise DataError(f"{data.name} yields label {int(y.max())}, but the data has {data.num_classes} "
                                f"classes (0..{data.num_classes - 1}); fix the labels or the data's classes")
            loss = nn.functional.cross_entropy(model(x), y)
            if not torch.isfinite(loss):  # saving a NaN model as "trained" would hide it
                bad_input = x.is_floating_point() and not bool(torch.isfinite(x).all())
                cause = "a batch holds a non-finite input (NaN or inf)" if bad_input else "training diverged"
                raise DataError(f"training the demo model on {data.name}: the loss became {float(loss)} in epoch "
                                f"{epoch + 1} ({cause}); check the data's values, or lower lr")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        accuracy = evaluate(model, data.val)
        log(f"{label}: epoch {epoch + 1}/{epochs}, validation top-1 {accuracy:.4f}")
    model.eval()
    return accuracy


def save_demo_model(path: str | os.PathLike, *, force: bool = False, data=None, epochs: int = 0,
                    log=print) -> DemoNet:
    """torch.save the demo network to `path`, whole or not at all; refuses an existing file without force.
    With `data` (a DataBundle) it is first trained for `epochs` epochs."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ConfigError(f"epochs must be a non-negative integer, got {epochs!r}")
    if data is not None and len(data.input_shape) != 3:
        raise ConfigError(f"the demo model is a CNN for images shaped (channels, height, width), but {data.name} "
                          f"has samples of shape {tuple(data.input_shape)}; train it on image data")
    check_output_path(path, force=force)
    model = demo_model(num_classes=data.num_classes if data is not None else NUM_CLASSES,
                       in_channels=data.input_shape[0] if data is not None else 1)
    if data is not None and epochs > 0:
        torch.manual_seed(0)
        train_demo_model(model, data, epochs, log=log)
    with atomic_output(path, force=force) as temporary:
        torch.save(model, temporary)
    return model

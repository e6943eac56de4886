"""A tiny learnable task and model for the search and compress tests (seconds on 2 cores)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import cascomp


class TinyNet(nn.Module):
    """Stem, one residual block with an inner width of its own, pool, linear: three channel groups."""

    def __init__(self, width: int = 16, inner: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.conv1 = nn.Conv2d(width, inner, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.head = nn.Sequential(nn.Conv2d(width, 2 * width, 1), nn.ReLU())
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return self.fc(self.head(x).mean(dim=(2, 3)))


def quadrant_task(path, samples: int = 384, seed: int = 0) -> str:
    """Write an .npz task: 1x8x8 noise images, the label is the brightest quadrant. Returns the data spec."""
    generator = np.random.default_rng(seed)
    x = generator.normal(size=(samples, 1, 8, 8)).astype(np.float32)
    quadrants = np.stack([x[:, 0, :4, :4].mean((1, 2)), x[:, 0, :4, 4:].mean((1, 2)),
                          x[:, 0, 4:, :4].mean((1, 2)), x[:, 0, 4:, 4:].mean((1, 2))], axis=1)
    np.savez(path, x=x, y=quadrants.argmax(1).astype(np.int64))
    return f"tensors:{path}"


def fit_classifier(model: nn.Module, data, epochs: int, lr: float) -> nn.Module:
    """`model` trained by plain SGD (momentum 0.9) on cross-entropy for `epochs`, returned in eval mode."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(epochs):
        for x, y in data.train:
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def trained_tiny(data, epochs: int = 2, seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return fit_classifier(TinyNet(), data, epochs, lr=0.05)


def saved_tiny_task(folder, samples: int):
    """The quadrant task in `folder` (batches of 64), a TinyNet trained one epoch on it and saved as tiny.pt:
    (spec, data, model, path of the saved model)."""
    spec = quadrant_task(folder / "quadrants.npz", samples=samples)
    data = cascomp.load_data(spec, batch_size=64, seed=0)
    model = trained_tiny(data, epochs=1)
    path = folder / "tiny.pt"
    torch.save(model, path)
    return spec, data, model, path


def quick_config(**changes) -> cascomp.CompressConfig:
    settings = dict(method="figs", targets=("flops=0.5",), search_epochs=2, finetune_epochs=1, lr=0.02,
                    latency_batch_sizes=(1,))
    settings.update(changes)
    return cascomp.CompressConfig(**settings)


class Interrupt(Exception):
    """Raised by `stopped_and_resumed`'s epoch callback to stop a run."""


def stopped_and_resumed(model, config, data, folder, stop_at: tuple[str, int]):
    """(a straight run, a run stopped after the epoch `stop_at` = (phase, epoch) and resumed), in `folder`."""
    import pytest

    straight = cascomp.compress(model, config, data=data, out_dir=folder / "straight", progress=False)

    def interrupt(phase, epoch):
        if (phase, epoch) == stop_at:
            raise Interrupt

    with pytest.raises(Interrupt):
        cascomp.compress(model, config, data=data, out_dir=folder / "broken", progress=False, on_epoch=interrupt)
    assert (folder / "broken" / "checkpoint.pt").exists()  # what the resumed run starts from
    resumed = cascomp.compress(model, config, data=data, out_dir=folder / "broken", resume=True, progress=False)
    return straight, resumed

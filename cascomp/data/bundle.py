"""DataBundle: the training and validation loaders plus what a model needs to know about their samples."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from cascomp.data.samples import Samples
from cascomp.errors import DataError


@dataclass(frozen=True, kw_only=True)
class DataBundle:
    """Loaders yield (x float32 [B, *input_shape], y int64 [B]). The train loader shuffles with its own
    seeded generator (train.generator), so two runs with the same seed see the same batches."""

    name: str
    train: DataLoader
    val: DataLoader
    num_classes: int
    input_shape: tuple[int, ...]
    train_size: int
    val_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        for field, loader in (("train", self.train), ("val", self.val)):
            if not isinstance(loader, DataLoader):
                raise DataError(f"DataBundle {self.name!r}: {field} is a {type(loader).__name__}, "
                                "not a torch.utils.data.DataLoader")
        if self.num_classes < 1:
            raise DataError(f"DataBundle {self.name!r}: num_classes must be >= 1, got {self.num_classes}")
        if self.train_size < 1 or self.val_size < 1:
            raise DataError(f"DataBundle {self.name!r}: needs at least one training and one validation "
                            f"sample, got {self.train_size} and {self.val_size}")
        if len(self.mean) != len(self.std):
            raise DataError(f"DataBundle {self.name!r}: mean has {len(self.mean)} channels but std has "
                            f"{len(self.std)}; give one value per channel in each")


def tensor_bundle(name: str, train: Samples, val: Samples, *, num_classes: int, batch_size: int, seed: int,
                  mean: tuple[float, ...], std: tuple[float, ...], workers: int = 0,
                  pin_memory: bool = False) -> DataBundle:
    """Wrap prepared float samples in in-memory loaders. The training order comes from the loader's seeded
    generator alone, which also seeds the workers (`seed_worker`), so any number of workers gives the same
    batches. `pin_memory`: batches in page-locked memory, for non-blocking copies to a CUDA device."""
    generator = torch.Generator().manual_seed(seed)
    options = dict(batch_size=batch_size, num_workers=workers, pin_memory=pin_memory, drop_last=False,
                   worker_init_fn=seed_worker if workers else None)
    return DataBundle(
        name=name,
        train=DataLoader(TensorDataset(train.x, train.y), shuffle=True, generator=generator, **options),
        val=DataLoader(TensorDataset(val.x, val.y), shuffle=False, **options),
        num_classes=num_classes,
        input_shape=tuple(train.x.shape[1:]),
        train_size=len(train),
        val_size=len(val),
        mean=mean,
        std=std,
    )


def seed_worker(worker_id: int) -> None:
    """A worker's Python and NumPy generators from its torch seed (the loader's generator draws the base
    seed of every epoch's workers, and torch adds the worker's id), for transforms that draw from them."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def default_workers(device: torch.device) -> int:
    """Loader worker processes when none are asked for: none when training on the CPU, where the data is
    already in memory as tensors (a batch is an index and a copy, far cheaper than its training step) and
    every worker would take a core from the training's threads; up to 4 beside an accelerator, whose steps
    are quick enough for batching in the main process to show."""
    if device.type == "cpu":
        return 0
    return min(4, max(1, (os.cpu_count() or 2) // 2))

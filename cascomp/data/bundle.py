"""DataBundle: the training and validation loaders plus what a model needs to know about their samples."""

from __future__ import annotations

from dataclasses import dataclass

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
                  mean: tuple[float, ...], std: tuple[float, ...]) -> DataBundle:
    """Wrap prepared float samples in in-memory loaders (no worker processes: the data is already in RAM)."""
    generator = torch.Generator().manual_seed(seed)
    return DataBundle(
        name=name,
        train=DataLoader(TensorDataset(train.x, train.y), batch_size=batch_size, shuffle=True,
                         generator=generator, num_workers=0, drop_last=False),
        val=DataLoader(TensorDataset(val.x, val.y), batch_size=batch_size, shuffle=False,
                       num_workers=0, drop_last=False),
        num_classes=num_classes,
        input_shape=tuple(train.x.shape[1:]),
        train_size=len(train),
        val_size=len(val),
        mean=mean,
        std=std,
    )

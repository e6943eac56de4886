"""What every format reader returns: labelled samples in memory, before splitting and normalising."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from cascomp.errors import DataError


@dataclass(frozen=True)
class Samples:
    """x: one row per sample, uint8 (0..255) or float32; y: int64 class labels of the same length."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class RawData:
    """A format reader's result. val is None when the source has no official split (split it randomly).
    num_classes comes from the whole source, so a subset that misses the rarest class keeps it."""

    train: Samples
    val: Samples | None
    num_classes: int


def as_samples(x, y, where: str) -> Samples:
    """Check and convert arrays or tensors read from `where` (a path, for the messages) into Samples."""
    x, y = _tensor(x, "x", where), _tensor(y, "y", where)
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise DataError(f"{where}: x has dtype {x.dtype}; store images as uint8 (0..255) or float values")
    if x.ndim < 2:
        raise DataError(f"{where}: x has shape {tuple(x.shape)}; it needs one row per sample, "
                        "e.g. (N, C, H, W)")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise DataError(f"{where}: y has dtype {y.dtype}; store class labels as integers 0..K-1")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{where}: y has shape {tuple(y.shape)} but x holds {len(x)} samples; "
                        "y needs one integer class label per sample")
    if len(y) == 0:
        raise DataError(f"{where}: holds no samples")
    if int(y.min()) < 0:
        raise DataError(f"{where}: y holds the negative label {int(y.min())}; class labels must be 0..K-1")
    x = x if x.dtype == torch.uint8 else x.to(torch.float32)
    check_finite(x, where)
    return Samples(x=x.contiguous(), y=y.to(torch.int64))


def check_finite(x: Tensor, where: str) -> None:
    """A NaN or inf sample turns every loss it touches into NaN, which would look like a learning rate
    problem epochs later; name the first bad sample instead (`where`: the file or split, rows are samples).
    Values beyond float32's range count too: training casts them to inf."""
    if not x.is_floating_point():
        return
    bad = ~torch.isfinite(x.to(torch.float32)).flatten(1).all(dim=1)  # x has one row per sample (ndim >= 2)
    if bool(bad.any()):
        rows = bad.nonzero().reshape(-1)
        raise DataError(f"{where}: {len(rows)} sample(s) hold a non-finite value (NaN or inf, or beyond "
                        f"float32's range), the first at index {int(rows[0])}; fix or drop those samples and their "
                        "labels: a single one makes every training loss NaN")


def check_labels(samples: Samples, num_classes: int, where: str) -> None:
    """Labels outside 0..num_classes-1 would crash the loss much later, far from the cause."""
    largest = int(samples.y.max())
    if largest >= num_classes:
        raise DataError(f"{where}: label {largest} found but the dataset has {num_classes} classes "
                        f"(0..{num_classes - 1}); check that the files belong to this dataset")


def _tensor(value, name: str, where: str) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    try:
        array = np.ascontiguousarray(np.asarray(value))
        # torch shares numpy's memory; a read-only buffer (np.frombuffer over file bytes) must be copied first
        return torch.from_numpy(array if array.flags.writeable else array.copy())
    except (TypeError, ValueError) as error:
        raise DataError(f"{where}: {name} is a {type(value).__name__} that is not an array ({error}); "
                        "store it as a tensor or numpy array") from error

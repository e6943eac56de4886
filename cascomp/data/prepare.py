"""From raw samples to training tensors: random split, seeded subsets, scaling, resizing, normalisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cascomp.data.samples import Samples
from cascomp.errors import DataError

# Subsets draw from their own generators, so limiting the training set never changes the validation subset.
_TRAIN_SUBSET_STREAM, _VAL_SUBSET_STREAM = 1, 2


def check_arguments(batch_size: int, val_fraction: float, limit_train: int | None, limit_val: int | None,
                    image_size: int | None) -> None:
    """Reject bad load_data arguments, naming each as the API spells it and, where there is one, the flag."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size (--batch-size) must be an integer >= 1, got {batch_size!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) \
            or not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}; e.g. "
                        "val_fraction=0.1")
    counts = (("limit_train (--limit-train)", limit_train), ("limit_val (--limit-val)", limit_val),
              ("image_size", image_size))
    for name, value in counts:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise DataError(f"{name} must be an integer >= 1 (or left out), got {value!r}")


def random_split(samples: Samples, val_fraction: float, seed: int, where: str) -> tuple[Samples, Samples]:
    """Hold out round(N * val_fraction) samples (at least one each side), the same ones for the same seed."""
    count = len(samples)
    if count < 2:
        raise DataError(f"{where}: holds {count} sample; a train/validation split needs at least 2")
    val_count = min(max(1, round(count * val_fraction)), count - 1)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    val_index, train_index = order[:val_count].sort().values, order[val_count:].sort().values
    return _select(samples, train_index), _select(samples, val_index)


def limit(samples: Samples, count: int | None, seed: int, *, train: bool) -> Samples:
    """A seeded random subset of `count` samples (kept in their original order); all of them if fewer."""
    if count is None or count >= len(samples):
        return samples
    stream = _TRAIN_SUBSET_STREAM if train else _VAL_SUBSET_STREAM
    generator = torch.Generator().manual_seed(seed * 1000 + stream)
    index = torch.randperm(len(samples), generator=generator)[:count].sort().values
    return _select(samples, index)


def to_float(x: Tensor) -> Tensor:
    """uint8 pixels become float32 in [0, 1]; float data is kept as it is."""
    return x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x.to(torch.float32)


def resize(x: Tensor, image_size: int | None, where: str) -> Tensor:
    """Resize float images (N, C, H, W) to image_size x image_size; a no-op when they already are."""
    if image_size is None or tuple(x.shape[2:]) == (image_size, image_size):
        return x
    if x.ndim != 4:
        raise DataError(f"{where}: image_size needs images shaped (N, C, H, W), got {tuple(x.shape)}; "
                        "leave image_size out for this data")
    return F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True,
                         align_corners=False)


def channel_stats(x: Tensor, where: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std over a float batch; samples with one axis count as one channel.
    A constant channel gets std 1 so normalising never divides by zero."""
    dims = tuple(d for d in range(x.ndim) if d != 1) if x.ndim >= 3 else tuple(range(x.ndim))
    std, mean = torch.std_mean(x, dim=dims, correction=0)
    if not bool(torch.isfinite(std).all() and torch.isfinite(mean).all()):  # float32 overflow in the sums
        raise DataError(f"{where}: the training samples' values are too large to normalise (per-channel mean "
                        f"{mean.reshape(-1).tolist()[:4]}, std {std.reshape(-1).tolist()[:4]}); scale the data "
                        "to a moderate range (e.g. [0, 1]) first")
    std = torch.where(std < 1e-8, torch.ones_like(std), std)
    return tuple(float(v) for v in mean.reshape(-1)), tuple(float(v) for v in std.reshape(-1))


def normalise(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """(x - mean) / std per channel, in place on the float tensor it is given."""
    shape = (1, len(mean)) + (1,) * (x.ndim - 2) if x.ndim >= 3 else (1,)
    return x.sub_(torch.tensor(mean, dtype=x.dtype).reshape(shape)).div_(
        torch.tensor(std, dtype=x.dtype).reshape(shape))


def _select(samples: Samples, index: Tensor) -> Samples:
    return Samples(x=samples.x[index], y=samples.y[index])

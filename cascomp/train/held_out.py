"""A held-out part of the training split, for a searching method that checks its search on data the search
does not train on (`Method.held_out`): the seeded split, and the inquiry that measures the network there.

The inquiry scores the network as it would be evaluated (normalisations in eval mode): top-1 and mean
cross-entropy over the held-out samples, with one backward pass per batch so that the model's measuring hooks
(e.g. kernels/channel_mask.py's importance) see held-out gradients. No weight moves, and every gradient it
leaves is cleared. With several processes each runs the whole held-out split on its own replica (the same
weights and data give every process the same answer, so their decisions agree).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from cascomp.train.device import Placement

SHARE_CAP = 0.2  # at most this share of the training split is held out, however many samples are asked for


@dataclass(frozen=True)
class Inquiry:
    top1: float
    loss: float
    images: int
    seconds: float


def held_out_count(asked: int, train_size: int) -> int:
    """How many samples are held out when `asked` are: at most a fifth of the split, at least one."""
    return max(1, min(int(asked), int(train_size * SHARE_CAP)))


def split_held_out(loader: DataLoader, count: int, seed: int) -> tuple[DataLoader, DataLoader]:
    """(the rest of `loader`'s dataset, shuffled by its own generator; `count` samples held out, in a fixed
    order), split by a permutation drawn from `seed`; both keep the loader's batch size and settings."""
    dataset = loader.dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    rest, held = order[count:], sorted(order[:count])
    return subset_loader(loader, rest, shuffle=True), subset_loader(loader, held, shuffle=False)


def subset_loader(loader: DataLoader, indices: list[int], *, shuffle: bool) -> DataLoader:
    """A loader over `indices` of `loader`'s dataset with its batch size and settings (a shuffled one draws
    its order from its own generator, which the caller seeds every epoch)."""
    return DataLoader(Subset(loader.dataset, indices), batch_size=loader.batch_size, shuffle=shuffle,
                      generator=torch.Generator() if shuffle else None, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                      worker_init_fn=loader.worker_init_fn)


def inquire(model: nn.Module, loader: DataLoader, placement: Placement) -> Inquiry:
    """Top-1 and loss of `model` (eval mode, full precision) on `loader`, with the loss's gradient taken
    batch by batch for the model's hooks; the model's mode is restored and its gradients cleared."""
    started, was_training = time.perf_counter(), model.training
    model.eval()
    correct = seen = 0
    loss_sum = 0.0
    try:
        with torch.enable_grad():
            for x, y in loader:
                x, y = placement.batch(x, y)
                logits = model(x)
                loss = F.cross_entropy(logits, y, reduction="sum")
                loss.backward()
                correct += int((logits.detach().argmax(1) == y).sum())
                loss_sum += float(loss.detach())
                seen += len(y)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return Inquiry(top1=correct / max(seen, 1), loss=loss_sum / max(seen, 1), images=seen,
                   seconds=time.perf_counter() - started)

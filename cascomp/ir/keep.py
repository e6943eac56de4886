"""How many positions of a labelled tensor survive a plan: what the rewrite passes size things by."""

from __future__ import annotations

import torch


def kept(labels: torch.Tensor, label_keep: torch.Tensor) -> torch.Tensor:
    """Bool tensor shaped like `labels`: does the channel at each position survive."""
    return label_keep[labels]


def kept_along(labels: torch.Tensor, dim: int, label_keep: torch.Tensor) -> torch.Tensor:
    """1-D bool along `dim`: is the slice at each index still there (it is unless all its channels go)."""
    mask = kept(labels, label_keep)
    others = [d for d in range(mask.dim()) if d != dim % mask.dim()]
    return mask.any(dim=others) if others else mask


def new_size(labels: torch.Tensor, dim: int, old_size: int, label_keep: torch.Tensor) -> int:
    """Size of `dim` after pruning (unchanged where the labels do not vary along it)."""
    if labels.shape[dim] == 1:
        return old_size
    return int(kept_along(labels, dim, label_keep).sum())


def kept_before(labels: torch.Tensor, dim: int, index: int, label_keep: torch.Tensor) -> int:
    """Surviving positions along `dim` before `index`: where an index or slice bound moves to."""
    return int(kept_along(labels, dim, label_keep)[:index].sum())

"""How many positions of a labelled tensor survive a plan: what the rewrite passes size things by."""

from __future__ import annotations

import torch

from cascomp.ir.labels import ParamAxis, along, varying_dims
from cascomp.ir.rules_params import axes_of


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
    # kept_along in numpy: the rewrite asks this of every layer, and on these small arrays a numpy op costs
    # a tenth of a torch one
    mask = label_keep.numpy()[labels.numpy()]
    others = tuple(d for d in range(mask.ndim) if d != dim % mask.ndim)
    return int((mask.any(axis=others) if others else mask).sum())


def kept_before(labels: torch.Tensor, dim: int, index: int, label_keep: torch.Tensor) -> int:
    """Surviving positions along `dim` before `index`: where an index or slice bound moves to."""
    return int(kept_along(labels, dim, label_keep)[:index].sum())


def kept_parameter_positions(param_axes: dict, label_keep: torch.Tensor, axis: ParamAxis) -> torch.Tensor:
    """Bool tensor shaped like `axis.index`: does the parameter position read there survive."""
    vectors = param_axes.get(axis.name)
    vector = vectors[axis.dim] if vectors is not None else None
    if vector is None:
        return torch.ones(axis.index.shape, dtype=torch.bool)
    return label_keep[vector][axis.index]


def parameter_view_sizes(param_axes: dict, label_keep: torch.Tensor, labels, shape: tuple[int, ...]) -> list:
    """New size of each dim of a tensor computed from parameters (a `ParamRef` or `Derived` of `shape`)
    that shows pruned parameter positions, None for the others: what a reshape of it must now ask for."""
    derived = axes_of(labels, tuple(shape))
    alive = torch.ones((1,) * len(shape), dtype=torch.bool)
    for axis in derived.axes if derived is not None else ():
        alive = alive & kept_parameter_positions(param_axes, label_keep, axis)
    sizes: list[int | None] = []
    for dim in range(len(shape)):
        others = [d for d in range(len(shape)) if d != dim]
        along_dim = alive.any(dim=others) if others else alive
        sizes.append(int(along_dim.sum()) if alive.shape[dim] > 1 and not bool(along_dim.all()) else None)
    return sizes


def statistic_masks(param_axes: dict, label_keep: torch.Tensor, fact) -> dict[int, torch.Tensor]:
    """Per dim of a parameter statistic's input (`ParamStatistic`) that holds parameter positions, a bool
    per index: does it survive."""
    masks: dict[int, torch.Tensor] = {}
    for axis in fact.axes:
        (dim,) = varying_dims(axis.index)
        mask = along(kept_parameter_positions(param_axes, label_keep, axis), dim, axis.index.shape[dim])
        masks[dim] = masks[dim] & mask if dim in masks else mask
    return dict(sorted(masks.items()))

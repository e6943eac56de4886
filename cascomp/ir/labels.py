"""Channel labels: the representation the dependency analysis propagates through the graph.

Every tensor value in the traced graph carries an integer *label tensor* that broadcasts against it: a dim
where the label tensor has size 1 carries no channel structure, a dim where it has the value's size names,
for every position, the channel variable that lives there. Two positions whose labels end up in one
connected component (a *class*) must be kept or removed together. Label 0 is the frozen class: anything
joined to it can never be removed.

Data-movement ops (view, permute, cat, split, pixel shuffle, ...) are handled by applying the very same op
to the label tensor, so channel bookkeeping through reshapes is exact by construction rather than by a
hand-written rule per op.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

FROZEN = 0


@dataclass(frozen=True)
class ParamRef:
    """A parameter or buffer read by `get_attr`, seen through broadcast-only views.

    `dims[i]` is the parameter dim that tensor dim `i` shows, or None for a dim that a view inserted.
    A ParamRef adopts the labels of the activations it meets; the analysis records which of them each
    parameter dim must follow.
    """

    name: str
    dims: tuple[int | None, ...]


@dataclass(frozen=True, eq=False)
class ParamAxis:
    """Parameter `name`'s dim `dim` as a tensor computed from it shows it: `index` (an int tensor that
    broadcasts against the value, like a label tensor) holds, per element, the position read along `dim`."""

    name: str
    dim: int
    index: torch.Tensor


@dataclass(frozen=True, eq=False)
class Derived:
    """A tensor computed from parameters alone that no ParamRef describes (a reshape merging a parameter's
    dims, two parameters combined, a standardised weight): the parameter dims it reads (only dims of size
    > 1) and its shape. Its dims follow channels only where it meets them (cascomp.ir.rules_params)."""

    axes: tuple[ParamAxis, ...]
    shape: tuple[int, ...]


@dataclass(frozen=True)
class FreezeEvent:
    labels: torch.Tensor
    node: str
    reason: str


class LabelSpace:
    """Allocates channel labels and records which of them must stay together."""

    def __init__(self) -> None:
        self.count = 1  # label 0 is the frozen class
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []  # ties added since `_roots` was computed
        self.freezes: list[FreezeEvent] = []
        self._roots = np.zeros(1, dtype=np.int64)

    def fresh(self, n: int) -> torch.Tensor:
        labels = torch.arange(self.count, self.count + n, dtype=torch.int64)
        self.count += n
        return labels

    def unify(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Tie labels elementwise after broadcasting `a` against `b`."""
        if a.shape != b.shape:  # broadcast_tensors costs tens of microseconds even when there is nothing to do
            a, b = torch.broadcast_tensors(a, b)
        left, right = a.reshape(-1).numpy(), b.reshape(-1).numpy()
        differ = left != right
        if differ.any():
            # one int64 key per pair (labels are below `count`): a 1-D unique, several times cheaper than
            # torch.unique(dim=0), in the same (left, right) order
            keys = np.unique(left[differ] * self.count + right[differ])
            self._pending.append((keys // self.count, keys % self.count))

    def tie_all(self, labels: torch.Tensor) -> None:
        """Tie every label in `labels` into one class."""
        flat = torch.unique(labels.reshape(-1))
        if len(flat) > 1:
            self.unify(flat[:1].expand(len(flat) - 1), flat[1:])

    def freeze(self, labels: torch.Tensor, node: str, reason: str) -> None:
        flat = torch.unique(labels.reshape(-1))
        if len(flat) == 1 and int(flat[0]) == FROZEN:
            return
        self.freezes.append(FreezeEvent(flat, node, reason))
        self.unify(flat, torch.zeros_like(flat))

    def roots(self) -> np.ndarray:
        """Component id of every label; component of 0 is frozen.

        Components are numbered in order of their smallest label, the numbering one connected-components
        run over all ties gives. A call only merges the ties added since the last one, over the components
        known then (labels made since are singletons after them), so calling it between batches of ties
        (as `settle` does) costs the new ties plus one relabelling pass, not a run over every tie again.
        """
        known = len(self._roots)
        if known == self.count and not self._pending:
            return self._roots
        components = self._roots
        if known < self.count:
            start = int(components.max()) + 1
            components = np.concatenate([components, np.arange(start, start + self.count - known)])
        if self._pending:
            rows = components[np.concatenate([a for a, _ in self._pending])]
            cols = components[np.concatenate([b for _, b in self._pending])]
            size = int(components.max()) + 1
            graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(size, size))
            merged = connected_components(graph, directed=False)[1]  # numbered by smallest member, as wanted
            components = merged[components].astype(np.int64)
        self._roots, self._pending = components, []
        return self._roots

    def frozen_component(self) -> int:
        return int(self.roots()[FROZEN])


def frozen_like(value: torch.Tensor) -> torch.Tensor:
    """Labels for a tensor with no prunable channel: the frozen label, broadcast over every dim."""
    return torch.zeros((1,) * value.dim(), dtype=torch.int64)


def compress(labels: torch.Tensor) -> torch.Tensor:
    """Shrink every dim along which all labels are equal to size 1 (the canonical form)."""
    for dim in range(labels.dim()):  # broadcast dims (stride 0) first: constant without comparing anything
        if labels.shape[dim] > 1 and labels.stride(dim) == 0:
            labels = labels.narrow(dim, 0, 1)
    for dim in range(labels.dim()):
        if labels.shape[dim] > 1:
            first = labels.narrow(dim, 0, 1)
            if bool((labels == first).all()):
                labels = first
    return labels.contiguous()


def expand_to(labels: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Materialise labels at the value's full shape so a data-movement op can be applied to them."""
    return labels.expand(tuple(shape))


def varying_dims(labels: torch.Tensor) -> list[int]:
    return [d for d, size in enumerate(labels.shape) if size > 1]


def along(labels: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """The 1-D label vector along `dim` (length `size`), assuming labels vary along no other dim."""
    if labels.dim() and all(s == 1 for d, s in enumerate(labels.shape) if d != dim % labels.dim()):
        vector = labels.reshape(-1)  # the usual (1, C, 1, 1): no index op needed
    else:
        index = [0] * labels.dim()
        index[dim] = slice(None)
        vector = labels[tuple(index)].reshape(-1)
    return vector.expand(size) if vector.numel() == 1 else vector


def place(vector: torch.Tensor, ndim: int, dim: int) -> torch.Tensor:
    """A label tensor of rank `ndim` that varies along `dim` only, holding `vector` there."""
    shape = [1] * ndim
    shape[dim] = vector.numel()
    return vector.reshape(shape)

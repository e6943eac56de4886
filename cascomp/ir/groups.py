"""Typed results of the dependency analysis: channel groups and frozen channels.

A *class* is a set of parameter slices that must be removed together (one conv output channel with the
next conv's input column, the BatchNorm statistics between them, a residual partner, ...). Classes that
touch the same parameter dims form a *group*: a group of size C is what a user calls "the 64 channels of
layer1"; a plan keeps a subset of its C channels.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from cascomp.errors import ConfigError
from cascomp.ir.channel_positions import ChannelPositions
from cascomp.ir.context import OUTPUT, Context


@dataclass(frozen=True)
class GroupMember:
    """Parameter `param`, sliced along `dim`: `indices[c]` are the positions channel c owns there (a
    `ChannelPositions` from the analysis, which reads as a tuple of tuples)."""

    param: str
    dim: int
    indices: tuple[tuple[int, ...], ...] | ChannelPositions


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that are pruned as one: `size` channels, each owning slices of every member."""

    id: int
    name: str
    size: int
    members: tuple[GroupMember, ...]

    @property
    def modules(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.param.rpartition(".")[0] for m in self.members))

    @property
    def unit(self) -> int:
        """Positions one channel owns in its first member (1 for conv channels, head_dim for heads)."""
        return len(self.members[0].indices[0])

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "size": self.size, "unit": self.unit,
                "members": [{"param": m.param, "dim": m.dim} for m in self.members]}


@dataclass(frozen=True)
class FrozenChannels:
    """Channels the analysis keeps, and why (the op, the node, how many positions)."""

    node: str
    reason: str
    channels: int


@dataclass(frozen=True)
class Grouping:
    groups: tuple[ChannelGroup, ...]
    frozen: tuple[FrozenChannels, ...]
    slot_of_label: np.ndarray  # label -> 0 (kept: frozen) or 1 + global channel index
    offsets: tuple[int, ...]  # first global channel index of each group
    # The model output's channels, which every model keeps; apart from `frozen`, which lists what keeps
    # channels a plan could otherwise remove.
    output: tuple[FrozenChannels, ...] = ()


def build_groups(ctx: Context, ignore: tuple[str, ...] = ()) -> Grouping:
    """Turn the analysis' classes into groups, with numpy over all linked positions at once.

    Cases:
    1. every parameter dim the analysis linked names, per position, the class (connected component) that
       owns it; positions of the frozen class belong to no group;
    2. a class's signature is the (parameter, dim) keys it owns positions in, in link order; classes with
       the same signature form a group, the groups ordered by where their first class first appears
       (parameter by parameter, dim by dim, position by position);
    3. inside a group, channel c is the class with the c-th lowest first position in the first member, and
       `members[j].indices[c]` lists its positions in member j in ascending order;
    4. a group with a member under an `ignore` pattern keeps all its channels (reported as frozen).
    """
    roots = ctx.space.roots()
    table = _ClassTable.of(ctx.record.param_axes, roots, int(roots[0]))  # case 1
    groups, slot_roots, ignored = [], [], []
    for keys, classes in table.groups():  # case 2
        if _ignored(keys, ignore):  # case 4
            ignored.append(len(classes))
            continue
        first = table.first_cell[classes]
        members = tuple(GroupMember(name, dim, table.indices(first, j)) for j, (name, dim) in enumerate(keys))
        groups.append(ChannelGroup(len(groups), "", len(classes), members))
        slot_roots.append(table.root_of_class[classes])
    groups = _name(groups)
    slot_of_root = np.zeros(roots.max() + 1 if len(roots) else 1, dtype=np.int64)
    slot_roots = np.concatenate(slot_roots) if slot_roots else np.zeros(0, dtype=np.int64)
    slot_of_root[slot_roots] = np.arange(1, len(slot_roots) + 1)
    offsets = tuple(np.cumsum([0] + [g.size for g in groups])[:-1].tolist())
    events = _frozen(ctx, roots, int(roots[0]))
    frozen = tuple(f for f in events if f.reason != OUTPUT) + tuple(
        FrozenChannels("", f"ignored by pattern ({', '.join(ignore)})", count) for count in ignored)
    return Grouping(tuple(groups), frozen, slot_of_root[roots], offsets, tuple(f for f in events if f.reason == OUTPUT))


class _ClassTable:
    """Every non-frozen linked position as a row (class, key, position), sorted by class, key, position.

    Classes are numbered by first appearance and keys by link order, so sorting reproduces the order in
    which a walk over the parameters would meet them; runs of equal (class, key) are the cells.
    """

    def __init__(self, keys, classes, key_ids, positions, root_of_class) -> None:
        self.keys, self.positions, self.root_of_class = keys, positions, root_of_class
        cell = _run_starts(classes, key_ids)
        self.cell_start, self.cell_key = cell, key_ids[cell]
        self.cell_length = np.diff(np.r_[cell, len(positions)])
        self.first_cell = _run_starts(classes[cell])
        self.cell_count = np.diff(np.r_[self.first_cell, len(cell)])

    @classmethod
    def of(cls, param_axes: dict, roots: np.ndarray, frozen_root: int) -> "_ClassTable":
        """Case 1 of `build_groups`: the rows of every linked parameter dim, frozen positions left out."""
        keys, owners = [], []
        for name, axes in param_axes.items():
            for dim, vector in enumerate(axes):
                if vector is not None:
                    keys.append((name, dim))
                    owners.append(roots[vector.numpy()])
        lengths = np.array([len(o) for o in owners], dtype=np.int64)
        owner = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)
        key_ids = np.repeat(np.arange(len(keys)), lengths)
        positions = np.arange(len(owner)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        live = owner != frozen_root
        owner, key_ids, positions = owner[live], key_ids[live], positions[live]
        unique_roots, first, inverse = np.unique(owner, return_index=True, return_inverse=True)
        appearance = np.argsort(first, kind="stable")
        rank = np.empty_like(appearance)
        rank[appearance] = np.arange(len(appearance))
        classes = rank[inverse.reshape(-1)]
        order = np.argsort(classes, kind="stable")  # rows already run key by key, position by position
        return cls(keys, classes[order], key_ids[order], positions[order], unique_roots[appearance])

    def groups(self):
        """(keys, classes) per group in order (case 2), classes in channel order (case 3)."""
        if not len(self.first_cell):
            return
        _, first_class, signature_of_class = np.unique(self._signature_ids(), return_index=True,
                                                       return_inverse=True)
        group_rank = np.empty(len(first_class), dtype=np.int64)
        group_rank[np.argsort(first_class, kind="stable")] = np.arange(len(first_class))
        group_of_class = group_rank[signature_of_class]
        first_position = self.positions[self.cell_start[self.first_cell]]
        order = np.lexsort((first_position, group_of_class))
        bounds = np.searchsorted(group_of_class[order], np.arange(len(first_class) + 1))
        for start, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            classes = order[start:stop]
            first, count = self.first_cell[classes[0]], self.cell_count[classes[0]]
            yield [self.keys[k] for k in self.cell_key[first:first + count].tolist()], classes

    def _signature_ids(self) -> np.ndarray:
        """Per class, an id shared exactly by the classes with the same key sequence: split the classes by
        key count, then by the key in slot 0, slot 1, ..., each step over the classes that reach that slot
        (work in proportion to the cells, not to classes times the longest sequence)."""
        ids = self.cell_count.copy()
        unused = int(ids.max()) + 1
        for slot in range(int(self.cell_count.max())):
            longer = np.flatnonzero(self.cell_count > slot)
            part = np.unique(ids[longer], return_inverse=True)[1].reshape(-1)
            refined = np.unique(part * len(self.keys) + self.cell_key[self.first_cell[longer] + slot],
                                return_inverse=True)[1].reshape(-1)
            ids[longer] = unused + refined
            unused += int(refined.max()) + 1
        return ids

    def indices(self, first_cells: np.ndarray, member: int) -> ChannelPositions:
        """Positions each class (given by its first cell) owns in the group's `member`-th key (case 3): a
        cell's rows are contiguous and sorted by position, so each class's positions are one cell."""
        return ChannelPositions(self.positions, self.cell_start, self.cell_length, first_cells + member)


def _run_starts(*columns: np.ndarray) -> np.ndarray:
    """Indices where a run of equal rows (equal in every column) starts."""
    if not len(columns[0]):
        return np.zeros(0, dtype=np.int64)
    changed = np.zeros(len(columns[0]) - 1, dtype=bool)
    for column in columns:
        changed |= column[1:] != column[:-1]
    return np.flatnonzero(np.r_[True, changed])


def check_patterns(patterns: tuple[str, ...], gm: torch.nn.Module) -> None:
    """An ignore pattern that matches no module is most likely a typo; left alone, the channels the user
    meant to keep would be pruned."""
    names = {name for name, _ in gm.named_modules() if name}
    names.update(name.rpartition(".")[0] for name, _ in gm.named_parameters() if "." in name)
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            close = difflib.get_close_matches(pattern, sorted(names), n=3, cutoff=0.5)
            hint = f"close names: {', '.join(close)}" if close else f"modules: {', '.join(sorted(names)[:5])}, ..."
            raise ConfigError(f"ignore pattern {pattern!r} matches no module of the model ({hint}); patterns "
                              "match module paths such as 'layer1.0.conv1', with * and ? as wildcards "
                              "(e.g. 'head.*')")


def _ignored(keys: list[tuple[str, int]], patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name.rpartition(".")[0], p) for name, _ in keys for p in patterns)


def _name(groups: list[ChannelGroup]) -> list[ChannelGroup]:
    """Name a group after the module that owns its first member, de-duplicated in graph order."""
    seen: Counter = Counter()
    named = []
    for group in groups:
        base = group.members[0].param.rpartition(".")[0] or group.members[0].param
        seen[base] += 1
        name = base if seen[base] == 1 else f"{base}#{seen[base]}"
        named.append(ChannelGroup(group.id, name, group.size, group.members))
    return named


def _frozen(ctx: Context, roots: np.ndarray, frozen_root: int) -> tuple[FrozenChannels, ...]:
    """Summarise freeze events: the first reason that froze each channel class wins."""
    claimed: set[int] = set()
    out = []
    for event in ctx.space.freezes:
        labels = event.labels.numpy()
        fresh = [lab for lab in labels.tolist() if lab != 0 and lab not in claimed]
        claimed.update(fresh)
        if fresh:
            out.append(FrozenChannels(event.node, event.reason, len(fresh)))
    return tuple(out)


def keep_mask_of_labels(grouping: Grouping, kept_channels: torch.Tensor) -> torch.Tensor:
    """For every label, whether it survives: `kept_channels` is a bool per global channel."""
    table = torch.cat([torch.ones(1, dtype=torch.bool), kept_channels.bool()])
    return table[torch.from_numpy(grouping.slot_of_label)]

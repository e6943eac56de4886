"""Typed results of the dependency analysis: channel groups and frozen channels.

A *class* is a set of parameter slices that must be removed together (one conv output channel with the
next conv's input column, the BatchNorm statistics between them, a residual partner, ...). Classes that
touch the same parameter dims form a *group*: a group of size C is what a user calls "the 64 channels of
layer1"; a plan keeps a subset of its C channels.
"""

from __future__ import annotations

import fnmatch
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from cascomp.ir.context import Context


@dataclass(frozen=True)
class GroupMember:
    """Parameter `param`, sliced along `dim`: `indices[c]` are the positions channel c owns there."""

    param: str
    dim: int
    indices: tuple[tuple[int, ...], ...]


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


def build_groups(ctx: Context, ignore: tuple[str, ...] = ()) -> Grouping:
    roots = ctx.space.roots()
    frozen_root = int(roots[0])
    positions: dict[int, dict[tuple[str, int], list[int]]] = defaultdict(lambda: defaultdict(list))
    for name, axes in ctx.record.param_axes.items():
        for dim, vector in enumerate(axes):
            if vector is None:
                continue
            for pos, root in enumerate(roots[vector.numpy()].tolist()):
                if root != frozen_root:
                    positions[root][(name, dim)].append(pos)
    by_signature: dict[tuple, list[int]] = defaultdict(list)
    for root, members in positions.items():
        by_signature[tuple(members)].append(root)
    ignored = _ignored_roots(by_signature, ignore)
    groups, slot_roots = [], []
    for signature, comp_roots in by_signature.items():
        if signature in ignored:
            continue
        comp_roots.sort(key=lambda r: positions[r][signature[0]][0])
        members = tuple(GroupMember(p, d, tuple(tuple(positions[r][(p, d)]) for r in comp_roots))
                        for p, d in signature)
        groups.append(ChannelGroup(len(groups), "", len(comp_roots), members))
        slot_roots.extend(comp_roots)
    groups = _name(groups)
    slot_of_root = np.zeros(roots.max() + 1 if len(roots) else 1, dtype=np.int64)
    slot_of_root[np.asarray(slot_roots, dtype=np.int64)] = np.arange(1, len(slot_roots) + 1)
    offsets, total = [], 0
    for group in groups:
        offsets.append(total)
        total += group.size
    frozen = _frozen(ctx, roots, frozen_root) + tuple(
        FrozenChannels("", f"ignored by pattern ({', '.join(ignore)})", len(r)) for r in ignored.values())
    return Grouping(tuple(groups), frozen, slot_of_root[roots], tuple(offsets))


def _ignored_roots(by_signature, patterns: tuple[str, ...]) -> dict[tuple, list[int]]:
    if not patterns:
        return {}
    hit = lambda param: any(fnmatch.fnmatchcase(param.rpartition(".")[0], p) for p in patterns)  # noqa: E731
    return {sig: roots for sig, roots in by_signature.items() if any(hit(p) for p, _ in sig)}


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
        if fresh and event.reason != "model output":
            out.append(FrozenChannels(event.node, event.reason, len(fresh)))
    return tuple(out)


def keep_mask_of_labels(grouping: Grouping, kept_channels: torch.Tensor) -> torch.Tensor:
    """For every label, whether it survives: `kept_channels` is a bool per global channel."""
    table = torch.cat([torch.ones(1, dtype=torch.bool), kept_channels.bool()])
    return table[torch.from_numpy(grouping.slot_of_label)]

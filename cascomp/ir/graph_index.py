"""Lookups over a traced graph and its analysis record that the depth analysis, the cost model and
RemoveBranchesPass share: which nodes die with a set of seed nodes (`dead_nodes`), which nodes read each
parameter or buffer (`tensor_users`), which channel groups each node and parameter carries
(`groups_of_nodes`, `groups_of_params`, inverted by `by_group`), and how an error message names a node
(`describe_node`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from cascomp.ir.context import Record
from cascomp.ir.groups import Grouping
from cascomp.ir.op_table import op_name


def dead_nodes(graph: fx.Graph, seeds: frozenset[str] | set[str]) -> frozenset[str]:
    """`seeds` plus every node all of whose users are dead (placeholders and the output stay)."""
    return dead_closure(node for node in graph.nodes if node.name in seeds)


def dead_closure(seeds: Iterable[fx.Node]) -> frozenset[str]:
    """`dead_nodes` from the seed nodes upwards: a node dies when its last user does, so only the seeds'
    ancestors are looked at."""
    dead = set(seeds)
    pending, dead_users = list(dead), {}
    while pending:
        for source in pending.pop().all_input_nodes:
            dead_users[source] = dead_users.get(source, 0) + 1
            if (source not in dead and source.op not in ("placeholder", "output")
                    and dead_users[source] == len(source.users)):
                dead.add(source)
                pending.append(source)
    return frozenset(node.name for node in dead)


def tensor_users(gm: fx.GraphModule) -> dict[str, frozenset[str]]:
    """Parameter or buffer name -> the nodes that read it (get_attr, or a call of its module)."""
    found: dict[str, set[str]] = {}
    for node in gm.graph.nodes:
        if node.op not in ("call_module", "get_attr"):
            continue
        target = str(node.target)
        owner = _attribute(gm, target)
        if isinstance(owner, nn.Module):
            names = [f"{target}.{n}" for n, _ in list(owner.named_parameters()) + list(owner.named_buffers())]
        else:
            names = [target]
        for name in names:
            found.setdefault(name, set()).add(node.name)
    return {name: frozenset(nodes) for name, nodes in found.items()}


def groups_of_nodes(record: Record, grouping: Grouping) -> dict[str, set[int]]:
    """For every node, the indices of the groups whose channels its value (or values) carry (-1: frozen
    channels)."""
    vectors = {name: [t.reshape(-1) for t in _label_tensors(labels)] for name, labels in record.labels.items()}
    return _groups_of(vectors, grouping)


def groups_of_params(record: Record, grouping: Grouping) -> dict[str, set[int]]:
    """For every parameter linked to channel labels, the indices of the groups its dims follow."""
    vectors = {name: [v for v in axes if v is not None] for name, axes in record.param_axes.items()}
    return {name: {i for i in groups if i >= 0} for name, groups in _groups_of(vectors, grouping).items()}


def _groups_of(vectors: dict[str, list[torch.Tensor]], grouping: Grouping) -> dict[str, set[int]]:
    """The distinct groups of the labels listed under each name: one numpy pass over all of them, since a
    unique per name costs more than the labels do."""
    group_of_label = _group_of_slot(grouping)[grouping.slot_of_label]
    names = list(vectors)
    parts = [v.numpy() for name in names for v in vectors[name]]
    lengths = np.array([sum(v.numel() for v in vectors[name]) for name in names], dtype=np.int64)
    labels = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    width = len(grouping.groups) + 1  # groups shifted by one, so that -1 (frozen) is 0
    keys = np.unique(np.repeat(np.arange(len(names)), lengths) * width + group_of_label[labels] + 1)
    found: dict[str, set[int]] = {name: set() for name in names}
    for owner, group in zip((keys // width).tolist(), (keys % width - 1).tolist()):
        found[names[owner]].add(group)
    return found


def by_group(indices_of_name: dict[str, set[int]]) -> dict[int, set[str]]:
    """Invert a name -> group indices table."""
    names: dict[int, set[str]] = {}
    for name, indices in indices_of_name.items():
        for index in indices:
            names.setdefault(index, set()).add(name)
    return names


def _group_of_slot(grouping: Grouping) -> np.ndarray:
    group_of_slot = np.full(1 + sum(g.size for g in grouping.groups), -1, dtype=np.int64)
    for index, (group, offset) in enumerate(zip(grouping.groups, grouping.offsets)):
        group_of_slot[1 + offset:1 + offset + group.size] = index
    return group_of_slot


def _label_tensors(labels) -> list[torch.Tensor]:
    if isinstance(labels, torch.Tensor):
        return [labels]
    if isinstance(labels, (tuple, list)):
        return [t for item in labels for t in _label_tensors(item)]
    return []


def _attribute(gm: fx.GraphModule, target: str):
    owner = gm
    for part in target.split("."):
        owner = getattr(owner, part, None)
    return owner


def describe_node(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return f"node {node.name!r} ({type(gm.get_submodule(str(node.target))).__name__} {node.target!r})"
    return f"node {node.name!r} ({op_name(node) if node.op != 'get_attr' else node.target})"

"""Cost model: MACs, FLOPs and parameters as functions of which channels each group keeps.

Convention: MACs count the multiply-accumulates of convolutions, linear layers and tensor products
(attention scores and attention-times-values); FLOPs = 2 x MACs, as in the survey's Table 1. Elementwise
ops, norms and pooling are not counted. Counts are per sample (batch 1). Parameters count every
`nn.Parameter` (buffers such as BatchNorm statistics are not parameters).

Each op's MACs is a product of kept counts along the dims it iterates over, so the same expression gives the
exact cost of a 0/1 plan and a differentiable expected cost for keep probabilities (FiGS eq. 6).
A group that keeps no channel at all and removes a branch (`cascomp.ir.depth`) also takes away the cost of
every node that goes with the branch and the parameters only those nodes read (a frontier layer's bias, the
BatchNorm after it): the same nodes RemoveBranchesPass erases. The constant left in the branch's place is a
buffer, so it is not a parameter.

Latency (`attach_latency`, from cascomp.export.latency_table): each layer's fitted time, a + b x its MACs at
the table's batch, summed with onnxruntime's cost of a run; a MACs term of a node the table has no entry
for (a tensor product in attention) is priced at the table's median b. Like MACs it is a product of kept
counts, so the same keep-probabilities give an expected latency, exact at 0/1.

Depth as a probability: `evaluate(keep, alive)` also takes, per removable branch (`CostModel.branches`, in
that order), the probability that the branch stays. Every MACs and parameter term that goes with branch b
(what keeping no channel of its group removes) is then weighted by alive_b, and `keep` is read as each
channel's keep-probability given that its branch stays: E[cost] = alive_b x E[cost | b stays] term by term,
differentiable in both (a search's branch gates and stage depths get the gradient of the cost they save).
A branch whose alive-probability is exactly 0 is removed as a plan removes it (the whole closure, also what
goes only when several branches go together), so at 0/1 probabilities the model is exact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.fx as fx

from cascomp.ir.context import Context
from cascomp.ir.depth import DepthAnalysis
from cascomp.ir.graph_index import dead_nodes, tensor_users
from cascomp.ir.groups import Grouping


@dataclass(frozen=True)
class Cost:
    flops: float
    macs: float
    params: float
    latency: float = 0.0  # ms, as a latency table predicts it (0 when none is attached)

    def ratio(self, baseline: "Cost") -> "Cost":
        def div(a: float, b: float) -> float:
            return a / b if b else 1.0

        return Cost(div(self.flops, baseline.flops), div(self.macs, baseline.macs), div(self.params, baseline.params),
                    div(self.latency, baseline.latency))

    def to_dict(self) -> dict:
        data = asdict(self)
        latency = data.pop("latency")
        return {**data, "latency_predicted_ms": latency} if latency else data


Factor = tuple  # ("slots", LongTensor) or ("const", int)


class CostModel:
    """Evaluates cost for a keep vector over all channels of all groups (1 = kept)."""

    def __init__(self, ctx: Context, grouping: Grouping, gm: fx.GraphModule,
                 depth: DepthAnalysis | None = None) -> None:
        slot = grouping.slot_of_label
        self.channels = sum(g.size for g in grouping.groups)
        self.offsets = grouping.offsets
        self.groups = grouping.groups
        self._macs = [(t.node, t.scale, tuple(_factor(f, slot) for f in t.factors)) for t in ctx.record.macs]
        self._mac_products = _Products([factors for _, _, factors in self._macs])
        self._scales = torch.tensor([scale for _, scale, _ in self._macs], dtype=torch.float64)
        params = []
        for name, param in gm.named_parameters():
            axes = ctx.record.param_axes.get(name, [None] * param.dim())
            params.append(tuple(_factor(axes[d], slot) if axes[d] is not None else _factor(size, slot)
                                for d, size in enumerate(param.shape)))
        self._param_products = _Products(params)
        self._graph = gm.graph
        branches = depth.branches if depth is not None else {}
        start = {g.name: (offset, g.size) for g, offset in zip(grouping.groups, grouping.offsets)}
        self._removable = [(name, branch, *start[name]) for name, branch in branches.items()]
        # every removable group's channels, and which group each one is of: one segment sum tells which are empty
        self._removable_channels = torch.cat([torch.arange(first, first + size) for *_, first, size in self._removable]
                                             or [torch.zeros(0, dtype=torch.long)])
        self._removable_of_channel = torch.repeat_interleave(
            torch.tensor([size for *_, size in self._removable], dtype=torch.long))
        users = tensor_users(gm) if self._removable else {}
        self._param_users = [users.get(name, frozenset()) for name, _ in gm.named_parameters()]
        self._gone: dict[frozenset[str], tuple[frozenset[int], frozenset[int]]] = {}
        self.branches: tuple[str, ...] = tuple(name for name, *_ in self._removable)
        self._branch_terms: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per branch, built on first use
        self.latency_table = None
        self._latency: tuple[torch.Tensor, torch.Tensor, float] | None = None  # per MACs term: b x batch, a; run

    def attach_latency(self, table) -> None:
        """Price latency with `table` (a cascomp.export.latency_table.LatencyTable of this graph)."""
        by_node = {layer.node: layer for layer in table.layers}
        slopes = sorted(layer.slope for layer in table.layers if layer.slope > 0)
        default = slopes[len(slopes) // 2] if slopes else 0.0
        slope, intercept, seen = [], [], set()
        for node, _, _ in self._macs:
            layer = by_node.get(node)
            slope.append((layer.slope if layer is not None else default) * table.batch)
            intercept.append(layer.intercept if layer is not None and node not in seen else 0.0)
            seen.add(node)
        self.latency_table = table
        self._latency = (torch.tensor(slope, dtype=torch.float64), torch.tensor(intercept, dtype=torch.float64),
                         float(table.run_ms))

    def evaluate_latency(self, keep: torch.Tensor, alive: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted ms for `keep` (and `alive`), differentiable; needs `attach_latency` first."""
        if self._latency is None:
            raise ValueError("no latency table is attached to this cost model")
        slope, intercept, run = self._latency
        table = torch.cat([torch.ones(1, dtype=keep.dtype), keep])
        gone, _ = self._removed_terms(keep, alive)
        terms = intercept.to(keep.dtype) + slope.to(keep.dtype) * self._scales.to(keep.dtype) * self._mac_products(table)
        if alive is not None and len(self.branches):
            terms = terms * self._branch_factors(alive.to(keep.dtype), keep.dtype)[0]
        return run + _sum_but(terms, gone)

    def full(self) -> torch.Tensor:
        return torch.ones(self.channels)

    def evaluate(self, keep: torch.Tensor, alive: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(MACs, params) for `keep` (float, one entry per global channel; differentiable) and, optionally,
        `alive` (one entry per branch of `branches`: the probability that it stays; differentiable)."""
        if alive is not None and alive.shape != (len(self.branches),):
            raise ValueError(f"alive must hold one probability per removable branch ({len(self.branches)}), "
                             f"got shape {tuple(alive.shape)}")
        table = torch.cat([torch.ones(1, dtype=keep.dtype), keep])
        gone_macs, gone_params = self._removed_terms(keep, alive)
        macs = self._scales.to(keep.dtype) * self._mac_products(table)
        params = self._param_products(table)
        if alive is not None and len(self.branches):
            macs, params = self._weighted(macs, params, alive.to(keep.dtype))
        return _sum_but(macs, gone_macs), _sum_but(params, gone_params)

    def _weighted(self, macs: torch.Tensor, params: torch.Tensor,
                  alive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each term times the alive-probability of every branch it goes with."""
        mac_factor, param_factor = self._branch_factors(alive, macs.dtype)
        return macs * mac_factor, params * param_factor

    def _branch_factors(self, alive: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Per MACs term and per parameter term, the product of the alive-probabilities of its branches."""
        if self._branch_terms is None:
            self._branch_terms = []
            for _, branch, *_ in self._removable:
                dead = dead_nodes(self._graph, branch.removed)
                self._branch_terms.append((
                    torch.tensor([i for i, (node, _, _) in enumerate(self._macs) if node in dead], dtype=torch.long),
                    torch.tensor([i for i, users in enumerate(self._param_users) if users and users <= dead],
                                 dtype=torch.long)))
        mac_factor = torch.ones(len(self._macs), dtype=dtype)
        param_factor = torch.ones(len(self._param_users), dtype=dtype)
        for b, (mac_terms, param_terms) in enumerate(self._branch_terms):
            if len(mac_terms):
                mac_factor = mac_factor.index_put((mac_terms,), mac_factor[mac_terms] * alive[b])
            if len(param_terms):
                param_factor = param_factor.index_put((param_terms,), param_factor[param_terms] * alive[b])
        return mac_factor, param_factor

    def _removed_terms(self, keep: torch.Tensor,
                       alive: torch.Tensor | None = None) -> tuple[frozenset[int], frozenset[int]]:
        """Indices of the MACs and parameter terms that go with the branches of groups keeping nothing (or
        whose alive-probability is 0)."""
        if not self._removable:
            return frozenset(), frozenset()
        with torch.no_grad():
            kept = torch.zeros(len(self._removable), dtype=keep.dtype).index_add(
                0, self._removable_of_channel, keep.detach()[self._removable_channels].abs()) > 0
            if alive is not None:
                kept &= alive.detach().to(kept.device) > 0
        zeroed = frozenset(name for (name, *_), stays in zip(self._removable, kept.tolist()) if not stays)
        if zeroed not in self._gone:
            seeds = frozenset().union(*(b.removed for name, b, *_ in self._removable if name in zeroed))
            dead = dead_nodes(self._graph, seeds) if seeds else frozenset()
            macs = frozenset(i for i, (node, _, _) in enumerate(self._macs) if node in dead)
            params = frozenset(i for i, users in enumerate(self._param_users) if users and users <= dead)
            self._gone[zeroed] = (macs, params)
        return self._gone[zeroed]

    def cost(self, keep: torch.Tensor | None = None) -> Cost:
        keep = self.full() if keep is None else keep.to(torch.float64)
        with torch.no_grad():
            macs, params = self.evaluate(keep.double())
            latency = float(self.evaluate_latency(keep.double())) if self._latency is not None else 0.0
        return Cost(flops=2 * float(macs), macs=float(macs), params=float(params), latency=latency)

    def node_macs(self, keep: torch.Tensor | None = None) -> dict[str, float]:
        keep = self.full().double() if keep is None else keep.double()
        table = torch.cat([torch.ones(1, dtype=keep.dtype), keep])
        gone, _ = self._removed_terms(keep)
        out: dict[str, float] = {}
        macs = (self._scales * self._mac_products(table)).tolist()
        for i, ((node, _, _), value) in enumerate(zip(self._macs, macs)):
            out[node] = out.get(node, 0.0) + (0.0 if i in gone else value)
        return out

    def group_shares(self) -> list[Cost]:
        """For each group, the share of FLOPs and params its channels account for (gradient at full width
        times width: how cost scales with the group's width)."""
        if not self.groups:
            return []
        keep = self.full().double().requires_grad_(True)
        macs, params = self.evaluate(keep)
        grad_macs = torch.autograd.grad(macs, keep, retain_graph=True)[0]
        grad_params = torch.autograd.grad(params, keep)[0]
        shares = []
        for group, start in zip(self.groups, self.offsets):
            part = slice(start, start + group.size)
            m = float(grad_macs[part].sum()) / max(float(macs.detach()), 1.0)
            p = float(grad_params[part].sum()) / max(float(params.detach()), 1.0)
            shares.append(Cost(flops=m, macs=m, params=p))
        return shares


def _factor(value, slot: np.ndarray) -> Factor:
    if isinstance(value, torch.Tensor):  # gathered in numpy: a torch gather costs several times more here
        return ("slots", torch.from_numpy(slot[value.numpy().reshape(-1)]))
    return ("const", int(value))


class _Products:
    """Per term, the product of its factors for a keep table, every term at once. A kept count is one
    segment of a single gather-and-add over the table, and each term's factors multiply in their order.
    A Python loop over the terms took ~10 ms on a few hundred layers for every cost asked for."""

    def __init__(self, terms: list[tuple[Factor, ...]]) -> None:
        width = max((len(term) for term in terms), default=0)
        constants, slots, rows = [1.0], [], []  # constant 0 is the 1 that pads short terms
        for term in terms:
            row = []
            for kind, value in term:
                if kind == "slots":
                    row.append(-1 - len(slots))  # negative: a kept count, numbered once constants are known
                    slots.append(value)
                else:
                    row.append(len(constants))
                    constants.append(float(value))
            rows.append(row + [0] * (width - len(row)))
        index = torch.tensor(rows, dtype=torch.long).reshape(len(terms), width)
        self._index = torch.where(index < 0, len(constants) - 1 - index, index)
        self._constants = torch.tensor(constants, dtype=torch.float64)
        self._slots = torch.cat(slots) if slots else torch.zeros(0, dtype=torch.long)
        self._segment = torch.repeat_interleave(torch.tensor([len(s) for s in slots], dtype=torch.long))
        self._counts = len(slots)

    def __call__(self, table: torch.Tensor) -> torch.Tensor:
        counts = torch.zeros(self._counts, dtype=table.dtype).index_add(0, self._segment, table[self._slots])
        values = torch.cat([self._constants.to(table.dtype), counts])
        result = torch.ones(len(self._index), dtype=table.dtype)
        for column in values[self._index].unbind(1):
            result = result * column
        return result


def _sum_but(values: torch.Tensor, skipped: frozenset[int]) -> torch.Tensor:
    """The sum of `values` without the terms in `skipped`."""
    if skipped:
        keep = torch.ones(len(values), dtype=torch.bool)
        keep[list(skipped)] = False
        values = values[keep]
    return values.sum()

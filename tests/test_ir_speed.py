"""The fast paths of trace and rewrite behave like the plain forms they replace: module copies like
`copy.deepcopy`, lazily built channel positions like tuples, the vectorised cost model like a product per
term, and a pass pipeline that recompiles once like passes that recompile each."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.fx as fx
import torch.nn as nn
from torch.nn.utils import parametrizations

import cascomp
from cascomp.errors import PassError
from cascomp.ir.channel_positions import ChannelPositions
from cascomp.ir.module_copy import copy_for_rewrite, copy_graph_module, copy_module
from cascomp.passes import EliminateDeadCodePass, Pass, PassResult, PruneChannelsPass, run_passes
from tests.models import ZOO, example_inputs


def _storages(module: nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in module.state_dict().values()}


class Tied(nn.Module):
    """One conv reached under two names and a weight shared by two layers: a copy keeps both aliases."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.again = self.conv
        self.first, self.second = nn.Linear(4, 4), nn.Linear(4, 4)
        self.second.weight = self.first.weight
        self.cache = [1, 2]  # a mutable attribute: copied, not shared

    def forward(self, x):
        return self.second(self.first(self.again(self.conv(x).relu()).mean((2, 3))))


def test_copy_module_is_a_deep_copy() -> None:
    model = ZOO["efficientnet_mbconv"].build()
    copied, reference = copy_module(model), copy.deepcopy(model)
    assert repr(copied) == repr(reference) and copied.training == model.training
    assert not _storages(copied) & _storages(model)
    x = example_inputs("efficientnet_mbconv")[0]
    with torch.no_grad():
        assert torch.equal(copied(x), model(x))


def test_copy_module_keeps_aliases_and_copies_attributes() -> None:
    model = Tied()
    copied = copy_module(model)
    assert copied.again is copied.conv and copied.conv is not model.conv
    assert copied.second.weight is copied.first.weight and copied.first.weight is not model.first.weight
    assert copied.cache == model.cache and copied.cache is not model.cache
    shared = copy_module(model, share_tensors=True)
    assert shared.conv is not model.conv and shared.conv.weight is model.conv.weight


def test_copy_module_leaves_parametrized_modules_to_deepcopy() -> None:
    model = nn.Sequential(parametrizations.weight_norm(nn.Linear(4, 3)), nn.ReLU())
    copied = copy_module(model)
    x = torch.randn(2, 4)
    assert torch.equal(copied(x), model(x))
    assert copied[0].parametrizations.weight.original0 is not model[0].parametrizations.weight.original0


def test_copy_graph_module_runs_alone() -> None:
    gm = fx.symbolic_trace(Tied())
    copied = copy_graph_module(gm, share_tensors=True)
    assert copied.code == gm.code and copied.graph is not gm.graph
    assert copied.conv is not gm.conv and copied.conv.weight is gm.conv.weight
    x = torch.randn(1, 4, 6, 6)
    assert torch.equal(copied(x), gm(x))
    copied.conv.weight = nn.Parameter(torch.zeros_like(gm.conv.weight))  # the source keeps its own
    assert not torch.equal(copied(x), gm(x))


def test_copy_for_rewrite_is_the_source_once_recompiled() -> None:
    graph = cascomp.trace(ZOO["vit"].build(), example_inputs("vit"))  # root parameters: class token, positions
    copied = copy_for_rewrite(graph.gm)
    assert copied.graph is not graph.gm.graph and len(copied.graph.nodes) == len(graph.gm.graph.nodes)
    copied.recompile()
    assert copied.code == graph.gm.code and type(copied).__name__ == "GraphModule" and not copied.training
    assert copied.cls_token is graph.gm.cls_token and copied.blocks is not graph.gm.blocks
    assert list(copied.state_dict()) == list(graph.gm.state_dict())
    assert torch.equal(graph.run(copied), graph.run(graph.gm))


def test_run_passes_recompiles_once(monkeypatch) -> None:
    graph = cascomp.trace(ZOO["resnet_basic"].build(), example_inputs("resnet_basic"))
    plan = cascomp.Plan.random(graph, 0.5, seed=0)
    keep = graph.label_keep(plan)
    gm = copy_for_rewrite(graph.gm)
    calls = []
    recompile = fx.GraphModule.recompile
    monkeypatch.setattr(fx.GraphModule, "recompile", lambda self: calls.append(1) or recompile(self))
    result = run_passes(gm, [PruneChannelsPass(graph.record, keep), EliminateDeadCodePass()])
    assert len(calls) == 1 and result.modified
    masked = cascomp.mask_model(graph, plan)
    assert torch.allclose(graph.run(result.gm), graph.run(masked), atol=1e-5)


class _Breaks(Pass):
    def call(self, gm: fx.GraphModule) -> PassResult:
        next(n for n in gm.graph.nodes if n.op == "call_module").target = "missing"
        return PassResult(gm, True)


def test_run_passes_names_the_pass_that_broke_the_graph() -> None:
    gm = fx.symbolic_trace(Tied())
    with pytest.raises(PassError, match="_Breaks failed"):
        run_passes(gm, [EliminateDeadCodePass(), _Breaks()])


def test_channel_positions_read_as_tuples() -> None:
    positions = np.array([5, 0, 1, 2, 3, 4])
    start, length = np.array([1, 3, 0, 1]), np.array([2, 2, 1, 3])  # four runs of `positions`
    even = ChannelPositions(positions, start, length, np.array([0, 1]))
    uneven = ChannelPositions(positions, start, length, np.array([2, 3]))
    assert even == ((0, 1), (2, 3)) and ((0, 1), (2, 3)) == even and hash(even) == hash(((0, 1), (2, 3)))
    assert uneven == ((5,), (0, 1, 2)) and len(uneven) == 2 and uneven[1] == (0, 1, 2) and list(uneven)[0] == (5,)
    assert even != uneven and repr(even) == "((0, 1), (2, 3))" and uneven[-1:] == ((0, 1, 2),)


@pytest.mark.parametrize("name", ["resnet_bottleneck", "densenet", "vit", "grouped_conv"])
def test_cost_is_the_sum_of_products_per_term(name: str) -> None:
    graph = cascomp.trace(ZOO[name].build(), example_inputs(name))
    model = graph.cost_model
    keep = torch.rand(model.channels, dtype=torch.float64)
    table = torch.cat([torch.ones(1, dtype=torch.float64), keep])

    def product(factors) -> float:
        value = 1.0
        for kind, factor in factors:
            value *= float(table[factor].sum()) if kind == "slots" else factor
        return value

    macs, _ = model.evaluate(keep)
    assert float(macs) == pytest.approx(sum(scale * product(f) for _, scale, f in model._macs), rel=1e-12)
    assert graph.cost(cascomp.Plan.random(graph, 0.5, seed=1)).macs == sum(
        graph.node_costs(cascomp.Plan.random(graph, 0.5, seed=1)).values())

"""Reconstruction: the pruned model's plain layers refit by least squares to the baseline's outputs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import cascomp
from cascomp.train.reconstruct import kept_positions, reconstruct
from tests.search_fixtures import TinyNet, quadrant_task, trained_tiny


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    spec = quadrant_task(tmp_path_factory.mktemp("data") / "quadrants.npz", samples=640)
    data = cascomp.load_data(spec, batch_size=64, seed=0)
    model = trained_tiny(data)
    return data, model, cascomp.trace(model, next(iter(data.val))[0][:1])


def test_kept_positions_follow_the_plan():
    graph = cascomp.trace(TinyNet(), torch.randn(2, 1, 8, 8))
    plan = cascomp.Plan.random(graph, 0.5, seed=2)
    kept = kept_positions(graph, plan)
    inner = next(g for g in graph.groups if any(m.param == "conv1.weight" and m.dim == 0 for m in g.members))
    assert kept[("conv1.weight", 0)].tolist() == sorted(plan.keep[inner.name])
    assert kept[("conv2.weight", 1)].tolist() == sorted(plan.keep[inner.name])
    small = cascomp.apply_plan(graph, plan)
    assert small.get_submodule("conv1").weight.shape[0] == len(kept[("conv1.weight", 0)])


def test_with_nothing_pruned_the_refit_is_the_baseline(task):
    data, _, graph = task
    teacher = copy.deepcopy(graph.gm).eval()
    small = cascomp.apply_plan(graph, cascomp.Plan.full(graph))
    with torch.no_grad():  # disturb the layers' weights: the refit must find the baseline's again
        for layer in small.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                layer.weight.add_(0.05 * torch.randn_like(layer.weight))
    x = next(iter(data.val))[0]
    with torch.no_grad():
        disturbed = (small.eval()(x) - teacher(x)).abs().max()
    refit = reconstruct(teacher, small, graph, cascomp.Plan.full(graph), data, seed=0, batches=4)
    assert set(refit) == {"stem.0", "conv1", "conv2", "head.0", "fc"}
    with torch.no_grad():
        error = (small.eval()(x) - teacher(x)).abs().max()
    # the ridge term and the nearly collinear pooled features of a tiny net leave a small residue
    assert error < 0.02 * teacher(x).abs().max() and error < 0.1 * disturbed


def test_refit_brings_the_pruned_model_closer_to_the_baseline(task):
    data, _, graph = task
    teacher = copy.deepcopy(graph.gm).eval()
    plan = cascomp.Plan.random(graph, 0.4, seed=1)
    pruned = cascomp.apply_plan(graph, plan).eval()
    refit = copy.deepcopy(pruned)
    reconstruct(teacher, refit, graph, plan, data, seed=0, batches=4)
    x = next(iter(data.val))[0]  # held-out samples, not the calibration batches
    with torch.no_grad():
        before = (pruned(x) - teacher(x)).pow(2).mean()
        after = (refit.eval()(x) - teacher(x)).pow(2).mean()
    assert after < 0.5 * before
    assert [p.shape for p in refit.parameters()] == [p.shape for p in pruned.parameters()]


def test_depthwise_convolutions_are_left_as_they_are(task):
    data, _, _ = task

    class Depthwise(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(self.depthwise(torch.relu(self.conv(x))).mean(dim=(2, 3)))

    graph = cascomp.trace(Depthwise().eval(), torch.randn(1, 1, 8, 8))
    plan = cascomp.Plan.random(graph, 0.5, seed=0)
    small = cascomp.apply_plan(graph, plan)
    depthwise = small.get_submodule("depthwise").weight.clone()
    refit = reconstruct(copy.deepcopy(graph.gm), small, graph, plan, data, seed=0, batches=2)
    assert "depthwise" not in refit and torch.equal(small.get_submodule("depthwise").weight, depthwise)

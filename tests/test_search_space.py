"""The search space (issue 17): branch choices (FiGS's branch gates, TAS's stage depth), the cost model's
per-branch alive-probabilities, InsertBranchGatesPass, and a search that removes blocks exporting exactly."""

from __future__ import annotations

import pytest
import torch

import cascomp
from cascomp.kernels import BranchGates, ConcreteGates, StageDepth
from cascomp.methods import METHODS, FigsConfig, TasConfig
from cascomp.search.budget import fit_widths
from cascomp.methods.search_space import stages
from tests.exactness import check_exact, zoo_graph
from tests.search_fixtures import TinyNet, quadrant_task, quick_config, trained_tiny


# -- branch choices ------------------------------------------------------------------------------------------
def test_branch_gates_draw_whole_branches_and_the_gradient_reaches_their_logits():
    gates = BranchGates(5, init_logit=0.0).train()
    torch.manual_seed(0)
    draws = torch.stack([gates() for _ in range(200)])
    assert set(draws.detach().flatten().tolist()) <= {0.0, 1.0}  # Bernoulli(p) in the forward pass
    assert 0.35 < float(draws.detach().mean()) < 0.65
    (gates() * torch.arange(5.0)).sum().backward()
    torch.testing.assert_close(gates.logits.grad, torch.arange(5.0) * 0.25)  # the mean derivative p(1 - p)
    with torch.no_grad():
        gates.logits.copy_(torch.tensor([3.0, -3.0, 0.5, -0.5, 0.0]))
    torch.testing.assert_close(gates.alive_probabilities(), torch.sigmoid(gates.logits))
    assert gates.settled().tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert gates.eval()().tolist() == [1.0] * 5  # evaluation: removed branches are zeroed by the gate table


def test_stage_depth_keeps_the_first_blocks_and_its_alive_probabilities():
    # stages [0, 1, 2] and [3, 4]; branch 5 alone in a stage without a choice (least = 1)
    depth = StageDepth([[0, 1, 2], [3, 4], [5]], 6, least=1)
    assert depth.searched == 2 and depth.valid.tolist() == [[False, True, True, True], [False, True, True, False]]
    with torch.no_grad():
        depth.logits.copy_(torch.tensor([[0.0, 0.1, 0.5, -0.3], [0.0, 1.0, 0.2, 7.0]]))
    p = depth.probabilities()
    p = p.detach()
    assert float(p[0, 0]) == 0.0 and float(p[1, 3]) == 0.0 and torch.allclose(p.sum(1), torch.ones(2))
    alive = depth.alive_probabilities()
    expected = [1.0, float(p[0, 2] + p[0, 3]), float(p[0, 3]), 1.0, float(p[1, 2]), 1.0]
    torch.testing.assert_close(alive, torch.tensor(expected))
    assert depth.most_probable().tolist() == [2, 1]
    assert depth.settled().tolist() == [1.0, 1.0, 0.0, 1.0, 0.0, 1.0]  # the deepest blocks go first
    depth.train()
    torch.manual_seed(0)
    multipliers = depth()
    assert multipliers[0] == 1 and multipliers[3] == 1 and multipliers[5] == 1  # kept by every depth
    assert bool((multipliers[:5] >= 0).all()) and multipliers[1] >= multipliers[2] and multipliers[3] >= multipliers[4]
    (multipliers * torch.arange(6.0)).sum().backward()
    assert bool((depth.logits.grad[depth.valid] != 0).any()) and bool((depth.logits.grad[~depth.valid] == 0).all())
    assert depth.eval()().tolist() == [1.0] * 6


def test_stages_follow_the_residual_streams():
    graph = zoo_graph("resnet_basic")
    assert graph.cost_model.branches == ("stages.0.0.conv1", "stages.0.1.conv1", "stages.1.0.conv1",
                                         "stages.1.1.conv1")
    assert stages(graph) == [[0, 1], [2, 3]]


# -- the cost model ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet_basic", "resnet_bottleneck", "mobilenet_v2", "efficientnet_mbconv"])
def test_expected_cost_with_alive_probabilities_is_exact_at_zero_one(name):
    graph = zoo_graph(name)
    model = graph.cost_model
    generator = torch.Generator().manual_seed(0)
    baseline = graph.cost()
    for _ in range(4):
        widths = {g.name: int(torch.randint(1, g.size + 1, (), generator=generator)) for g in graph.groups}
        alive = (torch.rand(len(model.branches), generator=generator) < 0.5).double()
        for name_, stays in zip(model.branches, alive.tolist()):
            if not stays:
                widths[name_] = 0
        scores = {g.name: torch.rand(g.size, generator=generator) for g in graph.groups}
        plan = cascomp.Plan.from_widths(graph, scores, widths)
        keep = plan.kept_channels(graph).double()
        for group, offset in zip(graph.groups, graph.offsets):  # a removed branch's channels as if it stayed:
            if widths[group.name] == 0:  # the keep-probabilities are read given that the branch stays
                keep[offset:offset + 1] = 1.0
        macs, params = model.evaluate(keep, alive)
        real = graph.cost(plan)
        assert 2 * float(macs) == pytest.approx(real.flops, rel=1e-9)
        assert float(params) == pytest.approx(real.params, rel=1e-9)
    assert graph.cost(None) == baseline


def test_the_depth_term_is_differentiable_and_prices_what_the_branch_removes():
    graph = zoo_graph("resnet_basic")
    model = graph.cost_model
    keep = torch.ones(graph.channels, dtype=torch.float64)
    alive = torch.full((len(model.branches),), 0.5, dtype=torch.float64, requires_grad=True)
    macs, _ = model.evaluate(keep, alive)
    (gradient,) = torch.autograd.grad(macs, alive)
    full = model.cost(keep).macs
    for index, name in enumerate(model.branches):
        one_gone = torch.ones(len(model.branches), dtype=torch.float64)
        one_gone[index] = 0.0
        saved = full - float(model.evaluate(keep, one_gone)[0])
        assert saved > 0 and float(gradient[index]) == pytest.approx(saved, rel=1e-9)  # linear in each alive
    with pytest.raises(ValueError, match="one probability per removable branch"):
        model.evaluate(keep, torch.ones(1, dtype=torch.float64))


# -- the search model ----------------------------------------------------------------------------------------
def _figs(graph, goals=None):
    return METHODS["figs"](graph, FigsConfig(branch_gates=True), goals or {"flops": 0.5})


def test_without_branch_gates_figs_keeps_its_search_model():
    graph = zoo_graph("resnet_basic")
    method = METHODS["figs"](graph, FigsConfig(), {"flops": 0.5})
    model = method.prepare()
    assert isinstance(model.get_submodule("cascomp_gates"), ConcreteGates)  # same state keys as before
    assert not hasattr(model, "cascomp_branch_gates") and method.space.branches is None


def test_a_gated_off_branch_no_longer_reaches_the_output_in_training():
    graph = zoo_graph("resnet_basic")
    method = _figs(graph)
    with torch.no_grad():
        method.gates.logits.fill_(30.0)
        method.space.branches.logits.copy_(torch.tensor([30.0, -30.0, 30.0, 30.0]))
    model = method.prepare().train()
    x = torch.randn(4, 3, 16, 16)
    torch.manual_seed(0)
    before = model(x)
    with torch.no_grad():
        model.get_submodule("stages.0.1.conv2").weight.mul_(3.0).add_(1.0)  # branch 1's last convolution
        model.get_submodule("stages.1.0.conv2").weight.mul_(3.0)  # a branch that stays
    torch.manual_seed(0)
    after = model(x)
    assert not torch.allclose(before, after)
    with torch.no_grad():
        model.get_submodule("stages.1.0.conv2").weight.div_(3.0)
    torch.manual_seed(0)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet_basic", "resnet_bottleneck"])
def test_the_settled_search_model_is_the_masked_reference_and_its_plan_rewrites_exactly(name):
    graph = zoo_graph(name)
    method = _figs(graph)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        method.gates.logits.copy_(torch.randn(graph.channels, generator=generator) * 3)
        method.space.branches.logits.copy_(torch.tensor([-4.0 if i % 2 else 4.0
                                                         for i in range(len(graph.cost_model.branches))]))
    removed = method.space.removed()
    assert removed
    keep, _ = method.space.settled()
    widths = {}
    for group, offset in zip(graph.groups, graph.offsets):
        widths[group.name] = 0 if group.name in removed else int(keep[offset:offset + group.size].sum())
    chosen = {g.name: tuple(i for i in range(g.size) if keep[o + i] > 0) if widths[g.name] else ()
              for g, o in zip(graph.groups, graph.offsets)}
    plan = cascomp.Plan(chosen)
    search_model = method.prepare().eval()
    torch.testing.assert_close(graph.run(search_model), graph.run(cascomp.mask_model(graph, plan)),
                               rtol=1e-4, atol=1e-5)
    # the decision proposes the removed blocks at width 0, the projection keeps them out, the rewrite is exact
    decision = method.decide(graph.gm)
    goal = 0.9 * graph.cost(plan).flops / graph.cost().flops  # below the settled architecture's own cost
    fit = fit_widths(graph, decision.scores, decision.family, {"flops": goal})
    assert all(fit.widths[name_] == 0 for name_ in removed)
    check_exact(graph, fit.plan)


def test_tas_depth_settled_removes_the_deepest_blocks_of_each_stage():
    graph = zoo_graph("resnet_basic")
    method = METHODS["tas"](graph, TasConfig(), {"flops": 0.5})
    assert method.depth is not None and method.depth.searched == 2
    assert METHODS["tas"](graph, TasConfig(depth=False), {"flops": 0.5}).depth is None
    with torch.no_grad():
        method.depth.logits.copy_(torch.tensor([[0.0, 5.0, 0.0], [0.0, 0.0, 5.0]]))
    assert method.space.removed() == {"stages.0.1.conv1"}
    proposal = method.decide(graph.gm).family(1.0)
    assert proposal["stages.0.1.conv1"] == 0 and proposal["stages.1.1.conv1"] > 0
    method.on_step(1.0)
    assert method.depth.temperature == pytest.approx(0.1) == method.choices.temperature


@pytest.mark.parametrize("method, config", [("figs", FigsConfig(branch_gates=True)),
                                            ("tas", TasConfig(least_blocks=0))])  # TinyNet's one block: 0 or 1
def test_a_depth_search_run_lands_the_budget(tmp_path, method, config):
    spec = quadrant_task(tmp_path / "quadrants.npz", samples=256)
    data = cascomp.load_data(spec, batch_size=32, seed=0)
    model = trained_tiny(data, epochs=1)
    graph = cascomp.trace(TinyNet(), torch.randn(2, 1, 8, 8))
    assert graph.cost_model.branches == ("conv1",)
    searched = METHODS[method](graph, config, {"flops": 0.5}).space.branches
    assert searched is not None and searched.alive_probabilities().numel() == 1  # the run searches depth
    result = cascomp.compress(model, quick_config(method=method, method_config=config, search_epochs=1,
                                                  finetune_epochs=1), data=data, progress=False)
    assert result.report["targets"]["flops"]["within_1pct"]


# -- channel-wise interpolation ------------------------------------------------------------------------------
def test_channel_wise_interpolation_on_a_known_input():
    from cascomp.kernels.width_choices import channel_interpolation, interpolate_channels

    x = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0, 32.0]).view(1, 6, 1, 1).expand(2, 6, 3, 3)
    three = channel_interpolation(x, 3)[0, :, 0, 0]
    assert three.tolist() == [1.0, 1.0, 2.0, 2.0, 4.0, 4.0]
    four = channel_interpolation(x, 4)[0, :, 0, 0]
    assert four.tolist() == [1.0, 1.5, 2.0, 4.0, 6.0, 8.0]
    assert torch.equal(channel_interpolation(x, 6), x) and channel_interpolation(x, 4).shape == x.shape
    # a site: the channels' ranks are 5, 4, ..., 0 (the last channel kept first); widths 3 and 4 of group 1
    order = torch.tensor([5, 4, 3, 2, 1, 0])
    weights = torch.tensor([0.25, 0.75], requires_grad=True)
    table = torch.cat([torch.ones(1 + 9), torch.tensor([0.0, 0.0, 3.0, 4.0]), torch.tensor([0.5, 0.5]), weights])
    out = interpolate_channels(x, table, torch.zeros(1, 6, 1, 1, dtype=torch.long), order, group=1, channels=9)
    ranked = torch.tensor([32.0, 16.0, 8.0, 4.0, 2.0, 1.0])
    expected = 0.25 * torch.tensor([32.0, 32.0, 16.0, 16.0, 8.0, 8.0]) + 0.75 * torch.tensor([32.0, 24.0, 16.0, 8.0, 6.0, 4.0])
    assert ranked.tolist() == x[0, order, 0, 0].tolist()
    torch.testing.assert_close(out[0, :, 0, 0], expected.flip(0))  # back in the tensor's channel order
    out.sum().backward()
    assert weights.grad is not None and float(weights.grad[1]) != 0.0
    plain = torch.cat([torch.ones(1), torch.rand(9)])  # evaluation: no drawn widths, the plain gates
    index = torch.arange(1, 7).view(1, 6, 1, 1)
    torch.testing.assert_close(interpolate_channels(x, plain, index, order, 1, 9), x * plain[index])


def test_tas_with_interpolation_searches_and_evaluates_the_masked_reference():
    from cascomp.kernels.width_choices import interpolate_channels

    graph = zoo_graph("resnet_basic")
    method = METHODS["tas"](graph, TasConfig(alignment="cwi"), {"flops": 0.5})
    model = method.prepare()
    sites = [n for n in model.graph.nodes if n.target is interpolate_channels]
    assert sites  # convolution and stream tensors hold whole groups along dim 1
    reference = METHODS["tas"](graph, TasConfig(), {"flops": 0.5})
    with torch.no_grad():
        for m in (method, reference):
            m.choices.logits.copy_(torch.arange(len(graph.groups) * 8.0).view(-1, 8) % 5)
            m.depth.logits.zero_()
    torch.testing.assert_close(graph.run(model.eval()), graph.run(reference.prepare().eval()))
    model.train()
    model(torch.randn(4, 3, 16, 16)).sum().backward()
    assert bool((method.choices.logits.grad != 0).any())
    with pytest.raises(cascomp.ConfigError, match="alignment"):
        TasConfig(alignment="pool")

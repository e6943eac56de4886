"""Search machinery: FiGS gates and expected cost, budget projection, target control, distillation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import cascomp
from cascomp.config import CompressConfig, Target
from cascomp.methods import FigsConfig
from cascomp.errors import ConfigError, SearchError
from cascomp.kernels.channel_gates import ConcreteGates
from cascomp.methods import METHODS
from cascomp.search.budget import PREFERRED_MULTIPLES, fit_preferring_multiples, fit_widths, target_ratios
from cascomp.search.control import PenaltyController, scheduled_target
from cascomp.train.distill import distillation_loss
from tests.models import ZOO, example_inputs
from tests.search_fixtures import TinyNet

# Not the LayerNorm models: gates do not re-mask normalisation statistics (see InsertChannelGatesPass).
GATED_MODELS = ["resnet_basic", "mobilenet_v2", "mobilenet_v3", "shufflenet_v2", "densenet", "unet"]


def _figs(graph, **config):
    return METHODS["figs"](graph, FigsConfig(**config))


def _set_gates(method, graph, plan) -> None:
    """Logits of ±50: keep-probabilities of exactly 0 or 1 (in float32) that match `plan`."""
    kept = plan.kept_channels(graph)
    with torch.no_grad():
        method.gates.logits.copy_(torch.where(kept, 50.0, -50.0))


@pytest.mark.parametrize("name", GATED_MODELS)
def test_hard_gates_compute_what_the_masked_reference_computes(name):
    graph = cascomp.trace(ZOO[name].build(), example_inputs(name))
    plan = cascomp.Plan.random(graph, 0.5, seed=1)
    method = _figs(graph)
    search_model = method.prepare().eval()
    _set_gates(method, graph, plan)
    expected = graph.run(cascomp.mask_model(graph, plan))
    got = graph.run(search_model)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_gate_pass_structure_and_the_input_graph_untouched():
    graph = cascomp.trace(TinyNet(), torch.randn(2, 1, 8, 8))
    before = [n.op for n in graph.gm.graph.nodes]
    search_model = _figs(graph).prepare()
    assert [n.op for n in graph.gm.graph.nodes] == before
    gate_calls = [n for n in search_model.graph.nodes if n.op == "call_module" and n.target == "cascomp_gates"]
    gated = [n for n in search_model.graph.nodes if getattr(n.target, "__name__", "") == "apply_gate"]
    assert len(gate_calls) == 1 and len(gated) >= len(graph.groups)
    assert not any(n.op == "placeholder" for n in list(search_model.graph.nodes)[len(graph.groups) + 2:])


@pytest.mark.parametrize("name", ["resnet_basic", "vit"])
def test_expected_cost_is_the_real_cost_at_zero_one_probabilities(name):
    graph = cascomp.trace(ZOO[name].build(), example_inputs(name))
    plan = cascomp.Plan.random(graph, 0.4, seed=3)
    method = _figs(graph)
    _set_gates(method, graph, plan)
    expected, real, baseline = method.penalty(), graph.cost(plan), graph.cost()
    assert float(expected["flops"].detach()) == pytest.approx(real.flops / baseline.flops, rel=1e-5)
    assert float(expected["params"].detach()) == pytest.approx(real.params / baseline.params, rel=1e-5)
    decision = method.decide(graph.gm)
    fractions = decision.family(1.0)  # whole groups at s = 1 ...
    assert all(fractions[g.name] == 1.0 for g in graph.groups)
    for group in graph.groups:  # ... and the most probable channels rank first
        top = torch.argsort(decision.scores[group.name], descending=True)[:len(plan.keep[group.name])]
        assert sorted(top.tolist()) == list(plan.keep[group.name])


def test_gradient_reaches_every_logit():
    torch.manual_seed(0)  # the share of channels a ReLU leaves dead on random weights varies with the draw
    graph = cascomp.trace(TinyNet(), torch.randn(2, 1, 8, 8))
    method = _figs(graph, temperature=1.0)  # a soft relaxation, so the task loss reaches every gate at once
    model = method.prepare().train()
    loss = F.cross_entropy(model(torch.randn(16, 1, 8, 8)), torch.randint(0, 4, (16,)))
    (task_gradient,) = torch.autograd.grad(loss, method.gates.logits)
    assert float((task_gradient != 0).float().mean()) > 0.9
    (cost_gradient,) = torch.autograd.grad(method.penalty()["flops"], method.gates.logits)
    assert bool((cost_gradient > 0).all())  # keeping a channel always costs


@pytest.mark.parametrize("method", ["figs", "l1", "uniform"])
@pytest.mark.parametrize("name", ["resnet_basic", "mobilenet_v2", "inception", "vit"])
def test_projection_lands_within_one_percent_below_the_target(method, name):
    graph = cascomp.trace(ZOO[name].build(), example_inputs(name))
    goals = target_ratios(graph, (Target.parse("flops=0.33"),))
    decision = METHODS[method](graph, CompressConfig(method=method).method_config).decide(graph.gm)
    fit = fit_widths(graph, decision.scores, decision.family, goals)
    assert 0.33 * 0.99 <= fit.reached["flops"] <= 0.33
    assert fit.within()["flops"]
    assert graph.cost(fit.plan).flops / graph.cost().flops == pytest.approx(fit.reached["flops"])


def test_two_targets_both_hold():
    graph = cascomp.trace(ZOO["resnet_basic"].build(), example_inputs("resnet_basic"))
    goals = target_ratios(graph, (Target.parse("flops=0.5"), Target.parse("params=0.3")))
    decision = METHODS["uniform"](graph, None).decide(graph.gm)
    fit = fit_widths(graph, decision.scores, decision.family, goals)
    assert fit.reached["flops"] <= 0.5 and fit.reached["params"] <= 0.3
    assert any(fit.within().values())  # the binding target is hit within 1 %


def _lands(graph, decision, goals, multiple) -> bool:
    try:
        return any(fit_widths(graph.with_width_multiple(multiple), decision.scores, decision.family, goals).within().values())
    except SearchError:
        return False


@pytest.mark.parametrize("model, inputs, expected", [(lambda: ZOO["resnet_basic"].build(), example_inputs("resnet_basic"), 8),
                                                     (TinyNet, torch.randn(2, 1, 8, 8), 1)])
def test_auto_widths_take_the_largest_multiple_that_lands_the_budget(model, inputs, expected):
    torch.manual_seed(0)
    graph = cascomp.trace(model(), inputs)
    decision = METHODS["uniform"](graph, None).decide(graph.gm)
    goals = target_ratios(graph, (Target.parse("flops=0.5"),))
    view, fit = fit_preferring_multiples(graph, decision.scores, decision.family, goals)
    multiple = view.constraints.round_to
    assert multiple == expected and fit.within()["flops"]
    assert all(width % multiple == 0 or width == graph.group(name).size for name, width in fit.widths.items())
    fit.plan.validate(view)
    assert not any(_lands(graph, decision, goals, larger) for larger in PREFERRED_MULTIPLES if larger > multiple)
    assert graph.constraints.round_to == 1 and view.gm is graph.gm  # a view: the traced graph is untouched


def test_a_given_width_multiple_is_a_hard_rule():
    torch.manual_seed(0)
    graph = cascomp.trace(TinyNet(), torch.randn(2, 1, 8, 8))
    decision = METHODS["uniform"](graph, None).decide(graph.gm)
    goals = target_ratios(graph, (Target.parse("flops=0.5"),))
    view, fit = fit_preferring_multiples(graph, decision.scores, decision.family, goals, multiples=(8,))
    assert view.constraints.round_to == 8 and not fit.within()["flops"] and fit.reached["flops"] <= 0.5
    assert all(width % 8 == 0 or width == graph.group(name).size for name, width in fit.widths.items())


def test_targets_below_the_floor_are_refused_naming_it():
    graph = cascomp.trace(TinyNet(), torch.randn(2, 1, 8, 8), min_keep=4)
    with pytest.raises(SearchError, match=r"floor of 0.[0-9]+.*lower --min-keep \(now 4\)"):
        target_ratios(graph, (Target.parse("flops=0.01"),))
    rounded = cascomp.trace(TinyNet(), torch.randn(2, 1, 8, 8), round_to=8)
    with pytest.raises(SearchError, match=r"lower --round-to \(now 8; 1 allows any width\)$"):
        target_ratios(rounded, (Target.parse("flops=0.01"),))
    absolute = Target.parse("flops=20K")
    assert absolute.absolute and absolute.value == 20e3


@pytest.mark.parametrize("text, message", [("flops=1.5", "must be below 1"), ("energy=0.5", "unknown target"),
                                           ("flops", "METRIC=VALUE"), ("flops=-1", "must be positive"), ("flops=5", "needs a suffix")])
def test_bad_targets(text, message):
    with pytest.raises(ConfigError, match=message):
        Target.parse(text)


def test_config_round_trips_and_rejects_mistakes():
    config = CompressConfig(method="figs", targets=("flops=0.33", "params=2M"), search_epochs=1)
    assert CompressConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown method 'darts'"):
        CompressConfig(method="darts")
    with pytest.raises(ConfigError, match="one target"):
        CompressConfig(targets=("flops=0.3", "flops=0.4"))
    assert CompressConfig().round_to == "auto" and CompressConfig.from_dict(CompressConfig(round_to=4).to_dict()).round_to == 4
    for bad in (0, -8, 2.5, "eight", True):
        with pytest.raises(ConfigError, match="round_to must be"):
            CompressConfig(round_to=bad)


def test_controller_asks_for_the_gap_and_nothing_under_target():
    controller = PenaltyController()
    near = controller.weight(0.55, 0.5, lr=0.1, squared_gradient=0.01)
    far = PenaltyController().weight(0.9, 0.5, lr=0.1, squared_gradient=0.01)
    assert far > near > 0
    assert PenaltyController().weight(0.55, 0.5, lr=0.1, squared_gradient=0.02) == pytest.approx(near / 2)
    under = PenaltyController()
    assert [under.weight(0.3, 0.5, lr=0.1, squared_gradient=0.01) for _ in range(5)] == [0.0] * 5
    assert scheduled_target(0.9, 0.3, 0.0) == pytest.approx(0.9)
    assert scheduled_target(0.9, 0.3, 1.0) == pytest.approx(0.3)


def test_distillation_loss():
    student, teacher = torch.randn(8, 5), torch.randn(8, 5)
    labels = torch.randint(0, 5, (8,))
    assert torch.allclose(distillation_loss(student, teacher, labels, temperature=4, weight=0),
                          F.cross_entropy(student, labels))
    soft = F.kl_div(F.log_softmax(student / 4, 1), F.softmax(teacher / 4, 1), reduction="batchmean")
    mixed = 0.1 * F.cross_entropy(student, labels) + 0.9 * 16 * soft
    assert torch.allclose(distillation_loss(student, teacher, labels, temperature=4, weight=0.9), mixed, atol=1e-6)


def test_expected_estimator_draws_bernoulli_gates_with_the_mean_derivative():
    from cascomp.kernels.channel_gates import ConcreteGates
    torch.manual_seed(0)
    gates = ConcreteGates((4, 3), init_logit=0.0, estimator="expected").train()
    with torch.no_grad():
        gates.logits.copy_(torch.tensor([-2.0, -0.5, 0.5, 2.0, 1.0, 0.0, -1.0]))
    draws = torch.stack([gates()[1:].detach() for _ in range(4000)])
    assert set(draws.unique().tolist()) == {0.0, 1.0}  # hard 0/1 forward values, as at tau -> 0
    assert torch.allclose(draws.mean(0), gates.probabilities().detach(), atol=0.03)
    weights = torch.arange(1.0, 8.0)
    (gradient,) = torch.autograd.grad((gates()[1:] * weights).sum(), gates.logits)
    p = gates.probabilities().detach()
    assert torch.allclose(gradient, weights * p * (1 - p))  # every gate gets d E[g] / d logit, every step


@pytest.mark.parametrize("field, value", [("estimator", "reinforce"), ("cost_balance", "even"),
                                          ("logit_optimizer", "rmsprop")])
def test_figs_config_refuses_unknown_choices(field, value):
    with pytest.raises(ConfigError, match=f"FigsConfig.{field} must be one of"):
        FigsConfig(**{field: value})


def test_controller_tracks_the_annealed_target_without_overshooting_the_budget():
    # a first-order plant: the expected ratio falls by what is asked, and the task loss pulls channels back
    controller, ratio, start, budget, steps = PenaltyController(), 0.9, 0.9, 0.33, 160
    trail = []
    for step in range(steps):
        now = scheduled_target(start, budget, step / steps)
        goal = scheduled_target(start, budget, (step + 1) / steps)
        asked = controller.weight(ratio, goal, lr=1.0, squared_gradient=1.0, scheduled_decrease=now - goal)
        ratio = ratio - asked + 0.002
        trail.append(ratio)
    assert min(trail) > budget - 0.01  # no plunge below the budget when the annealing ends
    assert trail[-1] == pytest.approx(budget, abs=0.005)


@pytest.mark.parametrize("method, epochs, split", [
    ("figs", 2, (1, 1)), ("figs", 6, (3, 3)), ("figs", 1, (0, 1)), ("l1", 2, (0, 2)), ("sensitivity", 2, (0, 2)),
])
def test_a_total_epoch_budget_is_split_by_the_method(method, epochs, split):
    config = CompressConfig(method=method, epochs=epochs)
    assert (config.search_epochs, config.finetune_epochs) == split
    assert CompressConfig.from_dict(config.to_dict()) == config


def test_the_epoch_budget_with_one_part_given_and_its_mistakes():
    assert CompressConfig(epochs=4, search_epochs=1).finetune_epochs == 3
    assert CompressConfig(epochs=4, finetune_epochs=4).search_epochs == 0
    assert (CompressConfig().search_epochs, CompressConfig().finetune_epochs) == (3, 3)
    assert CompressConfig(method="figs", epochs=4, method_config=FigsConfig(search_share=0.25)).search_epochs == 1
    with pytest.raises(ConfigError, match="add up to"):
        CompressConfig(epochs=4, search_epochs=1, finetune_epochs=1)
    with pytest.raises(ConfigError, match="epochs must be a whole number"):
        CompressConfig(epochs=0)
    with pytest.raises(ConfigError, match="finetune_epochs must be"):
        CompressConfig(epochs=2, search_epochs=3)


def test_concrete_gates_read_the_temperature_and_expected_gates_do_not():
    torch.manual_seed(0)
    sharp = ConcreteGates((64,), init_logit=0.5, temperature=1e-3, estimator="concrete").train()()
    soft = ConcreteGates((64,), init_logit=0.5, temperature=100.0, estimator="concrete").train()()
    assert ((sharp[1:] < 0.01) | (sharp[1:] > 0.99)).float().mean() > 0.95  # tau -> 0: nearly 0/1 draws
    assert ((soft[1:] - 0.5).abs() < 0.05).all()  # tau large: every gate near sigmoid(0) = 0.5
    hard = ConcreteGates((64,), init_logit=0.5, temperature=100.0, estimator="expected").train()()
    assert set(hard[1:].detach().unique().tolist()) <= {0.0, 1.0}


def test_raw_cost_balance_and_sgd_logits_are_not_ignored():
    graph = cascomp.trace(ZOO["resnet_basic"].build(), example_inputs("resnet_basic"))
    gradient = torch.linspace(0.1, 2.0, sum(g.size for g in graph.groups))
    raw = _figs(graph, cost_balance="raw").cost_direction([gradient])[0]
    balanced = _figs(graph).cost_direction([gradient])[0]
    assert torch.equal(raw, gradient) and not torch.allclose(balanced, gradient)
    start = 0
    for group in graph.groups:  # balanced: every group's mean push is the overall mean
        assert float(balanced[start:start + group.size].abs().mean()) == pytest.approx(float(gradient.mean()))
        start += group.size
    sgd, adam = _figs(graph, logit_optimizer="sgd", logit_lr=0.3), _figs(graph)
    assert type(sgd.arch_optimizer()) is torch.optim.SGD and sgd.arch_optimizer().defaults["lr"] == 0.3
    assert type(adam.arch_optimizer()) is torch.optim.Adam and adam.arch_optimizer().defaults["eps"] == 1.0


def test_figs_removes_a_block_whose_gates_keep_under_one_channel():
    """A removable group (a residual branch) whose gates are all off is proposed at width 0 and removed with
    its block; a group that may not go keeps its minimum width."""
    graph = cascomp.trace(TinyNet(), torch.randn(2, 1, 8, 8))
    (branch,) = graph.depth.removable
    method = _figs(graph)
    off = {branch: ()}
    _set_gates(method, graph, cascomp.Plan({**cascomp.Plan.full(graph).keep, **off}))
    decision = method.decide(graph.gm)
    assert decision.family(1.0)[branch] == 0.0 and decision.family(0.5)[branch] == 0.0
    goals = {"flops": graph.cost(cascomp.Plan({**cascomp.Plan.full(graph).keep, **off})).flops / graph.cost().flops}
    fit = fit_widths(graph, decision.scores, decision.family, goals)
    assert fit.widths[branch] == 0 and fit.plan.keep[branch] == ()
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(cascomp.apply_plan(graph, fit.plan)(x), cascomp.mask_model(graph, fit.plan)(x),
                               rtol=1e-5, atol=1e-5)
    other = next(index for index, g in enumerate(graph.groups) if g.name != branch)
    with torch.no_grad():  # every gate of a group that may not go switched off
        method.gates.logits.fill_(50.0)
        method.gates.logits[graph.offsets[other]:graph.offsets[other] + graph.groups[other].size] = -50.0
    assert method.decide(graph.gm).family(1.0)[graph.groups[other].name] > 0.0  # at least its minimum

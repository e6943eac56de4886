"""The sensitivity method: probes, their measurement, the greedy allocation path and its family."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import cascomp
from cascomp.config import CompressConfig, Target
from cascomp.methods import SensitivityConfig
from cascomp.errors import ConfigError
from cascomp.methods import METHODS
from cascomp.search.budget import fit_widths, target_ratios
from cascomp.train.distill import distillation_loss
from cascomp.train.loops import recalibrate_batch_norm, seed_epoch
from cascomp.train.probe import PROBE_PHASE, measure_probes
from cascomp.train.progress import Reporter
from tests.models import ZOO, example_inputs
from tests.search_fixtures import TinyNet, quadrant_task, trained_tiny


def _method(graph, goals=None, **config):
    return METHODS["sensitivity"](graph, SensitivityConfig(**config), goals)


def _measured(graph, sensitive: dict[str, float], **config):
    """A sensitivity method given synthetic measurements: a probe of group g at keep fraction f costs
    sensitive[g] * (1 - f)^2 of loss over the unpruned model's 1.0."""
    method = _method(graph, **config)
    plans = method.probes()
    sizes = {g.name: g.size for g in graph.groups}
    losses = [1.0] + [1.0 + sensitive.get(name, 1.0) * (1 - width / sizes[name]) ** 2 for name, width in method.probed]
    method.take_measurements(losses)
    assert len(losses) == len(plans)
    return method


def test_probes_cut_one_group_at_a_time_to_each_fraction():
    graph = cascomp.trace(TinyNet(), torch.randn(2, 1, 8, 8))
    method = _method(graph, fractions=(0.25, 0.5, 0.75), remove_blocks=False)  # widths only (blocks: below)
    plans = method.probes()
    assert plans[0].widths(graph) == {g.name: g.size for g in graph.groups}
    assert len(plans) == 1 + len(method.probed) == 1 + 3 * len(graph.groups)
    for plan, (name, width) in zip(plans[1:], method.probed):
        widths = plan.widths(graph)
        assert widths[name] == width
        assert all(w == g.size for g in graph.groups if g.name != name for w in [widths[g.name]])
        kept = plan.keep[name]  # the channels with the largest filter norms stay
        top = torch.argsort(method.scores[name], descending=True)[:width]
        assert sorted(kept) == sorted(top.tolist())


def test_the_path_shrinks_the_insensitive_group_first_and_the_family_grows_with_s():
    graph = cascomp.trace(TinyNet(), torch.randn(2, 1, 8, 8))
    names = [g.name for g in graph.groups]
    sensitive, insensitive = names[0], names[1]
    method = _measured(graph, {sensitive: 100.0, insensitive: 0.01}, remove_blocks=False)
    path = method._greedy_path(method._curves())
    sizes = {g.name: g.size for g in graph.groups}
    assert path[0] == sizes
    assert path[1][insensitive] < sizes[insensitive] and path[1][sensitive] == sizes[sensitive]
    costs = [method._cost(widths) for widths in path]
    assert all(b < a for a, b in zip(costs, costs[1:]))  # every step saves cost
    assert all(sum(x != y for x, y in zip(a.values(), b.values())) == 1 for a, b in zip(path, path[1:]))
    assert path[-1] == {g.name: graph.constraints.smallest(g.size) for g in graph.groups}
    family = method.decide(graph.gm).family
    members = [family(s / 20) for s in range(21)]
    assert all(members[i][n] <= members[i + 1][n] + 1e-12 for i in range(20) for n in names)
    assert all(abs(members[-1][n] - 1.0) < 1e-9 for n in names)


def test_noisy_curves_are_made_monotone():
    graph = cascomp.trace(TinyNet(), torch.randn(2, 1, 8, 8))
    method = _method(graph, fractions=(0.25, 0.5, 0.75))
    method.probes()
    # every probe measured with a loss below the unpruned model, then above, then below again
    method.take_measurements([1.0] + [1.0 + (0.3 if i % 2 else -0.2) for i in range(len(method.probed))])
    for curve in method._curves().values():
        increases = [loss for _, loss in curve]
        assert increases[0] == 0.0 and all(b >= a for a, b in zip(increases, increases[1:]))


# Not the tiny ViT: its 4-head groups are too coarse for the projection's trades to land within 1 % after this
# synthetic path shrinks the heads to one (0.3255); the real allocation never drives a group that far here.
@pytest.mark.parametrize("name", ["resnet_basic", "mobilenet_v2", "inception"])
def test_projection_of_the_path_lands_within_one_percent(name):
    graph = cascomp.trace(ZOO[name].build(), example_inputs(name))
    goals = target_ratios(graph, (Target.parse("flops=0.33"),))
    method = _measured(graph, {g.name: 1.0 + index % 3 for index, g in enumerate(graph.groups)})
    method.goals = goals
    decision = method.decide(graph.gm)
    fit = fit_widths(graph, decision.scores, decision.family, goals)
    assert 0.33 * 0.99 <= fit.reached["flops"] <= 0.33


def test_params_target_steers_the_path_by_params():
    graph = cascomp.trace(ZOO["resnet_basic"].build(), example_inputs("resnet_basic"))
    equal = {g.name: 1.0 for g in graph.groups}
    by_flops = _measured(graph, equal)
    by_params = _measured(graph, equal)
    by_params.goals = {"params": 0.5}
    assert by_flops._greedy_path(by_flops._curves())[1] != by_params._greedy_path(by_params._curves())[1]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    spec = quadrant_task(tmp_path_factory.mktemp("data") / "quadrants.npz", samples=640)
    data = cascomp.load_data(spec, batch_size=64, seed=0)
    return data, trained_tiny(data)


class _Untouchable(torch.utils.data.Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, index):
        raise AssertionError("probes must not read the validation split")


def test_a_probe_is_the_distillation_loss_after_recalibration_on_fixed_training_batches(task):
    data, model = task
    graph = cascomp.trace(model, next(iter(data.val))[0][:1])
    config = CompressConfig(method="sensitivity", targets=("flops=0.5",), seed=3)
    plan = cascomp.Plan.random(graph, 0.5, seed=0)
    rewrite = lambda p: cascomp.apply_plan(graph, p)  # noqa: E731
    blind = dataclasses.replace(data, val=torch.utils.data.DataLoader(_Untouchable()))
    result = measure_probes([cascomp.Plan.full(graph), plan], rewrite, graph.gm, blind, config, Reporter(False),
                            calibration_batches=2, scoring_batches=3)
    again = measure_probes([plan], rewrite, graph.gm, blind, config, Reporter(False), calibration_batches=2,
                           scoring_batches=3)
    assert again.losses[0] == result.losses[1]  # the same batches every time
    seed_epoch(data, 3, PROBE_PHASE, 0)
    batches = [batch for _, batch in zip(range(5), data.train)]
    small = cascomp.apply_plan(graph, plan)
    recalibrate_batch_norm(small, batches[:2], batches=2)
    small.eval()
    with torch.no_grad():
        losses = [float(distillation_loss(small(x), graph.gm(x), y, temperature=4.0, weight=0.9)) * len(y)
                  for x, y in batches[2:]]
    assert result.losses[1] == pytest.approx(sum(losses) / sum(len(y) for _, y in batches[2:]), rel=1e-5)
    assert result.losses[1] > result.losses[0]  # half the channels at random hurt
    assert result.images == 2 * sum(len(y) for _, y in batches)


@pytest.mark.parametrize("changes, message", [
    ({"fractions": ()}, "fractions"), ({"fractions": (0.5, 1.0)}, "fractions"),
    ({"calibration_batches": 0}, "calibration_batches"), ({"scoring_batches": 1.5}, "scoring_batches"),
])
def test_sensitivity_config_refuses_mistakes(changes, message):
    with pytest.raises(ConfigError, match=message):
        SensitivityConfig(**changes)


def test_remove_blocks_probes_removable_groups_at_width_zero_and_the_projection_removes_them():
    graph = cascomp.trace(TinyNet(), torch.randn(2, 1, 8, 8))
    removable = graph.depth.removable
    assert removable and len(removable) < len(graph.groups)
    assert SensitivityConfig().remove_blocks  # the default
    plain = _method(graph, fractions=(0.5,), remove_blocks=False)
    plain.probes()
    method = _method(graph, fractions=(0.5,), remove_blocks=True)
    plans = method.probes()
    assert len(plans) == 1 + len(plain.probed) + len(removable)
    assert {name for name, width in method.probed if width == 0} == removable
    for plan, (name, width) in zip(plans[1:], method.probed):
        if width == 0:
            assert plan.keep[name] == () and plan.widths(graph)[name] == 0
    # removing a block costs no loss, narrowing anything costs much: the path removes the blocks first
    method.take_measurements([1.0] + [1.0 if width == 0 else 6.0 for _, width in method.probed])
    family = method.decide(graph.gm).family
    assert all(family(0.0)[name] == 0.0 for name in removable)
    assert all(family(0.0)[g.name] > 0.0 for g in graph.groups if g.name not in removable)
    without = cascomp.Plan({**cascomp.Plan.full(graph).keep, **{name: () for name in removable}})
    goals = {"flops": graph.cost(without).flops / graph.cost().flops}  # exactly the cost of removing them
    fit = fit_widths(graph, method.scores, family, goals)
    assert all(fit.widths[name] == 0 for name in removable) and fit.reached["flops"] <= goals["flops"] + 1e-12
    small, masked = cascomp.apply_plan(graph, fit.plan), cascomp.mask_model(graph, fit.plan)
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(small(x), masked(x), rtol=1e-5, atol=1e-5)  # pruned ≡ masked
    assert cascomp.trace(small, x).cost().flops == graph.cost(fit.plan).flops  # the cost model priced it exactly


def test_a_zero_fraction_is_the_minimum_width_where_the_branch_may_not_go():
    graph = cascomp.trace(TinyNet(), torch.randn(2, 1, 8, 8))
    kept = [g for g in graph.groups if g.name not in graph.depth.removable]
    assert kept
    fit = fit_widths(graph, {g.name: torch.ones(g.size) for g in graph.groups},
                     lambda s: {g.name: 0.0 if s == 0 else 1.0 for g in graph.groups}, {"flops": 1.0})
    assert fit.widths == {g.name: g.size for g in graph.groups}  # the widest member fits: nothing removed
    from cascomp.search.budget import _rounded
    rounded = _rounded(graph, {g.name: 0.0 for g in graph.groups})
    assert all(rounded[g.name] == graph.constraints.smallest(g.size) for g in kept)
    assert all(rounded[name] == 0 for name in graph.depth.removable)

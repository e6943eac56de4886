"""TAS (issue 17, part 2, widths): the width choices' sampling, gradients, keep-probabilities and evaluation
architecture; the expected cost exact at one-hot distributions; shared widths across a group's tensors (the
search model with settled choices computes the masked reference); the tolerance loss; the schedule; a run."""

from __future__ import annotations

import pytest
import torch

import cascomp
from cascomp.methods import METHODS, TasConfig
from cascomp.methods.tas import tolerance_loss
from cascomp.search.budget import fit_widths
from tests.models import ZOO, example_inputs
from tests.search_fixtures import TinyNet, quadrant_task, quick_config, trained_tiny


def _tas(graph, **config):
    return METHODS["tas"](graph, TasConfig(**config), {"flops": 0.5})


def _settle(method, seed: int) -> list[int]:
    """Logits of ±30 on a random candidate per group (and per stage, a random depth): one-hot distributions;
    returns the chosen width indices."""
    generator = torch.Generator().manual_seed(seed)
    logits = method.choices.logits
    chosen = torch.randint(0, logits.shape[1], (logits.shape[0],), generator=generator)
    with torch.no_grad():
        logits.fill_(-30.0)
        logits[torch.arange(logits.shape[0]), chosen] = 30.0
        if method.depth is not None:
            depth = method.depth
            depth.logits.fill_(-30.0)
            for stage, valid in enumerate(depth.valid):
                candidates = valid.nonzero().flatten()
                depth.logits[stage, candidates[torch.randint(len(candidates), (), generator=generator)]] = 30.0
    return chosen.tolist()


def _settled_widths(graph, method) -> dict[str, int]:
    """The settled architecture's widths, 0 for the groups of the blocks the settled depths remove."""
    removed = method.space.removed()
    return {g.name: 0 if g.name in removed else w for g, w in zip(graph.groups, method.choices.most_probable().tolist())}


def test_a_draw_mixes_two_widths_of_each_group_and_the_gradient_reaches_their_logits():
    graph = cascomp.trace(TinyNet(), torch.randn(2, 1, 8, 8))
    method = _tas(graph, fractions=(0.25, 0.5, 0.75, 1.0))
    choices = method.choices.train()
    torch.manual_seed(0)
    table = choices()
    assert table[0] == 1 and table.shape == (1 + graph.channels,)
    gates = table[1:]
    for group, offset in zip(graph.groups, graph.offsets):
        part, rank = gates[offset:offset + group.size], choices.rank[offset:offset + group.size]
        by_rank = part[torch.argsort(rank)]
        assert bool((by_rank[:-1] >= by_rank[1:] - 1e-7).all())  # channels ranked first are kept most
        values = sorted({round(float(v), 6) for v in part.detach()})
        assert values[-1] == pytest.approx(1.0) and len(values) <= 3  # both widths, the wider alone, neither
    (gates * torch.randn_like(gates)).sum().backward()
    assert choices.logits.grad is not None and bool((choices.logits.grad != 0).any(dim=1).all())


def test_keep_probabilities_and_the_evaluation_architecture():
    graph = cascomp.trace(TinyNet(), torch.randn(2, 1, 8, 8))
    choices = _tas(graph).choices
    with torch.no_grad():
        choices.logits.copy_(torch.randn_like(choices.logits))
    p = choices.probabilities()
    expected = torch.stack([(p[choices.group] * (choices.rank[:, None] < choices.widths[choices.group]))[c].sum()
                            for c in range(graph.channels)])
    torch.testing.assert_close(choices.keep_probabilities(), expected)
    widths = choices.most_probable()
    gates = choices.eval()()[1:]
    for index, (group, offset) in enumerate(zip(graph.groups, graph.offsets)):
        assert int(gates[offset:offset + group.size].sum()) == int(widths[index])


@pytest.mark.parametrize("name", ["resnet_basic", "mobilenet_v2", "densenet"])
def test_expected_cost_is_the_exact_cost_at_one_hot_choices(name):
    graph = cascomp.trace(ZOO[name].build(), example_inputs(name))
    method = _tas(graph)
    removed = set()
    for seed in range(4):
        _settle(method, seed)
        widths = _settled_widths(graph, method)
        removed |= {name for name, width in widths.items() if width == 0}
        plan = cascomp.Plan.from_widths(graph, method.scores, widths)
        expected, real, baseline = method.penalty(), graph.cost(plan), graph.cost()
        assert float(expected["flops"].detach()) == pytest.approx(real.flops / baseline.flops, rel=1e-6)
        assert float(expected["params"].detach()) == pytest.approx(real.params / baseline.params, rel=1e-6)
    assert bool(removed) == (method.depth is not None)  # the states removed blocks where depth is searched


@pytest.mark.parametrize("name", ["resnet_basic", "densenet"])
def test_settled_choices_compute_the_masked_reference_so_a_group_s_tensors_share_one_width(name):
    graph = cascomp.trace(ZOO[name].build(), example_inputs(name))
    method = _tas(graph)
    search_model = method.prepare().eval()
    _settle(method, seed=1)
    widths = _settled_widths(graph, method)
    plan = cascomp.Plan.from_widths(graph, method.scores, widths)
    torch.testing.assert_close(graph.run(search_model), graph.run(cascomp.mask_model(graph, plan)),
                               rtol=1e-4, atol=1e-5)
    decision = method.decide(graph.gm)  # export: the most probable widths, projected onto the budget
    goals = {"flops": graph.cost(plan).flops / graph.cost().flops}  # the settled architecture's own cost
    fit = fit_widths(graph, decision.scores, decision.family, goals)
    assert fit.widths == widths and fit.plan == plan


def test_the_tolerance_loss():
    expected = torch.tensor(0.6, requires_grad=True)
    assert float(tolerance_loss(expected, reached=0.51, goal=0.5, tolerance=0.05).detach()) == 0.0  # in the band
    assert float(tolerance_loss(expected, reached=0.49, goal=0.5, tolerance=0.05).detach()) == 0.0
    above = tolerance_loss(expected, reached=0.6, goal=0.5, tolerance=0.05)
    above.backward()
    assert float(above.detach()) == pytest.approx(torch.log(torch.tensor(0.6)).item()) and float(expected.grad) > 0
    expected.grad = None
    below = tolerance_loss(expected, reached=0.4, goal=0.5, tolerance=0.05)
    below.backward()
    assert float(below.detach()) == pytest.approx(-torch.log(torch.tensor(0.6)).item()) and float(expected.grad) < 0


def test_temperature_schedule_and_config_checks():
    graph = cascomp.trace(TinyNet(), torch.randn(2, 1, 8, 8))
    method = _tas(graph)
    method.on_step(0.0)
    assert method.choices.temperature == 10.0
    method.on_step(0.5)
    assert method.choices.temperature == pytest.approx(5.05)
    method.on_step(1.0)
    assert method.choices.temperature == pytest.approx(0.1)
    assert method.bilevel and not method.controlled and not method.keeps_search_weights
    for bad in ({"fractions": (0.5,)}, {"fractions": (0.0, 1.0)}, {"tau_end": 20.0}, {"tolerance": 1.0}):
        with pytest.raises(cascomp.ConfigError, match="TasConfig"):
            TasConfig(**bad)


def test_a_tas_run_lands_the_budget(tmp_path):
    spec = quadrant_task(tmp_path / "quadrants.npz", samples=256)
    data = cascomp.load_data(spec, batch_size=32, seed=0)
    model = trained_tiny(data, epochs=1)
    result = cascomp.compress(model, quick_config(method="tas", search_epochs=2, finetune_epochs=1), data=data,
                              progress=False)
    assert result.report["method"] == "tas" and result.report["targets"]["flops"]["within_1pct"]
    assert len(result.report["search"]["epochs"]) == 2
    assert result.report["search"]["epochs"][-1]["expected_flops"] < 1.0

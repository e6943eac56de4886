"""The survey's sparsifying methods (issue 20): group lasso's ℓ2,1 over every slice of a channel group and its
proximal step, MorphNet's cost weights, its expand and rounds, the strength controller, and runs that land
the budget."""

from __future__ import annotations

import copy

import pytest
import torch

import cascomp
from cascomp.methods import METHOD_CONFIGS, METHODS, GenSynthConfig, GroupLassoConfig, MorphNetConfig, VardropConfig
from cascomp.methods.sparsity import alive_keep, below_cut
from cascomp.search.budget import fit_widths
from cascomp.search.control import StrengthController
from tests.models import ZOO, example_inputs
from tests.search_fixtures import TinyNet, quadrant_task, quick_config, stopped_and_resumed, trained_tiny


def _residual_graph():
    torch.manual_seed(0)
    model = ZOO["resnet_basic"].build().eval()
    return cascomp.trace(model, example_inputs("resnet_basic"))


def _channel_norms_by_hand(graph, model) -> torch.Tensor:
    params = dict(model.named_parameters())
    norms = []
    for group in graph.groups:
        for channel in range(group.size):
            total = sum(float(params[m.param].detach().index_select(m.dim, torch.tensor(m.indices[channel]))
                              .pow(2).sum()) for m in group.members if m.param in params)
            norms.append(total ** 0.5)
    return torch.tensor(norms, dtype=torch.float64)


def test_the_l21_norm_covers_every_slice_of_a_residual_stream_channel():
    graph = _residual_graph()
    method = METHODS["group-lasso"](graph, GroupLassoConfig(), {"flops": 0.5})
    stream = max(graph.groups, key=lambda g: len({m.param.rpartition(".")[0] for m in g.members}))
    assert len({m.param.rpartition(".")[0] for m in stream.members}) >= 4  # convs and norms of several blocks
    by_hand = _channel_norms_by_hand(graph, graph.gm)
    computed = method.slices.squared_norms(graph.gm).double().sqrt()
    torch.testing.assert_close(computed, by_hand, rtol=1e-5, atol=1e-7)
    penalty = method.norm_penalty(graph.gm)
    torch.testing.assert_close(penalty.double(), (method.weight * by_hand).sum(), rtol=1e-5, atol=1e-6)
    model = method.prepare()
    method.norm_penalty(model).backward()  # differentiable: every member of the stream gets a gradient
    params = dict(model.named_parameters())
    assert all(params[m.param].grad is not None and bool(params[m.param].grad.abs().sum() > 0)
               for m in stream.members if m.param in params)


def _scaled_by_hand(graph, model, factors: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every parameter with each channel's slices (in every member of its group) multiplied by its factor."""
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    for group, offset in zip(graph.groups, graph.offsets):
        for member in group.members:
            if member.param not in params:
                continue
            for channel in range(group.size):
                positions = torch.tensor(member.indices[channel])
                tensor = params[member.param]
                tensor.index_copy_(member.dim, positions,
                                   tensor.index_select(member.dim, positions) * float(factors[offset + channel]))
    return params


def test_the_proximal_step_soft_thresholds_the_cut_channels_and_leaves_the_others():
    graph = _residual_graph()
    method = METHODS["group-lasso"](graph, GroupLassoConfig(), {"flops": 0.5})
    model = method.prepare()
    before = method.slices.squared_norms(model).detach().double().sqrt()
    scores, _ = method._scores(model)
    cut = below_cut(graph, method.expected_ratios, scores, {"flops": 0.5})
    assert 0 < int(cut.sum()) < graph.channels
    small = 0.5 * float((before[cut] / method.weight[cut]).min())  # shrinks every cut channel, kills none
    factors = torch.where(cut, 1 - small * method.weight / before, torch.ones_like(before))
    expected = _scaled_by_hand(graph, model, factors)
    method.shrink(model, small, {"flops": 0.5})
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.detach(), expected[name], rtol=1e-5, atol=1e-7)
    method.shrink(model, 1e9, {"flops": 0.5})  # a step larger than every norm: exactly the cut channels go to 0
    expected = _scaled_by_hand(graph, graph.gm, (~cut).double())
    for name, param in model.named_parameters():
        assert torch.equal(param.detach() == 0, expected[name] == 0) or name not in expected
    measured = method.measured_ratios(model)["flops"]
    assert measured <= 0.5 + 1e-9 and measured == pytest.approx(float(method.expected_ratios(
        alive_keep(graph, ~cut, scores))["flops"]))


def test_the_cut_is_the_largest_best_scored_set_within_the_goal():
    graph = _residual_graph()
    method = METHODS["group-lasso"](graph, GroupLassoConfig(), {"flops": 0.4})
    scores = torch.rand(graph.channels, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    cut = below_cut(graph, method.expected_ratios, scores, {"flops": 0.4})
    kept = ~cut
    assert float(method.expected_ratios(alive_keep(graph, kept, scores))["flops"]) <= 0.4
    assert float(scores[kept].min()) >= float(scores[cut].max())  # the best scored are kept
    one_more = kept.clone()
    one_more[torch.argmax(torch.where(cut, scores, torch.full_like(scores, -1.0)))] = True
    assert float(method.expected_ratios(alive_keep(graph, one_more, scores))["flops"]) > 0.4


def test_morphnet_weights_a_channel_by_the_cost_its_alive_neighbours_give_it():
    graph = cascomp.trace(TinyNet(), torch.randn(2, 1, 8, 8))
    method = METHODS["morphnet"](graph, MorphNetConfig(), {"flops": 0.5})
    scores = torch.rand(graph.channels, dtype=torch.float64) + 1.0
    alive = torch.ones(graph.channels, dtype=torch.bool)
    alive[graph.offsets[1]:graph.offsets[1] + graph.groups[1].size // 2] = False  # half the next group dead
    weights = method.cost_weights(alive, scores)
    keep = alive_keep(graph, alive, scores)
    base = float(method.expected_ratios(keep)["flops"])
    removal = []
    for channel in range(graph.channels):  # the cost is multilinear in keep: the derivative is a difference
        without = keep.clone()
        without[channel] = 0.0
        with_ = keep.clone()
        with_[channel] = 1.0
        removal.append(float(method.expected_ratios(with_)["flops"]) - float(method.expected_ratios(without)["flops"]))
    removal = torch.tensor(removal, dtype=torch.float64)
    torch.testing.assert_close(weights, removal / removal.mean(), rtol=1e-6, atol=1e-9)
    assert base < 1.0 and bool((weights > 0).all())


def test_morphnet_expands_every_alive_width_by_one_multiplier_onto_the_budget():
    graph = _residual_graph()
    method = METHODS["morphnet"](graph, MorphNetConfig(), {"flops": 0.5})
    model = method.prepare()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # kill a random half of the norm scales' channels
        dead = torch.rand(graph.channels, generator=generator) < 0.5
        method.slices.scale(model, (~dead).double())
    decision = method.decide(model)
    fit = fit_widths(graph, decision.scores, decision.family, {"flops": 0.5})
    assert fit.within()["flops"]
    _, alive = method._scores(model)
    widths = method.expanded_widths({g.name: alive[o:o + g.size] for g, o in zip(graph.groups, graph.offsets)})
    ratios = [widths[g.name] / max(int(alive[o:o + g.size].sum()), 1) for g, o in zip(graph.groups, graph.offsets)
              if widths[g.name] < g.size and int(alive[o:o + g.size].sum()) >= 4]
    assert ratios and max(ratios) - min(ratios) < 0.6  # one multiplier, up to rounding up


def test_the_strength_rises_above_the_schedule_falls_below_and_stays_bounded():
    controller = StrengthController(start=1.0, rate=0.5)
    assert controller.update({"flops": 0.9}, {"flops": 0.5}) > 1.0
    high = controller.strength
    assert controller.update({"flops": 0.3}, {"flops": 0.5}) < high
    for _ in range(1000):
        controller.update({"flops": 1.0}, {"flops": 0.1})
    assert controller.strength == pytest.approx(1e4)
    restored = StrengthController(start=1.0)
    restored.load_state_dict(controller.state_dict())
    assert restored.strength == controller.strength


@pytest.mark.parametrize("method, options", [("group-lasso", {"initial_strength": 20.0}), ("morphnet", {"rounds": 2, "initial_strength": 20.0}),
                                             ("vardrop", {"initial_strength": 5.0, "lr": 0.5}), ("gensynth", {})])
def test_a_run_lands_the_budget(tmp_path, method, options):
    spec = quadrant_task(tmp_path / "quadrants.npz", samples=256)
    data = cascomp.load_data(spec, batch_size=32, seed=0)
    model = trained_tiny(data, epochs=1)
    config = quick_config(method=method, method_config=METHOD_CONFIGS[method](**options))
    result = cascomp.compress(model, config, data=data, progress=False)
    assert result.report["method"] == method and result.report["targets"]["flops"]["within_1pct"]
    epochs = result.report["search"]["epochs"]
    assert len(epochs) == 2 and epochs[-1]["expected_flops"] < 1.0
    assert (epochs[-1]["lambda_flops"] > 0) == METHODS[method].regularised  # the budget's strength, if any


def test_the_kl_approximation_follows_the_true_kl_and_falls_with_the_noise():
    from cascomp.kernels.channel_noise import kl_divergence
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(2_000_000, generator=generator, dtype=torch.float64)

    def negative_kl_up_to_a_constant(log_alpha: float) -> float:  # Molchanov et al.: 0.5 log α - E log|1 + √α z|
        return 0.5 * log_alpha - float(torch.log(torch.abs(1 + (log_alpha / 2.0 * torch.ones(1, dtype=torch.float64)
                                                                  ).exp() * z)).mean())

    points = [-2.0, 0.0, 2.0]
    approx = kl_divergence(torch.tensor(points, dtype=torch.float64))
    true = torch.tensor([-negative_kl_up_to_a_constant(p) for p in points], dtype=torch.float64)
    torch.testing.assert_close(approx - approx[-1], true - true[-1], atol=0.02, rtol=0)  # the constant cancels
    assert float(kl_divergence(torch.tensor(8.0))) < 0.01  # no information left: no cost
    log_alpha = torch.linspace(-6, 6, 25, dtype=torch.float64, requires_grad=True)
    kl_divergence(log_alpha).sum().backward()
    step = 1e-5
    numeric = (kl_divergence(log_alpha.detach() + step) - kl_divergence(log_alpha.detach() - step)) / (2 * step)
    torch.testing.assert_close(log_alpha.grad, numeric, atol=1e-6, rtol=1e-5)
    assert bool((log_alpha.grad < 0).all())


def test_channel_noise_has_mean_one_and_the_learned_spread_and_drops_above_the_threshold():
    from cascomp.kernels.channel_noise import ChannelNoise
    noise = ChannelNoise(3, init_log_alpha=-2.0, threshold=3.0)
    with torch.no_grad():
        noise.log_alpha.copy_(torch.tensor([-2.0, 0.0, 4.0]))
    torch.manual_seed(0)
    draws = torch.stack([noise.train()()[1:] for _ in range(20000)])
    torch.testing.assert_close(draws.mean(0), torch.ones(3), atol=0.1, rtol=0)
    torch.testing.assert_close(draws.std(0), torch.tensor([-2.0, 0.0, 4.0]).mul(0.5).exp(), rtol=0.05, atol=0)
    assert noise.eval()().tolist() == [1.0, 1.0, 1.0, 0.0]


def test_vardrop_keeps_the_least_noisy_channels_and_counts_the_way_to_the_threshold():
    graph = _residual_graph()
    method = METHODS["vardrop"](graph, VardropConfig(), {"flops": 0.5})
    log_alpha = torch.randn(graph.channels, generator=torch.Generator().manual_seed(0)) * 3
    with torch.no_grad():
        method.noise.log_alpha.copy_(log_alpha)
    decision = method.decide(graph.gm)
    fit = fit_widths(graph, decision.scores, decision.family, {"flops": 0.5})
    assert fit.within()["flops"]
    for group, offset in zip(graph.groups, graph.offsets):
        kept = set(fit.plan.keep.get(group.name, range(group.size)))
        own = log_alpha[offset:offset + group.size]
        if kept and len(kept) < group.size:  # every kept channel is less noisy than every dropped one
            assert max(float(own[c]) for c in kept) <= min(float(own[c]) for c in range(group.size) if c not in kept)
    with torch.no_grad():
        method.noise.log_alpha.fill_(-4.0)
    assert method.measured_ratios(graph.gm)["flops"] == pytest.approx(1.0)
    with torch.no_grad():
        method.noise.log_alpha.fill_(-0.5)  # half way from the start to the threshold: about half of each width
    assert 0.15 < method.measured_ratios(graph.gm)["flops"] < 0.4


def test_the_inquisitor_s_importance_is_the_gradient_of_the_loss_at_each_gate():
    graph = cascomp.trace(TinyNet(), torch.randn(2, 1, 8, 8))
    method = METHODS["gensynth"](graph, GenSynthConfig(), {"flops": 0.5})
    model = method.prepare().train()
    x, y = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1] * 4)
    loss = lambda: torch.nn.functional.cross_entropy(model(x), y)  # noqa: E731
    loss().backward()
    importance = method.mask.take_importance()
    assert float(method.mask.importance.abs().sum()) == 0.0  # taken: reset
    step = 1e-3
    for channel in (0, graph.channels // 2, graph.channels - 1):
        with torch.no_grad():
            method.mask.keep[channel] = 1 + step
            up = float(loss())
            method.mask.keep[channel] = 1 - step
            down = float(loss())
            method.mask.keep[channel] = 1.0
        assert float(importance[channel]) == pytest.approx(abs(up - down) / (2 * step), rel=2e-2, abs=1e-5)


def test_the_generator_shrinks_monotonically_to_the_target():
    graph = _residual_graph()
    method = METHODS["gensynth"](graph, GenSynthConfig(iterations=4), {"flops": 0.4})
    method.prepare()
    generator = torch.Generator().manual_seed(0)
    previous = torch.ones(graph.channels, dtype=torch.bool)
    for step in range(101):
        method.mask.importance.add_(torch.rand(graph.channels, generator=generator, dtype=torch.float64))
        method.on_step(step / 100)
        now = method.mask.keep > 0
        assert bool((now <= previous).all())  # a subset of the architecture before
        previous = now
    costs = [stage["flops"] for stage in method.history]
    assert len(costs) == 4 and costs == sorted(costs, reverse=True)
    assert costs[-1] <= 0.4 and all(c <= 1 - 0.6 * k / 4 + 1e-9 for k, c in enumerate(costs, 1))
    fit = fit_widths(graph, *_decided(method, graph), {"flops": 0.4})
    assert fit.within()["flops"]


def _decided(method, graph):
    decision = method.decide(method.prepare())
    return decision.scores, decision.family


@pytest.mark.parametrize("method, options", [("group-lasso", {"initial_strength": 20.0}),
                                             ("morphnet", {"rounds": 2, "initial_strength": 20.0}),
                                             ("vardrop", {"initial_strength": 5.0, "lr": 0.5}), ("gensynth", {})])
def test_a_search_stopped_after_its_first_epoch_resumes_to_the_same_plan(tmp_path, method, options):
    spec = quadrant_task(tmp_path / "quadrants.npz", samples=256)
    data = cascomp.load_data(spec, batch_size=32, seed=0)
    model = trained_tiny(data, epochs=1)
    config = quick_config(method=method, method_config=METHOD_CONFIGS[method](**options), finetune_epochs=0)
    straight, resumed = stopped_and_resumed(model, config, data, tmp_path, ("search", 1))
    assert resumed.plan == straight.plan
    untimed = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
    assert untimed(resumed.report["search"]["epochs"]) == untimed(straight.report["search"]["epochs"])


# -- gensynth's accuracy tolerance (--target drop) and held-out inquisition ------------------------------------
def test_the_drop_target_is_points_of_top1_and_only_a_tolerant_searching_method_takes_it(tmp_path, capsys):
    from cascomp import cli
    assert cascomp.Target.parse("drop=0.5") == cascomp.Target(metric="drop", value=0.5)
    assert not cascomp.Target.parse("drop=1.5").is_cost and cascomp.Target.parse("flops=0.5").is_cost
    for text in ("drop=0.5M", "drop=100", "drop=-1"):
        with pytest.raises(cascomp.ConfigError, match="drop"):
            cascomp.Target.parse(text)
    config = cascomp.CompressConfig(method="gensynth", targets=("drop=0.5", "flops=0.5"), epochs=2)
    assert config.drop == 0.5 and cascomp.CompressConfig.from_dict(config.to_dict()) == config
    with pytest.raises(cascomp.ConfigError, match="not understood by method 'l1'; use --method gensynth"):
        cascomp.CompressConfig(method="l1", targets=("drop=0.5",))
    with pytest.raises(cascomp.ConfigError, match="needs a search"):
        cascomp.CompressConfig(method="gensynth", targets=("drop=0.5",), epochs=1)
    assert cli.main(["compress", str(tmp_path / "m.pt"), "--method", "figs", "--target", "drop=0.5",
                     "--data", "digits", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not understood by method 'figs'" in err[0]


def test_the_held_out_split_is_disjoint_seeded_and_the_inquiry_moves_nothing():
    from torch.utils.data import DataLoader, TensorDataset
    from cascomp.train.device import Placement
    from cascomp.train.held_out import held_out_count, inquire, split_held_out
    data = TensorDataset(torch.randn(50, 1, 8, 8), torch.randint(0, 4, (50,)))
    loader = DataLoader(data, batch_size=8)
    rest, held = split_held_out(loader, held_out_count(2048, 50), seed=3)
    assert len(held.dataset) == 10 and len(rest.dataset) == 40  # at most a fifth of the split
    assert set(held.dataset.indices).isdisjoint(rest.dataset.indices)
    assert held.dataset.indices == split_held_out(loader, 10, seed=3)[1].dataset.indices
    assert held.dataset.indices != split_held_out(loader, 10, seed=4)[1].dataset.indices
    model = TinyNet().train()
    before = copy.deepcopy(model.state_dict())
    inquiry = inquire(model, held, Placement.of(cascomp.CompressConfig(device="cpu")))
    x, y = data.tensors[0][held.dataset.indices], data.tensors[1][held.dataset.indices]
    with torch.no_grad():
        expected = float((model.eval()(x).argmax(1) == y).float().mean())
    assert inquiry.images == 10 and inquiry.top1 == pytest.approx(expected)
    model.train()
    assert all(p.grad is None for p in model.parameters()) and model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # eval mode: no statistic moved


def _scripted(method, top1s, held_out: bool = True):
    """Drive `method` by hand over a search: each inquiry (or, without held-out samples, each training step)
    adds random importance to the gates, as gradients would, and the validation split answers the next of
    `top1s` (the first is the baseline's)."""
    from cascomp.train.held_out import Inquiry
    answers, generator = iter(top1s), torch.Generator().manual_seed(0)

    def gradients():
        method.mask.importance.add_(torch.rand(method.graph.channels, generator=generator, dtype=torch.float64)
                                    * float(method.mask.measuring))

    def inquire():
        gradients()
        return Inquiry(top1=0.5, loss=0.0, images=100, seconds=0.0)

    method.prepare()
    method.use_held_out(inquire if held_out else None, lambda: next(answers))
    keeps, previous = {}, torch.ones(method.graph.channels, dtype=torch.bool)
    for step in range(201):
        if not held_out:
            gradients()
        method.on_step(step / 200)
        now = method.mask.keep > 0
        assert bool((now <= previous).all()) or int(getattr(method.model, "cascomp_gensynth_stopped"))
        keeps[int(getattr(method.model, "cascomp_gensynth_stage"))] = now.clone()
        previous = now
    return keeps


@pytest.mark.parametrize("held_out", [True, False])
def test_the_tolerance_loop_stops_back_at_the_last_architecture_that_held_it(held_out):
    graph = _residual_graph()
    method = METHODS["gensynth"](graph, GenSynthConfig(iterations=6, step=0.2), {}, drop=1.0)
    # baseline 90 %; the stage-0 network after training, stages 1 and 2 within a point; stage 3 two points under
    keeps = _scripted(method, [0.90, 0.905, 0.899, 0.892, 0.88], held_out=held_out)
    costs = [row["flops"] for row in method.history]
    assert len(costs) == 3 and all(c <= 0.8 ** k + 1e-9 for k, c in enumerate(costs, 1))  # stops after stage 3
    assert torch.equal(method.mask.keep > 0, keeps[2])  # back at stage 2's architecture
    summary = method.summary()
    assert summary["tolerance"] == {"drop": 1.0, "held": True, "stage": 2, "stopped": True,
                                    "baseline_val_top1": 0.90, "val_drop": pytest.approx(0.8)}
    assert [row["stage"] for row in summary["inquiries"]] == [0, 0, 1, 2, 3]
    goals = method.projection_goals({})
    assert set(goals) == {"flops"} and goals["flops"] == pytest.approx(costs[1])
    fit = fit_widths(graph, *_decided_now(method), goals)  # the core lands exactly the held architecture
    assert fit.reached["flops"] == pytest.approx(costs[1], abs=1e-9)


def test_with_a_budget_the_tolerance_counts_only_once_the_budget_holds():
    graph = _residual_graph()
    method = METHODS["gensynth"](graph, GenSynthConfig(iterations=6), {"flops": 0.5}, drop=0.5)
    # far below the baseline before the budget (stages 1, 2), then the first stage within it misses too
    _scripted(method, [0.90, 0.90, 0.80, 0.80, 0.80])
    costs = [row["flops"] for row in method.history]
    assert len(costs) == 3 and costs[-1] <= 0.5 < costs[-2]  # stage 3 reaches the budget, then the loop ends
    summary = method.summary()["tolerance"]
    assert summary["held"] is False and summary["stopped"] and summary["val_drop"] is None
    assert method.projection_goals({"flops": 0.5})["flops"] == pytest.approx(costs[-1])  # stays at the budget
    loose = METHODS["gensynth"](graph, GenSynthConfig(iterations=6), {"flops": 0.5}, drop=5.0)
    _scripted(loose, [0.90] * 8)  # always held: beyond the budget, a `step` further each stage, to the end
    costs = [row["flops"] for row in loose.history]
    assert len(costs) == 6 and costs[-1] <= 0.5 * 0.8 ** 3 + 1e-9
    assert loose.summary()["tolerance"]["stage"] == 6


def test_with_a_tolerance_alone_a_first_stage_that_misses_it_goes_back_to_the_baseline():
    graph = _residual_graph()
    method = METHODS["gensynth"](graph, GenSynthConfig(iterations=4), {}, drop=0.5)
    _scripted(method, [0.90, 0.90, 0.85])  # stage 1 five points under
    assert bool((method.mask.keep > 0).all()) and method.summary()["tolerance"]["stage"] == 0
    assert method.summary()["tolerance"]["val_drop"] == pytest.approx(0.0)
    assert method.projection_goals({}) == {"flops": pytest.approx(1.0)}


def _decided_now(method):
    decision = method.decide(method.model)
    return decision.scores, decision.family


@pytest.mark.parametrize("inquire_on", ["training", "held-out"])
def test_a_run_with_a_tolerance_exports_the_architecture_that_held_it(tmp_path, inquire_on):
    spec = quadrant_task(tmp_path / "quadrants.npz", samples=320)
    data = cascomp.load_data(spec, batch_size=32, seed=0)
    model = trained_tiny(data, epochs=1)
    config = quick_config(method="gensynth", targets=("drop=50",),
                          method_config=GenSynthConfig(iterations=3, inquire_on=inquire_on))
    report = cascomp.compress(model, config, data=data, progress=False).report
    search = report["search"]["method"]
    held_out = int(data.train_size * 0.2) if inquire_on == "held-out" else 0  # at most a fifth of the split
    assert search["inquire_on"] == inquire_on and search["held_out_samples"] == held_out
    assert search["tolerance"]["held"] and search["tolerance"]["stage"] == 3  # 50 points: every stage holds
    settled = [row for row in search["inquiries"] if row["stage"] == 3][-1]
    # the core lands that architecture's cost under the channel multiples, within 1 % below it
    assert report["targets"] == {} and 0.99 * settled["flops"] <= report["ratios"]["flops"] <= settled["flops"] + 1e-6
    assert report["ratios"]["flops"] <= 0.8 ** 3 + 1e-6

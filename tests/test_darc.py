"""The `darc` method (issue 18): lambda doubling by blocks reaches the budget, a run substitutes operators and
lands the budget exactly with widths, and an interrupted run resumes to the same result."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cascomp
from cascomp.methods import METHODS, DarcConfig
from tests.search_fixtures import TinyNet, quadrant_task, quick_config, stopped_and_resumed, trained_tiny


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    folder = tmp_path_factory.mktemp("darc")
    data = cascomp.load_data(quadrant_task(folder / "quadrants.npz", samples=256), batch_size=32, seed=0)
    return data, trained_tiny(data, epochs=1)


def test_lambda_doubling_reaches_the_budget_on_a_small_model():
    graph = cascomp.trace(TinyNet(), torch.randn(2, 1, 8, 8))
    method = METHODS["darc"](graph, DarcConfig(blocks=8, initial_strength=5e-3, alpha_lr=0.5), {"flops": 0.35})
    assert sorted(method.positions) == ["conv1", "conv2"]  # the stem reads one channel: nothing to save
    method.prepare()
    optimizer = method.arch_optimizer()
    assert method.settled_ratios()["flops"] == pytest.approx(1.0)  # every original still weighted
    steps = 400
    for step in range(steps):
        method.on_step(step / steps)
        loss = method.arch_loss(method.penalty(), step / steps)  # the cost alone: the task cannot hold it back
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    method.on_step(1.0)
    assert int(method.state.doublings) >= 1 and float(method.state.strength) > 5e-3
    assert optimizer.param_groups[0]["lr"] < 0.5  # halved with every doubling
    assert method.settled_ratios()["flops"] <= 0.35
    for choice in method.choices.values():
        assert float(choice.alpha.detach().sum()) == pytest.approx(1.0) and bool((choice.alpha >= 0).all())
        assert not bool(choice.active[0])  # the original was dropped
    with pytest.raises(cascomp.ConfigError, match="DarcConfig.blocks"):
        DarcConfig(blocks=0)


def test_the_shift_candidate_is_offered_on_request_for_flops_and_params_targets_only():
    graph = cascomp.trace(TinyNet(), torch.randn(2, 1, 8, 8))
    assert all(c.names[-1] == "3x3DS+1x1FC" for c in _prepared(graph, DarcConfig(), {"flops": 0.5}).choices.values())
    method = _prepared(graph, DarcConfig(shift=True), {"flops": 0.5})
    for path, choice in method.choices.items():
        assert choice.names == ("original", "3x3DS", "1x1FC", "3x3DS+1x1FC", "shift")
        macs = method._costs["flops"][list(method.choices).index(path)]
        assert float(macs[4]) == float(macs[2]) < float(macs[1])  # the shift costs what 1x1FC costs
    with pytest.raises(cascomp.ConfigError, match="--shift with a latency target"):
        METHODS["darc"](graph, DarcConfig(shift=True), {"latency": 0.5})


def _prepared(graph, config, goals):
    method = METHODS["darc"](graph, config, goals)
    method.prepare()
    return method


def test_a_darc_run_substitutes_operators_and_lands_the_budget(task, tmp_path):
    data, model = task
    config = quick_config(method="darc", method_config=DarcConfig(mimic_batches=4), targets=("flops=0.4",),
                          search_epochs=2, finetune_epochs=1)
    result = cascomp.compress(model, config, data=data, out_dir=tmp_path / "out", progress=False)
    report = result.report
    assert report["targets"]["flops"]["within_1pct"] and 0.396 <= report["ratios"]["flops"] <= 0.4
    summary = report["search"]["method"]
    assert set(summary["operators"]) == {"conv1", "conv2"} and summary["mimic"]["batches"] == 4
    substituted = [name for name, op in summary["operators"].items() if op != "original"]
    for name in substituted:  # the rewritten model holds the candidates' layers where the convolutions were
        module = result.model.get_submodule(name)
        assert hasattr(module, "depthwise") or (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1))
    assert substituted
    assert report["baseline"]["flops"] == pytest.approx(cascomp.trace(model, torch.randn(2, 1, 8, 8)).cost().flops)
    assert (tmp_path / "out" / "model.onnx").exists()
    # the plan records the substitutions: applied to the baseline it rebuilds the compressed architecture,
    # which then takes the run's trained weights and computes what the run's model computes
    plan = cascomp.Plan.from_json((tmp_path / "out" / "plan.json").read_text())
    assert plan == result.plan and plan.operators == {name: summary["operators"][name] for name in substituted}
    x = torch.randn(4, 1, 8, 8)
    rebuilt = cascomp.apply_plan(cascomp.trace(model, x), plan)
    rebuilt.load_state_dict(result.model.state_dict())
    torch.testing.assert_close(rebuilt.eval()(x), result.model.eval()(x))


def test_an_interrupted_darc_run_resumes_to_the_same_result(task, tmp_path):
    data, model = task
    config = quick_config(method="darc", method_config=DarcConfig(mimic_batches=2), targets=("flops=0.4",),
                          search_epochs=1, finetune_epochs=2)
    straight, resumed = stopped_and_resumed(model, config, data, tmp_path, ("finetune", 1))
    assert resumed.plan == straight.plan
    for key, value in straight.model.state_dict().items():
        assert torch.allclose(resumed.model.state_dict()[key].float(), value.float(), atol=1e-6), key

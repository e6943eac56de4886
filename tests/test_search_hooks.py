"""The search driver's hooks (issue 17, part 1; cascomp.methods.base): a weight regulariser, a method without
architecture parameters, a method's own cost loss instead of the controlled penalty, a per-step schedule, and
the bi-level mode (weights and architecture parameters each on their own half of the training split). Each is
proven with a throwaway method on a tiny task."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

import cascomp
from cascomp.data.bundle import tensor_bundle
from cascomp.data.samples import Samples
from cascomp.methods import Decision, Method
from cascomp.methods.families import uniform_family
from cascomp.methods.scores import filter_norms, normalised
from cascomp.search.budget import target_ratios
from cascomp.train.loops import SearchLoop, _halves
from cascomp.train.progress import Reporter
from tests.search_fixtures import TinyNet


@dataclass(frozen=True, kw_only=True)
class NoOptions:
    pass


def _task(samples: int = 96, batch_size: int = 16):
    """1x8x8 inputs whose pixel (0, 0) holds the sample's id (ids 0..samples-1 for training)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples + 32, 1, 8, 8, generator=generator)
    x[:, 0, 0, 0] = torch.arange(samples + 32, dtype=torch.float32)
    y = torch.randint(0, 4, (samples + 32,), generator=generator)
    return tensor_bundle("ids", Samples(x[:samples], y[:samples]), Samples(x[samples:], y[samples:]), num_classes=4,
                         batch_size=batch_size, seed=0, mean=(0.0,), std=(1.0,))


class Hooked(Method):
    """Uniform widths; its search hooks are set per test."""

    config_type = NoOptions
    searches = True

    def decide(self, model) -> Decision:
        return Decision(scores=normalised(filter_norms(self.graph, model)), family=uniform_family(self.graph))


def _search(method: Method, data, model: nn.Module | None = None, epochs: int = 1) -> SearchLoop:
    config = cascomp.CompressConfig(targets=("flops=0.5",), search_epochs=epochs, finetune_epochs=0, lr=0.05)
    goals = target_ratios(method.graph, config.targets)
    loop = SearchLoop(method, model if model is not None else method.prepare(), data, config, goals, Reporter(False))
    loop.run(None, None)
    return loop


def _graph():
    torch.manual_seed(0)
    return cascomp.trace(TinyNet(classes=4), torch.randn(2, 1, 8, 8))


def _conv_norm(model: nn.Module) -> float:
    return sum(float(m.weight.detach().norm()) for m in model.modules() if isinstance(m, nn.Conv2d))


def test_a_weight_regulariser_without_architecture_parameters():
    data = _task()

    class Shrinking(Hooked):
        def weight_regulariser(self, model):
            return 0.5 * sum(m.weight.pow(2).sum() for m in model.modules() if isinstance(m, nn.Conv2d))

    plain = _search(Hooked(_graph(), NoOptions()), data)
    shrunk = _search(Shrinking(_graph(), NoOptions()), data)
    assert plain.arch_optimizer is None and shrunk.arch_optimizer is None
    assert _conv_norm(shrunk.model) < 0.8 * _conv_norm(plain.model)
    assert "arch_optimizer" in shrunk.state_dict() and shrunk.history.epochs[0]["epoch"] == 1


class Dial(Hooked):
    """One architecture parameter whose sigmoid stands in for an expected cost ratio."""

    def __init__(self, graph, config, goals=None) -> None:
        super().__init__(graph, config, goals)
        self.theta = nn.Parameter(torch.tensor(2.0))
        self.progress: list[float] = []

    def arch_parameters(self):
        return [self.theta]

    def arch_optimizer(self):
        return torch.optim.Adam([self.theta], lr=0.2)

    def penalty(self):
        return {"flops": torch.sigmoid(self.theta)}

    def on_step(self, progress):
        self.progress.append(progress)


def test_a_method_s_own_cost_loss_replaces_the_controlled_penalty_and_on_step_sees_progress():
    class Banded(Dial):
        controlled = False

        def arch_optimizer(self):
            return torch.optim.SGD([self.theta], lr=1.0)

        def arch_loss(self, expected, progress):
            return 10 * (expected["flops"] - 0.2) ** 2

    data = _task()
    method = Banded(_graph(), NoOptions())
    loop = _search(method, data, epochs=2)
    assert abs(float(torch.sigmoid(method.theta.detach())) - 0.2) < 0.05
    assert loop.controllers["flops"].last_weight == 0.0  # the driver's controller never acted
    steps = 2 * len(data.train)
    assert method.progress == [step / steps for step in range(steps)]


def test_bilevel_steps_weights_and_architecture_on_disjoint_halves():
    data = _task()

    class Recorder(nn.Module):
        def __init__(self, inner, seen):
            super().__init__()
            self.inner, self.seen = inner, seen

        def forward(self, x):
            if self.training:  # the steps' batches (not BN recalibration's or evaluation's)
                self.seen.append(sorted(int(i) for i in x[:, 0, 0, 0]))
            return self.inner(x)

    class Split(Dial):
        bilevel = True

    graph = _graph()
    method, seen = Split(graph, NoOptions()), []
    _search(method, data, model=Recorder(method.prepare(), seen))
    first, second = (sorted(int(i) for batch in half for i in batch[0][:, 0, 0, 0]) for half in _halves(data.train, 0))
    assert not set(first) & set(second) and sorted(first + second) == list(range(96))
    weights, architecture = seen[0::2], seen[1::2]  # per step: the weights' batch, then the architecture's
    assert len(architecture) == len(weights) == 3  # 48 samples a half, batches of 16
    assert sorted(i for batch in architecture for i in batch) == second
    assert sorted(i for batch in weights for i in batch) == first
    assert float(method.theta.detach()) != 2.0  # the architecture parameter moved (the controlled penalty's step)
    again = []
    _search(Split(_graph(), NoOptions()), data, model=Recorder(method.prepare(), again))
    assert again == seen  # the split and the orders come from the seed

""""Pruned nothing" is never silent: the share of the cost pruning can touch, and a warning when it is small."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import cascomp
from tests.bad_inputs.battery import Case, run_case
from tests.models import ZOO, example_inputs


class MostlyFrozen(nn.Module):
    """Channel-wise cumulative sums the analysis does not understand freeze every channel but the head's."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1)
        self.c, self.fc = nn.Conv2d(32, 8, 1), nn.Linear(8, 4)

    def forward(self, x):
        x = torch.cumsum(self.b(torch.cumsum(self.a(x), 1)), 1)
        return self.fc(torch.relu(self.c(x)).mean((2, 3)))


def _trace(model, x) -> tuple[cascomp.Graph, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = cascomp.trace(model, x)
    return graph, [str(w.message) for w in caught if issubclass(w.category, cascomp.errors.CascompWarning)]


def test_a_model_that_prunes_little_says_so_with_the_reasons():
    graph, said = _trace(MostlyFrozen(), torch.randn(1, 1, 8, 8))
    share = graph.prunable_share()
    assert 0 < share["flops"] < 0.1 and 0 < share["params"] < 0.1
    assert len(said) == 1 and said[0].startswith("only 5% of this model's FLOPs can be pruned")
    assert "function 'cumsum' is not understood by the channel analysis (48 channels)" in said[0]
    assert graph.frozen_reasons()[0] == ("function 'cumsum' is not understood by the channel analysis", 48)


@pytest.mark.parametrize("name", ["resnet_basic", "mobilenet_v2", "vit", "mha"])
def test_a_prunable_model_is_silent(name):
    graph, said = _trace(ZOO[name].build(), example_inputs(name))
    assert said == [] and graph.prunable_share()["flops"] > 0.99 and graph.prunable_share()["params"] > 0.9


def test_the_share_is_the_cost_of_the_layers_touching_a_prunable_channel():
    graph, _ = _trace(MostlyFrozen(), torch.randn(1, 1, 8, 8))
    assert [group.modules for group in graph.groups] == [("c", "fc")]  # only c's output (fc's input) prunes
    frozen_macs = 1 * 16 * 9 * 64 + 16 * 32 * 9 * 64  # a and b, between the cumulative sums
    prunable_macs = 32 * 8 * 64 + 8 * 4  # c and fc
    assert graph.prunable_share()["flops"] == pytest.approx(prunable_macs / (frozen_macs + prunable_macs))


def test_analyze_says_it_up_front(workspace, tmp_path, capsys, monkeypatch):
    def setup(folder):
        torch.save(MostlyFrozen(), folder / "frozen.pt")
    case = Case(("analyze", "{dir}/frozen.pt", "--input-shape", "1,1,8,8"),
                "cascomp: warning: only 5% of this model's FLOPs can be pruned", status=0, setup=setup)
    run_case(case, workspace, tmp_path / "case", capsys, monkeypatch)

"""Operator choices (issue 18, first part): DARC's candidate operators, the choice node and its simplex
projection, student-teacher initialisation, and substitution (exact, and prunable afterwards)."""

from __future__ import annotations

import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import cascomp
from cascomp.errors import PassError
from cascomp.kernels import OperatorChoice, candidates_for
from cascomp.kernels.candidates import NAMES, Shift, conv_cost, eligible
from cascomp.passes import InsertOperatorChoicesPass, SubstituteOpsPass
from cascomp.methods.mimic import mimic
from tests.exactness import check_exact
from tests.models import ZOO, example_inputs


class Net(nn.Module):
    def __init__(self, stride: int = 1, dilation: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 12, 3, stride=stride, padding=dilation, dilation=dilation, bias=bias)
        self.bn = nn.BatchNorm2d(12)
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        x = self.conv(torch.relu(self.stem(x)))
        return self.head(torch.relu(self.bn(x)).mean(dim=(2, 3)))


def _eligible_paths(gm: nn.Module) -> list[str]:
    return [name for name, module in gm.named_modules() if name and eligible(module) is None]


# -- candidates ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stride, dilation, bias", [(1, 1, True), (2, 1, False), (1, 2, True), (2, 2, False)])
def test_candidates_keep_the_output_shape_export_and_prune(tmp_path, stride, dilation, bias):
    torch.manual_seed(0)
    net = Net(stride, dilation, bias).eval()
    x = torch.randn(2, 3, 15, 15)
    reference = net.conv(torch.relu(net.stem(x)))
    for name, candidate in candidates_for(net.conv).items():
        assert candidate(torch.relu(net.stem(x))).shape == reference.shape, name
        substituted = Net(stride, dilation, bias).eval()
        substituted.load_state_dict(net.state_dict())
        substituted.conv = candidate
        path = tmp_path / f"{name.replace('+', '_')}.onnx"
        torch.onnx.export(substituted, (x,), str(path), dynamo=False)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        torch.testing.assert_close(torch.from_numpy(got), substituted(x), rtol=1e-4, atol=1e-5)
        graph = cascomp.trace(substituted, x)  # the analysis understands it: the stem's channels still prune
        assert "stem" in {g.name for g in graph.groups}
        check_exact(graph, cascomp.Plan.random(graph, 0.5, seed=1))


def test_eligibility_says_why_not():
    assert eligible(nn.Conv2d(8, 8, 3, padding=1)) is None
    assert "grouped" in eligible(nn.Conv2d(8, 8, 3, padding=1, groups=8))
    assert "kernel 1x1" in eligible(nn.Conv2d(8, 8, 1))
    assert "padding" in eligible(nn.Conv2d(8, 8, 3, padding=0))
    assert "padding" in eligible(nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"))
    assert "nn.Conv2d" in eligible(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="no candidates"):
        candidates_for(nn.Conv2d(8, 8, 1))


def test_analytic_init_is_exact_on_a_separable_convolution_and_costs_are_the_cost_model_s():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 3, padding=1, bias=True)
    depthwise, pointwise = torch.randn(6, 1, 3, 3), torch.randn(10, 6, 1, 1)
    with torch.no_grad():
        conv.weight.copy_(pointwise * depthwise.view(1, 6, 3, 3))  # exactly depthwise-separable
    x = torch.randn(2, 6, 9, 9)
    candidates = candidates_for(conv)
    torch.testing.assert_close(candidates["3x3DS"](x), conv(x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(candidates["3x3DS+1x1FC"](x), conv(x), rtol=1e-4, atol=1e-4)
    constant = torch.ones(1, 6, 5, 5)  # 1x1FC is exact where the input is constant over the window
    torch.testing.assert_close(candidates["1x1FC"](constant)[..., 1:-1, 1:-1], conv(constant)[..., 1:-1, 1:-1])
    for name, candidate in candidates.items():
        macs, params = conv_cost(candidate, 81)
        traced = cascomp.trace(candidate, x).cost()
        assert macs == traced.macs and params == traced.params, name
    assert conv_cost(conv, 81) == (cascomp.trace(conv, x).cost().macs, cascomp.trace(conv, x).cost().params)
    assert conv_cost(candidates["3x3DS"], 81)[0] < conv_cost(conv, 81)[0] / 4


@pytest.mark.parametrize("channels, dilation", [(8, (1, 1)), (20, (2, 1))])
def test_the_shift_moves_each_block_by_its_offset_for_free_and_its_start_is_exact_on_single_tap_kernels(
        channels, dilation):
    torch.manual_seed(0)
    shift = Shift(channels, 3, dilation)
    assert sum(shift.sections) == channels and shift.offsets[0] == (0, 0)  # the centre first
    x = torch.randn(2, channels, 7, 9)
    y, c = shift(x), 0
    for size, (dy, dx) in zip(shift.sections, shift.offsets):
        for _ in range(size):  # out[c, i, j] = x[c, i + dy, j + dx], zero outside
            expected = torch.zeros(2, 7, 9)
            rows, cols = slice(max(-dy, 0), 7 - max(dy, 0)), slice(max(-dx, 0), 9 - max(dx, 0))
            expected[:, rows, cols] = x[:, c, max(dy, 0):7 + min(dy, 0), max(dx, 0):9 + min(dx, 0)]
            assert torch.equal(y[:, c], expected), (c, dy, dx)
            c += 1
    graph = cascomp.trace(shift, x)
    assert graph.cost().macs == 0 and graph.cost().params == 0
    conv = nn.Conv2d(channels, 5, 3, stride=2, padding=dilation, dilation=dilation)
    weight, c = torch.zeros_like(conv.weight), 0  # one tap per input channel, at its block's offset
    for size, (dy, dx) in zip(shift.sections, shift.offsets):
        for _ in range(size):
            weight[:, c, dy // dilation[0] + 1, dx // dilation[1] + 1] = torch.randn(5)
            c += 1
    with torch.no_grad():
        conv.weight.copy_(weight)
    torch.testing.assert_close(candidates_for(conv, ("shift",))["shift"](x), conv(x), rtol=1e-5, atol=1e-5)


def test_blocks_of_one_channel_stay_channels_of_their_own(tmp_path):
    """Eight input channels make eight one-channel blocks: each is its own channel of the stem's group (the cat
    rule ties one-wide operands only along the batch), and a plan that empties blocks exports and runs."""
    net = Net().eval()
    net.conv = candidates_for(net.conv, ("shift",))["shift"]
    x = torch.randn(2, 3, 15, 15)
    graph = cascomp.trace(net, x)
    assert {g.name: g.size for g in graph.groups}["stem"] == 8
    small = check_exact(graph, cascomp.Plan({"stem": [0, 1, 2]}))  # five blocks left empty
    assert {g.name: g.size for g in cascomp.trace(small, x).groups}["stem"] == 3
    cascomp.export_onnx(small, (x,), str(tmp_path / "small.onnx"))  # zero-size Split outputs included
    session = ort.InferenceSession(str(tmp_path / "small.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), small(x), rtol=1e-4, atol=1e-5)


# -- the choice node -----------------------------------------------------------------------------------------
def test_the_simplex_projection_is_sparse_sums_to_one_and_is_never_all_zero():
    choice = OperatorChoice(nn.Conv2d(4, 4, 3, padding=1), candidates_for(nn.Conv2d(4, 4, 3, padding=1)))
    assert choice.names == ("original",) + NAMES
    torch.testing.assert_close(choice.alpha.detach(), torch.full((5,), 0.2))
    with torch.no_grad():
        choice.alpha.copy_(torch.tensor([0.6, -0.1, 0.2, 0.0, -0.3]))
    choice.project()
    assert choice.alpha.tolist() == pytest.approx([0.75, 0.0, 0.25, 0.0, 0.0])
    with torch.no_grad():
        choice.alpha.copy_(torch.tensor([-0.3, -0.1, -0.2, -0.5, -0.4]))
    choice.project()  # nothing positive: the largest alone
    assert choice.alpha.tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]
    with torch.no_grad():
        choice.alpha.copy_(torch.tensor([0.5, 0.0, 0.5, 0.0, 0.0]))
    choice.drop()
    assert choice.active.tolist() == [True, False, True, False, False] and choice.remaining() == [0, 2]
    with torch.no_grad():
        choice.alpha.copy_(torch.tensor([0.2, 0.7, 0.1, 0.0, 0.4]))  # a dropped option stays out
    choice.project()
    assert choice.alpha.tolist() == pytest.approx([2 / 3, 0.0, 1 / 3, 0.0, 0.0])
    assert choice.winner(torch.tensor([9.0, 1.0, 3.0, 2.0, 1.0])) == 0  # the most expensive left
    x = torch.randn(2, 4, 6, 6)
    expected = sum(float(a) * option(x) for a, option in zip(choice.alpha, choice.options) if float(a) > 0)
    torch.testing.assert_close(choice(x), expected)
    choice.teaching = True
    torch.testing.assert_close(choice(x), choice.options[0](x))
    with pytest.raises(ValueError, match="init"):
        OperatorChoice(nn.Conv2d(4, 4, 3, padding=1), candidates_for(nn.Conv2d(4, 4, 3, padding=1)), init="best")


def test_student_teacher_initialisation_lowers_the_mimic_loss():
    torch.manual_seed(0)
    net = Net()
    gm = cascomp.trace(net, torch.randn(2, 3, 12, 12)).gm
    paths = _eligible_paths(gm)
    assert paths == ["stem", "conv"]
    model = InsertOperatorChoicesPass({p: candidates_for(gm.get_submodule(p)) for p in paths})(gm).gm
    choices = {p: model.get_submodule(p) for p in paths}
    alpha_before = {p: c.alpha.detach().clone() for p, c in choices.items()}
    originals = {p: c.options[0].weight.detach().clone() for p, c in choices.items()}
    batches = [(torch.randn(16, 3, 12, 12), None) for _ in range(60)]
    result = mimic(model, choices, batches, lr=0.02)
    assert result.batches == 60 and result.images == 960
    # the stem reads white noise here, on which the rank-1 SVD start of both DS candidates (one spatial filter
    # per input channel) and the shift's taps are already least-squares optimal (its error only wanders by the
    # batch); conv reads the stem's structured output
    improvable = {"stem": ("1x1FC",), "conv": NAMES}
    for path in paths:
        for name in improvable[path]:
            assert result.last[path][name] < result.first[path][name], (path, name)
        assert torch.equal(choices[path].alpha.detach(), alpha_before[path])  # only the candidates moved
        assert torch.equal(choices[path].options[0].weight.detach(), originals[path])
        assert not choices[path].teaching
    assert result.last["conv"]["3x3DS+1x1FC"] < 0.5


# -- substitution --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet_basic", "resnet_bottleneck", "densenet", "unet"])
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16))
def test_substitution_computes_the_one_hot_choice_and_prunes_exactly(name, seed):
    generator = torch.Generator().manual_seed(seed)
    inputs = example_inputs(name)
    gm = cascomp.trace(ZOO[name].build(), inputs).gm
    paths = _eligible_paths(gm)
    assert paths
    candidates = {}
    for path in paths:
        candidates[path] = candidates_for(gm.get_submodule(path))
        for candidate in candidates[path].values():  # not the analytic init alone
            for parameter in candidate.parameters():
                parameter.data.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    model = InsertOperatorChoicesPass(candidates)(gm).gm.eval()
    winners = {}
    for path in paths:
        winners[path] = int(torch.randint(0, len(NAMES) + 1, (), generator=generator))
        model.get_submodule(path).settle(winners[path])
    mixed = model(*inputs)
    substituted = SubstituteOpsPass(winners)(model).gm
    assert not any(isinstance(m, OperatorChoice) for m in substituted.modules())
    torch.testing.assert_close(substituted(*inputs), mixed, rtol=1e-5, atol=1e-5)
    graph = cascomp.trace(substituted, inputs)  # and the substituted network prunes exactly
    check_exact(graph, cascomp.Plan.random(graph, 0.5, seed=seed % 97))


@pytest.mark.parametrize("name", ["resnet_basic", "densenet"])
def test_a_plan_with_operators_substitutes_then_prunes_exactly(name):
    """A Plan's operators (format 2) name convolutions of the original; apply_plan substitutes them (analytic
    start), traces again and prunes the widths its keep names: exact against mask_model of the same plan."""
    generator = torch.Generator().manual_seed(1)
    inputs = example_inputs(name)
    graph = cascomp.trace(ZOO[name].build(), inputs)
    paths = _eligible_paths(graph.gm)
    operators = {path: NAMES[int(torch.randint(0, len(NAMES), (), generator=generator))] for path in paths}
    substituted = cascomp.substitute_operators(graph, operators)
    for path, op in operators.items():
        module = substituted.gm.get_submodule(path)
        if op == "1x1FC":
            assert isinstance(module, nn.Conv2d)
        else:  # the shift itself is split, pad, slice and cat nodes in the traced graph, not a module
            assert hasattr(module, "pointwise") and hasattr(module, "depthwise") == (op != "shift")
    plan = cascomp.Plan(cascomp.Plan.random(substituted, 0.5, seed=2).keep, operators)
    small = cascomp.apply_plan(graph, plan)
    torch.testing.assert_close(graph.run(small), graph.run(cascomp.mask_model(graph, plan)), rtol=1e-4, atol=1e-5)
    assert cascomp.Plan.from_json(plan.to_json()) == plan
    with pytest.raises(cascomp.PlanError, match="plan operators: .*cannot become"):
        cascomp.apply_plan(graph, cascomp.Plan({}, {_non_eligible(graph.gm): "3x3DS"}))
    with pytest.raises(cascomp.PlanError, match="no candidate operator 'shift3'"):
        cascomp.apply_plan(graph, cascomp.Plan({}, {paths[0]: "shift3"}))


def _non_eligible(gm) -> str:
    return next(path for path, module in gm.named_modules() if isinstance(module, nn.Module) and path
                and eligible(module) is not None)


def test_substitution_refuses_a_path_that_is_not_a_choice():
    gm = cascomp.trace(Net(), torch.randn(2, 3, 12, 12)).gm
    with pytest.raises(PassError, match="'conv' is not an operator choice"):
        SubstituteOpsPass({"conv": 1})(gm)
    with pytest.raises(PassError, match="no module at 'missing'"):
        InsertOperatorChoicesPass({"missing": {}})(gm)

"""Models torch.fx cannot trace whole: the top-level forward captured by torch.export, a submodule captured
by torch.export or else kept whole (its channels frozen with the reason, its cost counted), and a clear
error where no path works."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cascomp
from tests.exactness import check_exact, zoo_graph
from tests.models import ZOO, example_inputs


@pytest.mark.parametrize("name", ["shape_branch", "opaque_block", "exported_blocks", "shared_exported",
                                  "cached_decoder", "keyword_none", "broadcast_input", "broadcast_input_b1",
                                  "patch_fold"])
def test_an_untraceable_model_is_captured_and_pruned_exactly(name, tmp_path):
    graph = zoo_graph(name)
    assert graph.groups and graph.prunable_share()["flops"] > 0.2
    for seed in range(3):
        small = check_exact(graph, cascomp.Plan.random(graph, 0.5, seed=seed))
    result = cascomp.export_onnx(small, example_inputs(name), tmp_path / f"{name}.onnx")
    assert result.max_abs_error < 1e-4
    five = (5,) + tuple(example_inputs(name)[0].shape[1:])
    x = torch.randint(0, 50, five) if name == "cached_decoder" else torch.randn(five)
    assert small(x).shape == (5, 10)  # the batch stays dynamic
    assert not any("kept whole" in reason for reason, _ in graph.frozen_reasons()) or name == "opaque_block"


def test_the_top_level_capture_specialises_the_branch_to_the_example_size():
    torch.manual_seed(0)
    model = ZOO["shape_branch"].build()
    x = example_inputs("shape_branch")[0]
    graph = cascomp.trace(model, x)
    assert torch.allclose(graph.run(graph.gm), model(x), atol=1e-5)
    assert not any("small" in str(node.target) for node in graph.gm.graph.nodes)  # the branch not taken is gone


def test_a_submodule_that_fx_cannot_trace_is_captured_by_torch_export_and_its_channels_prune():
    graph = zoo_graph("exported_blocks")
    stream = [{m.param for m in group.members} for group in graph.groups if group.name == "stem.0"]
    assert stream and {"mixer.mix.weight", "chunks.proj.weight"} <= stream[0]  # through both captured modules
    assert [reason for reason, _ in graph.frozen_reasons()] == [  # the chunk loop's slices, at the example width
        "aten.slice along a channel dim is not understood by the channel analysis",
        "model output (every channel of the result is kept)"]
    torch.manual_seed(0)  # the weights zoo_graph traced
    model = ZOO["exported_blocks"].build()
    x = torch.randn(3, 3, 16, 16)
    assert torch.allclose(graph.gm(x), model(x), atol=1e-5)  # the batch stays dynamic through the captures


def test_a_submodule_called_twice_is_captured_once_and_traced_through_at_both_calls():
    graph = zoo_graph("shared_exported")
    assert not any("kept whole" in reason for reason, _ in graph.frozen_reasons())
    stream = [{m.param for m in group.members} for group in graph.groups if group.name == "stem.0"]
    assert stream and "mixer.mix.weight" in stream[0]  # the shared mixer's output joins the stream
    mixes = [n for n in graph.gm.graph.nodes if n.op == "call_function" and "linear" in str(n.target)]
    assert len(mixes) == 2  # its ATen graph inlined at both calls, over the same parameters
    torch.manual_seed(0)  # the weights zoo_graph traced
    model = ZOO["shared_exported"].build()
    x = torch.randn(3, 3, 16, 16)
    assert torch.allclose(graph.gm(x), model(x), atol=1e-5)


def test_a_submodule_whose_output_torch_export_cannot_return_is_captured_for_the_fields_its_caller_reads():
    """GPT-2's pattern: the decoder returns an object holding a key-value cache (torch.export cannot return
    it) and the caller reads `.hidden` only: the capture returns that field, its tensors keep their names,
    and F.embedding and torch.addmm (Conv1D) are followed, so the hidden widths prune."""
    graph = zoo_graph("cached_decoder")
    assert not any("kept whole" in reason for reason, _ in graph.frozen_reasons())
    assert [group.size for group in graph.groups] == [32, 64] and graph.prunable_share()["flops"] == 1.0
    read = {str(node.target) for node in graph.gm.graph.nodes if node.op == "get_attr"}
    assert {"body.wte", "body.fc_weight", "body.proj_bias"} <= read  # the decoder's own parameter names
    torch.manual_seed(0)  # the weights zoo_graph traced
    model = ZOO["cached_decoder"].build()
    ids = torch.randint(0, 50, (3, 12))
    assert torch.allclose(graph.gm(ids), model(ids), atol=1e-5)  # the batch stays dynamic


def test_a_failed_capture_prints_nothing(capsys):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), PaddedConv(8, 16, 3, padding=1)).eval()
    with pytest.warns(cascomp.errors.CascompWarning):
        cascomp.trace(model, torch.randn(2, 3, 8, 8))  # torch.export tries PaddedConv, fails on its value check
    captured = capsys.readouterr()
    assert "def forward" not in captured.err + captured.out  # torch.export's partial graph of its failure


def test_a_submodule_kept_whole_is_frozen_with_the_reason_and_its_cost_counted():
    graph = zoo_graph("opaque_block")
    reasons = dict(graph.frozen_reasons())
    assert any("'gate' (ChunkScaled, kept whole" in reason for reason in reasons)
    assert graph.record.uncounted == []
    model = ZOO["opaque_block"].build()
    convs = [*model.stem.modules(), *model.inner.modules()]
    counted = sum(2 * m.weight.numel() * 16 * 16 for m in convs if isinstance(m, nn.Conv2d))
    counted += 2 * model.gate.proj.weight.numel() * (16 * 16 + 8 * 8)  # the gate runs twice, at two sizes
    counted += 2 * model.head[0].weight.numel() * 8 * 8 + 2 * model.fc.weight.numel()
    assert graph.cost().flops == pytest.approx(counted, rel=0.02)  # the kept-whole gate's conv included


class ValueBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        if x.mean() > 0:  # on values, in the top module: neither fx nor torch.export can capture it
            return self.conv(x)
        return self.conv(-x)


def test_a_top_level_branch_on_values_is_a_clear_error():
    with pytest.raises(cascomp.errors.TraceError, match=r"test_capture.py:\d+ `if x.mean\(\) > 0:"):
        cascomp.trace(ValueBranch(), torch.randn(1, 3, 8, 8))


def test_a_batch_of_one_still_gives_a_dynamic_batch():
    torch.manual_seed(0)
    model = ZOO["shape_branch"].build()
    graph = cascomp.trace(model, torch.randn(1, 3, 16, 16))  # torch.export would fix a dim of size 1
    x = torch.randn(3, 3, 16, 16)
    assert torch.allclose(graph.gm(x), model(x), atol=1e-5)


class PaddedConv(nn.Conv2d):
    """A conv subclass whose own forward neither fx nor torch.export can capture (a check on values, padding
    computed in a loop over sizes): kept whole, it must not be taken for a plain Conv2d, whose weight alone
    the rewrite would slice."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1))

    def forward(self, x):
        if bool(torch.isnan(x).any()):  # a check on values: neither fx nor torch.export can capture it
            raise ValueError("NaN input")
        pads = [0 for _ in range(x.dim())]  # iterating a size: fx cannot trace this
        return nn.functional.conv2d(nn.functional.pad(x, pads[:4]), self.weight * self.gain, self.bias,
                                    self.stride, self.padding)


def test_a_torch_layer_subclass_kept_whole_is_frozen_not_taken_for_the_layer():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), PaddedConv(8, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 4, 1)).eval()
    with pytest.warns(cascomp.errors.CascompWarning):
        graph = cascomp.trace(model, torch.randn(2, 3, 8, 8))
    assert any("'1' (PaddedConv, kept whole" in reason for reason, _ in graph.frozen_reasons())
    assert graph.record.uncounted == [] and graph.cost().macs == 3 * 8 * 9 * 64 + 8 * 16 * 9 * 64 + 16 * 4 * 64
    for seed in range(2):
        check_exact(graph, cascomp.Plan.random(graph, 0.5, seed=seed))


def test_aten_slice_on_a_position_dim_leaves_the_channels_prunable():
    """The bias cut to the sequence length is ATen's slice on dim 1 in the captured graph: its channels (the
    last dim) still join the stream's group; a slice across channels (exported_blocks' chunks) is frozen."""
    graph = zoo_graph("broadcast_input_b1")
    assert not any("slice" in reason for reason, _ in graph.frozen_reasons())
    stream = [{m.param for m in group.members} for group in graph.groups if group.name == "stem"]
    assert stream and {"position", "mixer.mix.weight"} <= stream[0]


def test_in_place_ops_whose_results_nobody_reads_survive_dead_code_elimination():
    """`out.mul_(gain)` changes `out`, read afterwards: the capture path's dead-code elimination dropped it
    (torch.fx's own treats it as unused) and the traced network computed something else."""
    torch.manual_seed(0)
    model = ZOO["skipinit_gain"].build()
    x = example_inputs("skipinit_gain")[0]
    graph = cascomp.trace(model, x)
    assert sum(str(node.target) == "mul_" for node in graph.gm.graph.nodes) == 2
    torch.testing.assert_close(graph.gm(x), model(x))
    small = check_exact(graph, cascomp.Plan.random(graph, 0.5, seed=0))
    torch.testing.assert_close(cascomp.passes.EliminateDeadCodePass()(small).gm(x), small(x))


def test_a_capture_that_computes_something_else_is_an_error_not_a_model(monkeypatch):
    """The whole captured graph is checked against the model on the example: were dead-code elimination to
    drop the in-place gains again, trace would refuse rather than hand back another network."""
    from cascomp.ir import trace as trace_module

    monkeypatch.setattr(trace_module, "eliminate_dead_code", lambda gm: gm.graph.eliminate_dead_code())
    torch.manual_seed(0)
    with pytest.raises(cascomp.TraceError, match="does not compute what the model computes"):
        cascomp.trace(ZOO["skipinit_gain"].build(), example_inputs("skipinit_gain"))

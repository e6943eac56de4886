"""export_onnx: the file computes what torch computes, at the example batch size and another one."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cascomp.errors import ConfigError, ExportError
from cascomp.export import OnnxExportResult, export_onnx


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.left = nn.Linear(4, 6)
        self.right = nn.Linear(5, 6)

    def forward(self, x, y):
        return self.left(x) * torch.sigmoid(self.right(y)), self.left(x)


class Attention(nn.Module):
    def __init__(self, dim=16, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).view(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(y.transpose(1, 2).reshape(batch, tokens, dim))


class EmbeddingNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(20, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, tokens):
        return self.head(self.embedding(tokens).mean(1))


class Lambda(nn.Module):
    """A linear layer followed by `function`: a one-line way to put a chosen op into a model."""

    def __init__(self, function):
        super().__init__()
        self.linear = nn.Linear(8, 8)
        self.function = function

    def forward(self, x):
        return self.function(self.linear(x))


CASES = {
    "conv": (ConvNet, lambda: (torch.randn(2, 3, 12, 12),)),
    "two_inputs": (TwoInputs, lambda: (torch.randn(3, 4), torch.randn(3, 5))),
    "attention": (Attention, lambda: (torch.randn(2, 5, 16),)),
    "embedding": (EmbeddingNet, lambda: (torch.randint(0, 20, (2, 7)),)),
}


def _torch_outputs(model, inputs):
    with torch.no_grad():
        outputs = model.eval()(*inputs)
    return outputs if isinstance(outputs, tuple) else (outputs,)


def _onnx_outputs(path, inputs):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)})


@pytest.mark.parametrize("case", sorted(CASES))
def test_export_matches_torch_at_example_and_other_batch(case, tmp_path):
    torch.manual_seed(0)
    model_class, make_inputs = CASES[case]
    model, inputs = model_class(), make_inputs()
    result = export_onnx(model, inputs, tmp_path / "model.onnx")
    assert isinstance(result, OnnxExportResult)
    assert result.exporter == "torchscript" and result.opset == 17
    assert result.max_abs_error <= 1e-4 and result.seconds > 0
    onnx.checker.check_model(onnx.load(result.path))
    other_batch = tuple(torch.cat([t, t, t[:1]]) for t in inputs)  # 2n + 1: neither checked size
    for expected, actual in zip(_torch_outputs(model, other_batch), _onnx_outputs(result.path, other_batch)):
        assert actual.shape == tuple(expected.shape)
        np.testing.assert_allclose(actual, expected.numpy(), rtol=1e-3, atol=1e-4)


def test_batch_axis_is_symbolic_on_every_input_and_output(tmp_path):
    result = export_onnx(TwoInputs(), (torch.randn(3, 4), torch.randn(3, 5)), tmp_path / "two.onnx",
                         input_names=["a", "b"], output_names=["gated", "plain"])
    graph = onnx.load(result.path).graph
    assert [v.name for v in graph.input] == ["a", "b"] and result.input_names == ("a", "b")
    assert [v.name for v in graph.output] == ["gated", "plain"]
    for value in (*graph.input, *graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param  # a name, not a fixed size


def test_static_batch_when_asked(tmp_path):
    result = export_onnx(ConvNet(), torch.randn(2, 3, 8, 8), tmp_path / "m.onnx", dynamic_batch=False)
    assert onnx.load(result.path).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


def test_fx_graph_module_with_batch_of_one(tmp_path):
    traced = torch.fx.symbolic_trace(ConvNet())
    result = export_onnx(traced, torch.randn(1, 3, 8, 8), tmp_path / "traced.onnx")
    assert result.input_names == ("x",)  # the placeholder's name
    inputs = (torch.randn(4, 3, 8, 8),)
    np.testing.assert_allclose(_onnx_outputs(result.path, inputs)[0], _torch_outputs(traced, inputs)[0],
                               rtol=1e-3, atol=1e-4)


def test_training_flags_are_restored_exactly(tmp_path):
    model = ConvNet().train()
    model.bn1.eval()  # a frozen BatchNorm inside a training model must stay frozen
    export_onnx(model, torch.randn(2, 3, 8, 8), tmp_path / "m.onnx")
    assert model.training and model.conv1.training and not model.bn1.training


def test_exporters_stay_quiet(tmp_path, capfd):
    export_onnx(ConvNet(), torch.randn(2, 3, 8, 8), tmp_path / "m.onnx")
    assert capfd.readouterr() == ("", "")


def test_unsupported_op_raises_and_leaves_no_file(tmp_path):
    model = Lambda(lambda x: torch.cummax(x, dim=-1).values)  # neither exporter knows cummax
    with pytest.raises(ExportError, match=r"Lambda.*torchscript.*cummax.*dynamo.*cummax"):
        export_onnx(model, torch.randn(2, 8), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_failed_export_keeps_an_existing_file_intact(tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous model")
    with pytest.raises(ExportError):
        export_onnx(Lambda(lambda x: torch.cummax(x, dim=-1).values), torch.randn(2, 8), target,
                    exporter="torchscript")
    assert target.read_bytes() == b"previous model" and list(tmp_path.iterdir()) == [target]


def test_numerical_mismatch_raises_with_the_error_and_tolerance(tmp_path):
    model = Lambda(lambda x: x + torch.rand_like(x))  # onnxruntime draws other random numbers
    with pytest.raises(ExportError, match=r"differs from torch.*atol=0\.0001"):
        export_onnx(model, torch.randn(2, 8), tmp_path / "m.onnx", exporter="torchscript")
    assert list(tmp_path.iterdir()) == []


def test_falls_back_to_dynamo_when_torchscript_cannot(tmp_path, capfd):
    model = Lambda(lambda x: F.interpolate(x.view(-1, 1, 2, 4), scale_factor=0.5, mode="bilinear",
                                           antialias=True))
    result = export_onnx(model, torch.randn(2, 8), tmp_path / "m.onnx")
    assert result.exporter == "dynamo" and result.max_abs_error <= 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no .data file beside it
    assert capfd.readouterr() == ("", "")  # dynamo's progress lines and logs were captured


def test_forward_that_raises_is_reported_before_export(tmp_path):
    def broken(x):
        raise ValueError("shape trouble")

    with pytest.raises(ExportError, match="Lambda failed on inputs of shape.*shape trouble"):
        export_onnx(Lambda(broken), torch.randn(2, 8), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_missing_directory_is_refused(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        export_onnx(ConvNet(), torch.randn(2, 3, 8, 8), tmp_path / "missing" / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("options", [{"opset": 13}, {"atol": -1.0}, {"exporter": "tvm"},
                                     {"input_names": ["a", "b"]}])
def test_bad_arguments_are_config_errors(tmp_path, options):
    with pytest.raises(ConfigError):
        export_onnx(ConvNet(), torch.randn(2, 3, 8, 8), tmp_path / "m.onnx", **options)


def test_result_round_trips_through_json(tmp_path):
    result = export_onnx(EmbeddingNet(), torch.randint(0, 20, (2, 3)), tmp_path / "m.onnx")
    data = json.loads(json.dumps(result.to_dict()))
    assert data["exporter"] == "torchscript" and data["input_names"] == ["tokens"]

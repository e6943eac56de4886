"""profile: onnxruntime latency per batch size, time per node named by torch module, torch's latency."""

from __future__ import annotations

import importlib
import json

import onnx
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from torch import nn

from cascomp.errors import ConfigError, ModelLoadError, ProfileError
from cascomp.export import BatchLatency, LatencyReport, NodeTime, export_onnx, profile
from cascomp.export._node_times import module_from_scoped_name

QUICK = {"warmup": 1, "repeats": 3}
profile_module = importlib.import_module("cascomp.export.profile")  # cascomp.export.profile is the function


class Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)) + x)


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.layer1 = nn.Sequential(Block(8), Block(8))
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.layer1(F.relu(self.conv1(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class EmbeddingNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(10, 4)

    def forward(self, tokens):
        return self.embedding(tokens).sum(1)


def _relu_file(path, shape):
    """An ONNX file computing Relu on one float input of `shape` (strings are symbolic dims)."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="/Relu")], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_latency_per_batch_size():
    report = profile(SmallNet(), (1, 4), example_inputs=torch.randn(2, 3, 8, 8), **QUICK)
    assert isinstance(report, LatencyReport) and report.batch_sizes == (1, 4)
    assert [r.batch_size for r in report.results] == [1, 4]
    for result in report.results:
        assert isinstance(result, BatchLatency) and result.repeats == 3
        assert 0 < result.min_ms <= result.median_ms <= result.p90_ms
        assert result.mean_ms > 0 and result.throughput > 0
    assert report.latency_ms(4) == report.results[1].median_ms
    assert report.provider == "CPUExecutionProvider" and report.threads == "default"
    assert report.onnx_path is None and report.by_node == () and report.torch_results is None


def test_report_is_json_and_a_table():
    report = profile(SmallNet(), (1, 2), example_inputs=torch.randn(1, 3, 8, 8), threads=1, by_node=True,
                     torch_latency=True, **QUICK)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["threads"] == 1 and len(data["results"]) == 2 and data["by_node"]
    table = report.format_table()
    assert "threads=1" in table and "torch ms" in table and "layer1.0.conv" in table
    with pytest.raises(ProfileError, match="batch size 8 was not profiled"):
        report.latency_ms(8)


def test_by_node_names_torch_modules_and_cleans_up(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # onnxruntime writes its trace to the working directory by default
    report = profile(SmallNet(), (1, 2), example_inputs=torch.randn(2, 3, 8, 8), by_node=True, **QUICK)
    modules = {node.module for node in report.by_node}
    assert {"conv1", "layer1.0.conv", "layer1.1.conv", "fc"} <= modules
    assert all(isinstance(node, NodeTime) and node.total_ms >= 0 for node in report.by_node)
    totals = [node.total_ms for node in report.by_node]
    assert totals == sorted(totals, reverse=True)
    assert sum(node.share for node in report.by_node) == pytest.approx(1.0)
    conv = next(node for node in report.by_node if node.module == "conv1")
    assert conv.op_type in ("Conv", "FusedConv") and conv.calls == 2 * QUICK["repeats"]  # warm-ups left out
    assert list(tmp_path.iterdir()) == []


def test_torch_latency_leaves_the_model_as_it_was():
    model = SmallNet().train()
    threads = torch.get_num_threads()
    report = profile(model, (1, 2), example_inputs=torch.randn(2, 3, 8, 8), torch_latency=True, threads=1,
                     **QUICK)
    assert [r.batch_size for r in report.torch_results] == [1, 2]
    assert all(r.median_ms > 0 for r in report.torch_results)
    assert model.training and torch.get_num_threads() == threads


def test_a_module_with_its_export_is_not_exported_again(tmp_path, monkeypatch):
    model, x = SmallNet(), torch.randn(2, 3, 8, 8)
    exported = export_onnx(model, x, tmp_path / "small.onnx")
    monkeypatch.setattr(profile_module, "export_onnx", lambda *args, **kwargs: pytest.fail("exported again"))
    report = profile(model, (1, 3), example_inputs=x, exported=exported, torch_latency=True, by_node=True,
                     **QUICK)
    assert report.onnx_path == exported.path and (tmp_path / "small.onnx").is_file()
    assert [r.batch_size for r in report.results] == [1, 3] and report.torch_results is not None
    assert any(n.module.startswith("layer1") for n in report.by_node)
    with pytest.raises(ConfigError, match="exported= goes with the nn.Module"):
        profile(exported.path, exported=exported)
    with pytest.raises(ConfigError, match="what export_onnx returned"):
        profile(model, example_inputs=x, exported=exported.path)


def test_a_static_batch_export_is_timed_only_at_its_batch_size(tmp_path):
    model, x = SmallNet(), torch.randn(2, 3, 8, 8)
    exported = export_onnx(model, x, tmp_path / "static.onnx", dynamic_batch=False)
    assert not exported.dynamic_batch and export_onnx(model, x, tmp_path / "dynamic.onnx").dynamic_batch
    with pytest.raises(ConfigError, match=r"dynamic_batch=False \(batch 2\), so it cannot run at batch size\(s\) 1, 3"):
        profile(model, (1, 2, 3), example_inputs=x, exported=exported, **QUICK)
    report = profile(model, (2,), example_inputs=x, exported=exported, **QUICK)
    assert [r.batch_size for r in report.results] == [2]


def test_onnx_file_with_integer_inputs(tmp_path):
    path = export_onnx(EmbeddingNet(), torch.randint(0, 10, (2, 5)), tmp_path / "e.onnx").path
    report = profile(path, (1, 3), **QUICK)  # random token ids in {0, 1}: valid for any vocabulary
    assert report.onnx_path == path and all(r.median_ms > 0 for r in report.results)
    with pytest.raises(ConfigError, match="torch_latency=True needs the torch model"):
        profile(path, torch_latency=True)


def test_other_dynamic_dims_need_input_shapes(tmp_path):
    path = _relu_file(tmp_path / "relu.onnx", ["batch", "tokens", 4])
    with pytest.raises(ConfigError, match=r"dynamic dim 1 \('tokens'\).*input_shapes=\{'x': \(16, 4\)\}"):
        profile(path, (2,), **QUICK)
    report = profile(path, (2,), input_shapes={"x": (7, 4)}, **QUICK)
    assert report.results[0].median_ms > 0


def test_fixed_batch_file_refuses_other_batch_sizes(tmp_path):
    path = _relu_file(tmp_path / "relu.onnx", [2, 4])
    with pytest.raises(ConfigError, match="fixed batch size of 2"):
        profile(path, (1,), **QUICK)
    assert profile(path, (2,), **QUICK).results[0].batch_size == 2


def test_module_without_examples_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="needs example_inputs"):
        profile(SmallNet())
    with pytest.raises(ModelLoadError, match="no ONNX file"):
        profile(tmp_path / "absent.onnx")


@pytest.mark.parametrize("options", [{"batch_sizes": ()}, {"batch_sizes": (0,)}, {"repeats": 0},
                                     {"threads": 0}, {"provider": "tpu"}])
def test_bad_arguments_are_config_errors(tmp_path, options):
    path = _relu_file(tmp_path / "relu.onnx", ["batch", 4])
    with pytest.raises(ConfigError):
        profile(path, **options)


@pytest.mark.skipif("CUDAExecutionProvider" in onnxruntime.get_available_providers(),
                    reason="this onnxruntime has CUDA, so provider='cuda' is expected to work here")
def test_cuda_without_onnxruntime_gpu_is_a_clear_error(tmp_path):
    path = _relu_file(tmp_path / "relu.onnx", ["batch", 4])
    with pytest.raises(ProfileError, match=r"onnxruntime-gpu.*pip install 'cascomp\[gpu\]'"):
        profile(path, (1,), provider="cuda", **QUICK)


@pytest.mark.parametrize(("node_name", "module"), [
    ("/layer1/layer1.0/conv1/Conv", "layer1.0.conv1"),
    ("/head/fc/Gemm", "head.fc"),
    ("/head/Relu_1", "head"),
    ("/Add", None),
    ("node_conv2d", None),
])
def test_module_from_scoped_name(node_name, module):
    assert module_from_scoped_name(node_name) == module

"""Latency of the baseline and the compressed model in interleaved rounds: ratios within rounds, their spread."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cascomp.export import compare as compare_module
from cascomp.export import export_onnx
from cascomp.export.compare import compare_latency


class _Scripted:
    """A fake `profile`: each call returns the next scripted latency (the same at every batch size)."""

    def __init__(self, values):
        self.values, self.calls = list(values), []

    def __call__(self, module, batch_sizes, **kwargs):
        self.calls.append((module, kwargs["exported"]))
        value = self.values.pop(0)
        return type("Report", (), {"latency_ms": staticmethod(lambda batch: value)})()


def test_rounds_alternate_the_models_and_ratios_are_taken_within_a_round(monkeypatch):
    base, small = nn.Linear(4, 4), nn.Linear(4, 2)
    # round by round (baseline, compressed): the machine slows down 4x in round 2, the ratio stays 0.5
    scripted = _Scripted([2.0, 1.0, 8.0, 4.0, 2.0, 1.2])
    monkeypatch.setattr(compare_module, "profile", scripted)
    result = compare_latency((base, "base.onnx"), (small, "small.onnx"), torch.randn(1, 4), (1, 32), rounds=3)
    assert [module for module, _ in scripted.calls] == [base, small] * 3
    assert [exported for _, exported in scripted.calls] == ["base.onnx", "small.onnx"] * 3
    assert result.ratio == {1: 0.5, 32: 0.5}  # the median of 0.5, 0.5, 0.6; end-to-end 2.6/4 would say 0.65
    assert result.spread[1] == pytest.approx(0.1)
    assert result.baseline_ms[1] == 2.0 and result.compressed_ms[1] == 1.2
    assert result.trusted(1) and result.rounds == 3 and result.threads == "default"


def test_rounds_that_disagree_are_not_trusted(monkeypatch):
    monkeypatch.setattr(compare_module, "profile", _Scripted([1.0, 0.5, 1.0, 1.5, 1.0, 0.6]))
    result = compare_latency((nn.Linear(4, 4), None), (nn.Linear(4, 2), None), torch.randn(1, 4), (1,), rounds=3)
    assert result.ratio[1] == 0.6 and result.spread[1] == pytest.approx(1.0) and not result.trusted(1)


def test_real_exports_are_timed_in_onnxruntime(tmp_path):
    base = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10)).eval()
    small = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    x = torch.randn(1, 64)
    result = compare_latency((base, export_onnx(base, x, tmp_path / "a.onnx")),
                             (small, export_onnx(small, x, tmp_path / "b.onnx")), x, (1, 4), rounds=2, repeats=3,
                             threads=1)
    assert set(result.ratio) == {1, 4} and all(v > 0 for v in result.compressed_ms.values())
    assert result.threads == 1 and result.rounds == 2


def test_onnxruntime_cuda_is_asked_of_profile(monkeypatch):
    scripted = _Scripted([2.0, 1.0])
    providers = []
    monkeypatch.setattr(compare_module, "profile", lambda *a, **k: (providers.append(k["provider"]), scripted(*a, **k))[1])
    result = compare_latency((nn.Linear(4, 4), None), (nn.Linear(4, 2), None), torch.randn(1, 4), (1,), rounds=1,
                             runtime="onnxruntime-cuda", device="cuda:0")
    assert providers == ["cuda", "cuda"]
    assert (result.runtime, result.device, result.threads, result.ratio[1]) == ("onnxruntime-cuda", "cuda:0", "-", 0.5)
    assert result.p90_ms == {}
    with pytest.raises(ValueError, match="runtime 'tpu'"):
        compare_latency((nn.Linear(4, 4), None), (nn.Linear(4, 2), None), torch.randn(1, 4), (1,), runtime="tpu")


@pytest.mark.cuda
def test_torch_cuda_latency_with_events():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    base = nn.Sequential(nn.Linear(256, 2048), nn.ReLU(), nn.Linear(2048, 10)).eval()
    small = nn.Sequential(nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    result = compare_latency((base, None), (small, None), torch.randn(1, 256), (1, 64), rounds=2, runtime="torch-cuda",
                             device="cuda")
    assert result.runtime == "torch-cuda" and set(result.p90_ms) == {"baseline", "compressed"}
    assert all(result.p90_ms[name][b] >= 0 for name in result.p90_ms for b in (1, 64))
    assert next(base.parameters()).device.type == "cpu"  # timed on copies

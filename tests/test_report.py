"""report.json is assembled from what the pipeline measured: `build_report` reads the numbers it is handed
(it evaluates, times and counts nothing itself), and the summary flags latency it cannot trust."""

from __future__ import annotations

from types import SimpleNamespace

import torch

import cascomp
from cascomp.export.compare import LatencyComparison
from cascomp.export.report import Measurements, build_report, summary_table
from cascomp.search.budget import fit_of_plan, target_ratios
from cascomp.train.loops import History
from cascomp.zoo import build, example_inputs

DATA = SimpleNamespace(name="fake", train_size=100, val_size=20, input_shape=(3, 32, 32), num_classes=10)


def _inputs():
    model, x = build("resnet_basic"), example_inputs("resnet_basic")
    graph = cascomp.trace(model, x)
    config = cascomp.CompressConfig(targets=("flops=0.5",))
    goals = target_ratios(graph, config.targets)
    fit = fit_of_plan(graph, cascomp.Plan.uniform(graph, keep=0.5), goals)
    return graph, fit, config


def _measurements(graph, fit, spread: float) -> Measurements:
    latency = LatencyComparison(baseline_ms={1: 2.0, 32: 40.0}, compressed_ms={1: 1.0, 32: 30.0},
                                ratio={1: 0.5, 32: 0.75}, spread={1: spread, 32: 0.01}, rounds=5, threads=1)
    return Measurements(baseline_cost=graph.cost(), cost=graph.cost(fit.plan), baseline_top1=0.9, top1=0.85,
                        latency=latency, prunable_share={"flops": 0.99, "params": 0.98})


def test_the_report_holds_what_it_was_given():
    graph, fit, config = _inputs()
    measured = _measurements(graph, fit, spread=0.05)
    report = build_report(graph=graph, fit=fit, data=DATA, config=config, measured=measured,
                          search=History(), finetune=History(epochs=[{"epoch": 1}]), probes=None)
    assert report["baseline"]["top1"] == 0.9 and report["compressed"]["top1"] == 0.85
    assert report["compressed"]["latency_ms"] == {"1": 1.0, "32": 30.0}
    assert report["ratios"]["latency_b1"] == 0.5 and report["ratios"]["latency_b32"] == 0.75
    assert report["ratios"]["flops"] == graph.cost(fit.plan).flops / graph.cost().flops
    assert report["prunable_share"] == {"flops": 0.99, "params": 0.98}
    assert report["latency"]["trusted"] == {"1": True, "32": True}
    assert report["finetune"]["epochs"] == [{"epoch": 1}]
    assert {name: width["after"] for name, width in report["widths"].items()} == fit.widths
    assert report["config"] == config.to_dict()


def test_the_summary_flags_a_spread_too_wide_to_trust():
    graph, fit, config = _inputs()
    wide = _measurements(graph, fit, spread=0.3)  # 0.3 > 25 % of the ratio 0.5
    report = build_report(graph=graph, fit=fit, data=DATA, config=config, measured=wide,
                          search=History(), finetune=History(), probes=None)
    assert report["latency"]["trusted"] == {"1": False, "32": True}
    text = summary_table(report)
    assert "latency ratio ? (batch 1)" in text
    assert "0.500 ±0.150 ?" in text


def test_building_a_report_runs_no_model(monkeypatch):
    graph, fit, config = _inputs()
    measured = _measurements(graph, fit, spread=0.05)

    def refuse(*args, **kwargs):
        raise AssertionError("the report ran a model")

    monkeypatch.setattr(torch.nn.Module, "__call__", refuse)
    build_report(graph=graph, fit=fit, data=DATA, config=config, measured=measured,
                 search=History(), finetune=History(), probes=None)


def test_gpu_latency_is_reported_beside_the_cpu_figures():
    graph, fit, config = _inputs()
    cpu = _measurements(graph, fit, spread=0.05)
    torch_cuda = LatencyComparison(baseline_ms={1: 0.4}, compressed_ms={1: 0.3}, ratio={1: 0.75}, spread={1: 0.02},
                                   rounds=5, threads="-", runtime="torch-cuda", device="cuda:0",
                                   p90_ms={"baseline": {1: 0.5}, "compressed": {1: 0.35}})
    measured = Measurements(**{**vars(cpu), "gpu": (torch_cuda,),
                               "gpu_unavailable": {"onnxruntime-cuda": "no onnxruntime-gpu"}})
    report = build_report(graph=graph, fit=fit, data=DATA, config=config, measured=measured,
                          search=History(), finetune=History(), probes=None)
    gpu = report["latency_gpu"]
    assert gpu["torch-cuda"]["device"] == "cuda:0" and gpu["torch-cuda"]["ratio"] == {"1": 0.75}
    assert gpu["torch-cuda"]["p90_ms"] == {"baseline": {"1": 0.5}, "compressed": {"1": 0.35}}
    assert gpu["onnxruntime-cuda"] == {"unavailable": "no onnxruntime-gpu"}
    assert report["latency"]["trusted"] == {"1": True, "32": True}  # the CPU figures stay as they were
    text = summary_table(report)
    assert "torch-cuda b1 (ms)" in text and "0.750 ±0.010" in text
    plain = build_report(graph=graph, fit=fit, data=DATA, config=config, measured=cpu, search=History(),
                         finetune=History(), probes=None)
    assert "latency_gpu" not in plain and "cuda" not in summary_table(plain)

"""report.json and the one-screen summary of a compress run: assembled from what the pipeline measured.

Nothing here measures or evaluates: `api.compress` measures both models (`Measurements`) and hands the
numbers over with the run's config, data description, decision and histories.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from rich.console import Console
from rich.table import Table

from cascomp.export.compare import UNTRUSTED_SPREAD, LatencyComparison
from cascomp.ir.cost import Cost

if TYPE_CHECKING:  # types of the arguments only: the report reads their fields
    from cascomp.config import CompressConfig
    from cascomp.ir.graph import Graph
    from cascomp.search.budget import Fit
    from cascomp.train.loops import History

REPORT_FORMAT = 1


@dataclass(frozen=True)
class Measurements:
    """What the pipeline's measure step found for the baseline and the compressed model."""
    baseline_cost: Cost
    cost: Cost
    baseline_top1: float
    top1: float
    latency: LatencyComparison  # interleaved rounds of the two checked ONNX exports
    prunable_share: dict[str, float | None]  # the baseline's cost in layers with a prunable channel
    # on a CUDA device, beside the CPU figures: torch-cuda, and onnxruntime-cuda when onnxruntime-gpu is there
    gpu: tuple[LatencyComparison, ...] = ()
    gpu_unavailable: dict[str, str] = field(default_factory=dict)  # runtime: why it was not measured


def build_report(*, graph: Graph, fit: Fit, data, config: CompressConfig, measured: Measurements,
                 search: History, finetune: History, probes: dict | None = None) -> dict:
    """`probes`: what the method's probes cost (count, images, seconds), if it had any."""
    timing, batches = measured.latency, list(measured.latency.ratio)  # in the order the config gives
    baseline = {**measured.baseline_cost.to_dict(), "top1": measured.baseline_top1,
                "latency_ms": {str(b): timing.baseline_ms[b] for b in batches}}
    compressed = {**measured.cost.to_dict(), "top1": measured.top1,
                  "latency_ms": {str(b): timing.compressed_ms[b] for b in batches}}
    ratios = {metric: getattr(measured.cost, metric) / getattr(measured.baseline_cost, metric)
              for metric in ("flops", "params")}
    ratios.update({f"latency_b{b}": timing.ratio[b] for b in batches})
    latency = {"rounds": timing.rounds, "threads": timing.threads, "cpus": os.cpu_count(),
               "spread": {str(b): timing.spread[b] for b in batches},
               "trusted": {str(b): timing.trusted(b) for b in batches}}
    within = fit.within()
    table = graph.cost_model.latency_table
    if table is not None:  # a latency target: the per-layer table's prediction beside the measured ratio
        latency["prediction"] = {
            "batch": table.batch, "threads": table.threads, "provider": table.provider,
            "baseline_ms": measured.baseline_cost.latency, "compressed_ms": measured.cost.latency,
            "ratio": measured.cost.latency / max(measured.baseline_cost.latency, 1e-12),
            "measured_ratio": timing.ratio.get(table.batch)}
    return {
        "format": REPORT_FORMAT, "method": config.method, "config": config.to_dict(),
        "data": {"name": data.name, "train_size": data.train_size, "val_size": data.val_size,
                 "input_shape": list(data.input_shape), "num_classes": data.num_classes},
        # with an accuracy tolerance the cost targets are upper bounds: the search goes below them while it holds
        "targets": {m: {"goal": g, "reached": fit.reached[m], "within_1pct": within[m],
                        **({"upper_bound": True} if config.drop is not None else {})} for m, g in fit.goals.items()},
        "baseline": baseline, "compressed": compressed, "ratios": ratios, "latency": latency,
        "prunable_share": measured.prunable_share,
        "widths": {g.name: {"before": g.size, "after": fit.widths[g.name]} for g in graph.groups},
        "round_to": graph.constraints.round_to,  # the multiple every pruned width is (config round_to "auto": chosen)
        "search": {"epochs": search.epochs, "trajectory": search.trajectory, "probes": probes,
                   **({"method": search.method} if search.method else {})},
        "finetune": {"epochs": finetune.epochs},
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "threads": torch.get_num_threads()},
        **({"latency_gpu": _gpu_latency(measured)} if measured.gpu or measured.gpu_unavailable else {}),
    }


def _gpu_latency(measured: Measurements) -> dict:
    """Per GPU runtime: both models' median (and, for torch, 90th percentile) ms, the ratio and its spread."""
    section = {}
    for timing in measured.gpu:
        batches = list(timing.ratio)
        section[timing.runtime] = {
            "device": timing.device, "rounds": timing.rounds,
            "baseline_ms": {str(b): timing.baseline_ms[b] for b in batches},
            "compressed_ms": {str(b): timing.compressed_ms[b] for b in batches},
            "ratio": {str(b): timing.ratio[b] for b in batches},
            "spread": {str(b): timing.spread[b] for b in batches},
            "trusted": {str(b): timing.trusted(b) for b in batches},
            **({"p90_ms": {name: {str(b): ms for b, ms in values.items()} for name, values in timing.p90_ms.items()}}
               if timing.p90_ms else {})}
    for runtime, reason in measured.gpu_unavailable.items():
        section[runtime] = {"unavailable": reason}
    return section


def summary_table(report: dict) -> str:
    """The one-screen summary printed at the end of a run."""
    table = Table(title=f"cascomp compress · {report['method']} · {report['data']['name']}")
    table.add_column("")
    table.add_column("baseline", justify="right")
    table.add_column("compressed", justify="right")
    table.add_column("ratio", justify="right")
    base, small, ratios = report["baseline"], report["compressed"], report["ratios"]
    table.add_row("MFLOPs", f"{base['flops'] / 1e6:.2f}", f"{small['flops'] / 1e6:.2f}", f"{ratios['flops']:.3f}")
    table.add_row("params", f"{base['params']:,.0f}", f"{small['params']:,.0f}", f"{ratios['params']:.3f}")
    table.add_row("top-1", f"{base['top1']:.4f}", f"{small['top1']:.4f}", f"{small['top1'] - base['top1']:+.4f}")
    latency = report["latency"]
    for batch, ms in base["latency_ms"].items():
        spread = latency["spread"][batch]
        table.add_row(f"latency b{batch} (ms)", f"{ms:.3f}", f"{small['latency_ms'][batch]:.3f}",
                      f"{ratios[f'latency_b{batch}']:.3f} ±{spread / 2:.3f}" + ("" if latency["trusted"][batch] else " ?"))
    for runtime, timing in report.get("latency_gpu", {}).items():
        for batch, ms in timing.get("baseline_ms", {}).items():
            table.add_row(f"{runtime} b{batch} (ms)", f"{ms:.3f}", f"{timing['compressed_ms'][batch]:.3f}",
                          f"{timing['ratio'][batch]:.3f} ±{timing['spread'][batch] / 2:.3f}"
                          + ("" if timing["trusted"][batch] else " ?"))
    table.add_row("widths", "", f"multiples of {report['round_to']}", "")
    for metric, target in report["targets"].items():
        if target.get("upper_bound"):
            mark = "at most: " + ("yes" if target["reached"] <= target["goal"] + 1e-12 else "NO")
        else:
            mark = "within 1 %: " + ("yes" if target["within_1pct"] else "NO")
        table.add_row(f"target {metric}", f"{target['goal']:.3f}", f"{target['reached']:.4f}", mark)
    tolerance = report["search"].get("method", {}).get("tolerance")
    if tolerance:  # the validation drop of the architecture the loop settled on, before fine-tuning
        drop = tolerance["val_drop"]
        table.add_row("target drop (pt)", f"{tolerance['drop']:g}", "-" if drop is None else f"{drop:.2f}",
                      f"held in search: {'yes' if tolerance['held'] else 'NO'}")
    console = Console(width=100, record=True, file=open(os.devnull, "w"))
    console.print(table)
    doubtful = [batch for batch, trusted in latency["trusted"].items() if not trusted]
    if doubtful:
        console.print(f"latency ratio ? (batch {', '.join(doubtful)}): its {latency['rounds']} interleaved rounds "
                      f"disagree by more than {UNTRUSTED_SPREAD:.0%} of it, so the machine was busy; time the two "
                      "ONNX files with `cascomp profile` on an idle machine")
    return console.export_text()

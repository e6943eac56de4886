"""What a compress run measured and wrote: report.json, the one-screen summary, and the files in OUT/."""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

import torch
import torch.nn as nn
from rich.console import Console
from rich.table import Table

from cascomp.export.atomic import atomic_output
from cascomp.config import CompressConfig
from cascomp.errors import ConfigError
from cascomp.export import OnnxExportResult
from cascomp.export.compare import UNTRUSTED_SPREAD, compare_latency
from cascomp.ir.graph import Graph
from cascomp.ir.plan import Plan
from cascomp.plots import plot_search, plot_widths
from cascomp.search.budget import Fit
from cascomp.search.checkpoint import FILE as CHECKPOINT
from cascomp.search.driver import History, evaluate

REPORT_FORMAT = 1


def build_report(*, graph: Graph, teacher: nn.Module, small: nn.Module, fit: Fit, data, config: CompressConfig,
                 example_inputs, search: History, finetune: History, exported: OnnxExportResult,
                 baseline_exported: OnnxExportResult, probes: dict | None = None) -> dict:
    """`exported`, `baseline_exported`: the checked ONNX exports of `small` and `teacher`, timed as they are in
    interleaved rounds. `probes`: what the method's probes cost (count, images, seconds), if it had any."""
    baseline_cost, cost = graph.cost(), graph.cost(fit.plan)
    batches = config.latency_batch_sizes
    timing = compare_latency((teacher, baseline_exported), (small, exported), example_inputs, batches)
    baseline = {**baseline_cost.to_dict(), "top1": evaluate(teacher, data.val),
                "latency_ms": {str(b): timing.baseline_ms[b] for b in batches}}
    compressed = {**cost.to_dict(), "top1": evaluate(small, data.val),
                  "latency_ms": {str(b): timing.compressed_ms[b] for b in batches}}
    ratios = {"flops": cost.flops / baseline_cost.flops, "params": cost.params / baseline_cost.params}
    ratios.update({f"latency_b{b}": timing.ratio[b] for b in batches})
    latency = {"rounds": timing.rounds, "threads": timing.threads, "cpus": os.cpu_count(),
               "spread": {str(b): timing.spread[b] for b in batches},
               "trusted": {str(b): timing.trusted(b) for b in batches}}
    within = fit.within()
    return {
        "format": REPORT_FORMAT, "method": config.method, "config": config.to_dict(),
        "data": {"name": data.name, "train_size": data.train_size, "val_size": data.val_size,
                 "input_shape": list(data.input_shape), "num_classes": data.num_classes},
        "targets": {m: {"goal": g, "reached": fit.reached[m], "within_1pct": within[m]} for m, g in fit.goals.items()},
        "baseline": baseline, "compressed": compressed, "ratios": ratios, "latency": latency,
        "prunable_share": graph.prunable_share(),  # the cost in layers with a prunable channel
        "widths": {g.name: {"before": g.size, "after": fit.widths[g.name]} for g in graph.groups},
        "round_to": graph.constraints.round_to,  # the multiple every pruned width is (config round_to "auto": chosen)
        "search": {"epochs": search.epochs, "trajectory": search.trajectory, "probes": probes},
        "finetune": {"epochs": finetune.epochs},
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "threads": torch.get_num_threads()},
    }


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
    table.add_row("widths", "", f"multiples of {report['round_to']}", "")
    for metric, target in report["targets"].items():
        mark = "yes" if target["within_1pct"] else "NO"
        table.add_row(f"target {metric}", f"{target['goal']:.3f}", f"{target['reached']:.4f}", f"within 1 %: {mark}")
    console = Console(width=100, record=True, file=open(os.devnull, "w"))
    console.print(table)
    doubtful = [batch for batch, trusted in latency["trusted"].items() if not trusted]
    if doubtful:
        console.print(f"latency ratio ? (batch {', '.join(doubtful)}): its {latency['rounds']} interleaved rounds "
                      f"disagree by more than {UNTRUSTED_SPREAD:.0%} of it, so the machine was busy; time the two "
                      "ONNX files with `cascomp profile` on an idle machine")
    return console.export_text()


class Outputs:
    """The files of OUT/: model.pt (torch.save of the plain module), state_dict.pt, model.onnx, plan.json,
    widths.png, search.png and, last, report.json: a folder holding report.json holds a finished run.

    A folder holding any of them (or a checkpoint) is another run's: refused unless `force` (its outputs are
    then removed before the run starts, so an interrupted rerun never passes for the finished old one) or
    `resume` (the run is that one)."""

    FILES = ("report.json", "model.pt", "state_dict.pt", "model.onnx", "plan.json", "widths.png", "search.png")

    def __init__(self, directory: str | os.PathLike, *, force: bool = False, resume: bool = False) -> None:
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise ConfigError(f"output folder {str(self.directory)!r} is a file; choose a folder with -o")
        existing = [name for name in (*self.FILES, CHECKPOINT) if (self.directory / name).exists()]
        if existing and not (force or resume):
            raise ConfigError(f"output folder {str(self.directory)!r} already holds {', '.join(existing)} of another "
                              "run; pass force=True to replace them, resume=True to continue an interrupted run, "
                              "or choose another folder")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot create output folder {str(self.directory)!r}: {error.strerror}") from error
        if force and not resume:
            self.clear(self.directory, (CHECKPOINT,))

    @classmethod
    def clear(cls, directory: Path, extra: tuple[str, ...] = ()) -> None:
        """Remove the outputs of a run from `directory`, report.json first, then the `extra` files."""
        for name in (*cls.FILES, *extra):
            path = Path(directory) / name
            try:
                if path.is_file() or path.is_symlink():
                    path.unlink()
            except OSError as error:
                raise ConfigError(f"cannot remove {str(path)!r} of an earlier run: {error.strerror or error}; "
                                  "remove it yourself or choose another output folder") from error

    def write(self, model: nn.Module, plan: Plan, report: dict, exported: OnnxExportResult) -> None:
        """`exported`: the model's ONNX export, already checked against torch; model.onnx is a copy of it."""
        model = model.eval()
        self._save(lambda path: torch.save(model, path), "model.pt")
        self._save(lambda path: torch.save(model.state_dict(), path), "state_dict.pt")
        self._save(lambda path: shutil.copyfile(exported.path, path), "model.onnx")
        self._save(lambda path: Path(path).write_text(plan.to_json()), "plan.json")
        self._save(lambda path: plot_widths(report, path), "widths.png")
        if report["search"]["trajectory"]:
            self._save(lambda path: plot_search(report, path), "search.png")
        self._save(lambda path: Path(path).write_text(json.dumps(report, indent=1)), "report.json")

    def _save(self, write, name: str) -> None:
        with atomic_output(self.directory / name, force=True) as temporary:
            write(temporary)

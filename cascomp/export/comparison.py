"""The table of `cascomp compare`: a row per method over its runs and the baseline's row, written as
compare.png, compare.md and, last, compare.json, each whole or not at all.

Nothing here runs or measures: `cascomp.api.compare` runs compress once per method and seed and hands over
each run's report (what its report.json holds) or its error. A method's top-1 is the mean ± the sample
standard deviation (n - 1) over its finished runs; every other figure of its row is the mean over them.
The baseline's row is the mean of what those runs measured of the baseline (the same model and data in each).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cascomp.export.atomic import atomic_output
from cascomp.export.plots import plot_comparison

COMPARISON_FORMAT = 1
FILES = ("compare.png", "compare.md", "compare.json")  # in the order written: compare.json last
_METRIC_NAMES = {"flops": "FLOPs", "params": "params"}


@dataclass(frozen=True)
class RunOutcome:
    """One compress run of a compare: its report (what its report.json holds), or why it failed."""
    method: str
    seed: int
    folder: str
    report: dict | None = None
    error: str | None = None  # the CascompError's message


@dataclass(frozen=True)
class ComparisonRow:
    """A line of the table: the means over a method's finished runs (None where none finished)."""
    method: str
    runs: int  # the finished runs the figures are means over
    mflops: float | None = None
    params: float | None = None
    top1_percent: float | None = None
    top1_std_percent: float | None = None  # sample standard deviation over the runs; None for fewer than two
    delta_top1_points: float | None = None  # top-1 minus the baseline's, in percentage points
    targets: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> {"goal", "reached"} ratios
    latency_ms: dict[str, float] = field(default_factory=dict)  # batch size -> onnxruntime CPU median, ms
    seconds: float | None = None  # wall time of a run (report["timings"]["total"])
    failures: tuple[str, ...] = ()  # "seed K: why", one per failed run


@dataclass(frozen=True)
class Comparison:
    data: str  # the data's name
    seeds: tuple[int, ...]
    baseline: ComparisonRow
    rows: tuple[ComparisonRow, ...]  # one per method, in the order they ran

    def to_dict(self) -> dict:
        return {"format": COMPARISON_FORMAT, "data": self.data, "seeds": list(self.seeds),
                "top1_std": "sample standard deviation (n - 1) over each method's finished runs",
                "baseline": asdict(self.baseline), "methods": [asdict(row) for row in self.rows]}

    def markdown(self) -> str:
        """A title, a caption, the table (the baseline first) and the failed runs' messages."""
        metrics = list(dict.fromkeys(metric for row in self.rows for metric in row.targets))
        batches = list(dict.fromkeys(batch for row in (self.baseline, *self.rows) for batch in row.latency_ms))
        header = ["method", "MFLOPs", "#Parameters", "Top-1 (%)", "Δ top-1 (pt)",
                  *(f"{_METRIC_NAMES.get(metric, metric)} reached / target" for metric in metrics),
                  *(f"latency b{batch} (ms)" for batch in batches), "wall time (s)"]
        lines = [f"# cascomp compare · {self.data}", "", self._caption(), "",
                 "| " + " | ".join(header) + " |", "|---" + "|--:" * (len(header) - 1) + "|"]
        for row in (self.baseline, *self.rows):
            cells = _cells(row, metrics, batches, baseline=row is self.baseline)
            lines.append("| " + " | ".join(cells + [""] * (len(header) - len(cells))) + " |")
        failures = [f"- {row.method}, {failure}" for row in self.rows for failure in row.failures]
        if failures:
            lines += ["", "Failed runs:", *(_escaped(line) for line in failures)]
        return "\n".join(lines) + "\n"

    def _caption(self) -> str:
        seeds = ", ".join(map(str, self.seeds))
        spread = (f"Top-1 is the mean ± the sample standard deviation (n - 1) over the {len(self.seeds)} seeds "
                  f"{seeds}; every other figure is the mean over them" if len(self.seeds) > 1 else
                  f"One run per method, seed {seeds}")
        return (f"{spread}. Top-1 on the validation split; Δ top-1 against the baseline in percentage points; "
                "reached / target: the cost as a ratio of the baseline's, and its budget; latency: onnxruntime "
                "on the CPU, median ms per batch of the given size; wall time: one compress run.")


def summarise(outcomes: Sequence[RunOutcome], *, data: str, seeds: Sequence[int]) -> Comparison:
    """The table of a compare's runs: one row per method, in the order of `outcomes`."""
    methods = dict.fromkeys(outcome.method for outcome in outcomes)
    rows = tuple(_method_row(method, [o for o in outcomes if o.method == method]) for method in methods)
    reports = [outcome.report for outcome in outcomes if outcome.report is not None]
    baselines = [report["baseline"] for report in reports]
    baseline = ComparisonRow(method="baseline", runs=len(reports),
                             mflops=_mean(entry["flops"] / 1e6 for entry in baselines),
                             params=_mean(entry["params"] for entry in baselines),
                             top1_percent=_mean(100 * entry["top1"] for entry in baselines),
                             latency_ms=_mean_latency(baselines))
    return Comparison(data=data, seeds=tuple(seeds), baseline=baseline, rows=rows)


def _method_row(method: str, outcomes: list[RunOutcome]) -> ComparisonRow:
    reports = [outcome.report for outcome in outcomes if outcome.report is not None]
    failures = tuple(f"seed {outcome.seed}: {outcome.error}" for outcome in outcomes if outcome.error is not None)
    if not reports:
        return ComparisonRow(method=method, runs=0, failures=failures)
    compressed = [report["compressed"] for report in reports]
    top1 = [100 * entry["top1"] for entry in compressed]
    goals = {metric: target["goal"] for metric, target in reports[0]["targets"].items()}
    return ComparisonRow(
        method=method, runs=len(reports), mflops=_mean(entry["flops"] / 1e6 for entry in compressed),
        params=_mean(entry["params"] for entry in compressed), top1_percent=statistics.fmean(top1),
        top1_std_percent=statistics.stdev(top1) if len(top1) > 1 else None,
        delta_top1_points=_mean(100 * (r["compressed"]["top1"] - r["baseline"]["top1"]) for r in reports),
        targets={metric: {"goal": goal, "reached": _mean(r["targets"][metric]["reached"] for r in reports)}
                 for metric, goal in goals.items()},
        latency_ms=_mean_latency(compressed), seconds=_mean(r.get("timings", {}).get("total") for r in reports),
        failures=failures)


def _mean(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.fmean(present) if present else None


def _mean_latency(entries: list[dict]) -> dict[str, float]:
    batches = dict.fromkeys(batch for entry in entries for batch in entry["latency_ms"])
    return {batch: _mean(entry["latency_ms"].get(batch) for entry in entries) for batch in batches}


def _cells(row: ComparisonRow, metrics: list[str], batches: list[str], *, baseline: bool) -> list[str]:
    """The row's cells; a method none of whose runs finished is its name and why it failed."""
    if row.runs == 0 and row.failures:
        return [row.method, _escaped(f"failed: {row.failures[0].partition(': ')[2]}")]
    name = row.method if not row.failures else f"{row.method} ({row.runs} of {row.runs + len(row.failures)} runs)"
    top1 = _number(row.top1_percent, ".2f")
    if row.top1_std_percent is not None:
        top1 += f" ± {row.top1_std_percent:.2f}"
    reached = ["" if baseline else _reached(row.targets.get(metric)) for metric in metrics]
    return [name, _number(row.mflops, ".2f"), _count(row.params), top1,
            "" if baseline else _number(row.delta_top1_points, "+.2f"), *reached,
            *(_number(row.latency_ms.get(batch), ".3f") for batch in batches),
            "" if baseline else _number(row.seconds, ".1f")]


def _number(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _count(value: float | None) -> str:
    """Parameters as the survey's tables write them: 0.27M, 12.3K."""
    if value is None:
        return "–"
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}K" if value >= 1e3 else f"{value:.0f}"


def _reached(target: dict | None) -> str:
    return "–" if target is None else f"{target['reached']:.3f} / {target['goal']:.3f}"


def _escaped(text: str) -> str:
    """One line that cannot break the table: a message may hold newlines or '|'."""
    return " ".join(text.split()).replace("|", "\\|")


def write_comparison(comparison: Comparison, outcomes: Sequence[RunOutcome], directory) -> dict[str, Path]:
    """compare.png, compare.md and compare.json in `directory`, each replaced only once complete; compare.json
    (the table and every run's folder and error) goes last. Returns {"png", "md", "json"} -> path."""
    directory = Path(directory)
    document = {**comparison.to_dict(),
                "runs": [{"method": o.method, "seed": o.seed, "folder": o.folder, "finished": o.report is not None,
                          "error": o.error} for o in outcomes]}
    writers = {"png": lambda path: plot_comparison(comparison, path),
               "md": lambda path: Path(path).write_text(comparison.markdown(), encoding="utf-8"),
               "json": lambda path: Path(path).write_text(json.dumps(document, indent=1), encoding="utf-8")}
    paths = {}
    for name, (kind, write) in zip(FILES, writers.items()):
        with atomic_output(directory / name, force=True) as temporary:
            write(temporary)
        paths[kind] = directory / name
    return paths

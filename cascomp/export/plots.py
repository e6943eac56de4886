"""PNG plots of a compress run (widths per group before and after, the search trajectory) and of a compare
(top-1 against cost and latency, a point per method)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

if TYPE_CHECKING:  # the argument's type only
    from cascomp.export.comparison import Comparison


def plot_widths(report: dict, path) -> None:
    names = list(report["widths"])
    before = [report["widths"][n]["before"] for n in names]
    after = [report["widths"][n]["after"] for n in names]
    figure, axes = plt.subplots(figsize=(max(6.0, 0.35 * len(names) + 2), 4))
    positions = range(len(names))
    axes.bar(positions, before, color="#c8d6e5", label="baseline")
    axes.bar(positions, after, color="#2e86de", label=f"{report['method']} (FLOPs {report['ratios']['flops']:.3f})")
    axes.set_xticks(list(positions), names, rotation=75, ha="right", fontsize=7)
    axes.set_ylabel("channels")
    axes.set_title("Width of each channel group")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=110)
    plt.close(figure)


def plot_search(report: dict, path) -> None:
    points = report["search"]["trajectory"]
    epochs = [p["epoch"] for p in points]
    metrics = [m for m in report["targets"]]
    figure, (cost, weight, accuracy) = plt.subplots(3, 1, figsize=(7, 7), sharex=True)
    for metric in metrics:
        line, = cost.plot(epochs, [p[f"expected_{metric}"] for p in points], label=f"expected {metric}")
        cost.axhline(report["targets"][metric]["goal"], color=line.get_color(), linestyle="--", linewidth=0.8)
        weight.plot(epochs, [p[f"lambda_{metric}"] for p in points], label=f"λ {metric}")
    cost.set_ylabel("ratio of baseline")
    cost.legend()
    if any(p[f"lambda_{metric}"] > 0 for p in points for metric in metrics):  # a method without λ has none
        weight.set_yscale("log")
    weight.set_ylabel("λ")
    weight.legend()
    accuracy.plot(epochs, [p["train_acc"] for p in points], label="train (running)")
    rows = report["search"]["epochs"]
    accuracy.plot([r["epoch"] for r in rows], [r["val_acc"] for r in rows], "o-", label="validation")
    accuracy.set_ylabel("top-1")
    accuracy.set_xlabel("search epoch")
    accuracy.legend()
    figure.suptitle(f"{report['method']} search")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=110)
    plt.close(figure)


def plot_comparison(comparison: Comparison, path) -> None:
    """Two panels: top-1 against MFLOPs and against onnxruntime latency at batch 1 (else the first batch size
    measured); a labelled point per method with finished runs (± the std over seeds), the baseline a star."""
    batches = list(comparison.baseline.latency_ms)
    batch = "1" if "1" in batches else (batches[0] if batches else None)
    figure, panels = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    axes_of = ((panels[0], "MFLOPs", lambda row: row.mflops),
               (panels[1], f"onnxruntime CPU latency, batch {batch} (ms)", lambda row: row.latency_ms.get(batch)))
    for axes, label, x_of in axes_of:
        shown = [row for row in comparison.rows if x_of(row) is not None and row.top1_percent is not None]
        for row in shown:
            axes.errorbar(x_of(row), row.top1_percent, yerr=row.top1_std_percent, fmt="o", color="#2e86de",
                          capsize=3)
        base = comparison.baseline
        if x_of(base) is not None and base.top1_percent is not None:
            axes.plot(x_of(base), base.top1_percent, "*", color="#ee5253", markersize=14, label="baseline")
            axes.legend(loc="lower right")
        _label_points(axes, [(row.method, x_of(row), row.top1_percent) for row in shown],
                      [(x_of(row), row.top1_percent) for row in (*shown, base)
                       if x_of(row) is not None and row.top1_percent is not None])
        axes.set_xlabel(label)
        axes.margins(0.15)  # room for the labels
        axes.grid(alpha=0.3)
    panels[0].set_ylabel("top-1 (%)")
    figure.suptitle(f"cascomp compare · {comparison.data}")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=110)
    plt.close(figure)


def _label_points(axes, labels: list[tuple[str, float, float]], extent: list[tuple[float, float]]) -> None:
    """Each point's name beside it; the names of points within 3 % of the plot's extent of one already named
    go below that one's, so that methods landing close together stay readable."""
    if not labels:
        return
    xs, ys = [x for x, _ in extent], [y for _, y in extent]
    width, height = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    named: list[tuple[float, float]] = []
    for name, x, y in labels:
        close = sum(abs(x - u) < 0.03 * width and abs(y - v) < 0.03 * height for u, v in named)
        axes.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5 - 11 * close), fontsize=8)
        named.append((x, y))

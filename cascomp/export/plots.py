"""PNG plots of a compress run: widths per group before and after, and the search trajectory."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402


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

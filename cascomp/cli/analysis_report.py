"""What `cascomp analyze` reports: a JSON-ready dict built from a Graph, and its rendering as rich tables.

The tables are drawn from the very dict that --json prints, so the two outputs never disagree.
"""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cascomp.ir.graph import LOW_PRUNABLE_SHARE, Graph

_MODULES_SHOWN = 3  # the modules column lists this many, then "+N"; --json lists them all


def analysis_report(graph: Graph, *, model: str, source: str, inputs: list[dict], config: dict) -> dict:
    """Totals, channel groups with their cost shares, frozen channels and the reachable minimum cost."""
    baseline = graph.cost()
    smallest = graph.min_cost()
    # group_shares differentiates the cost by the groups' widths, which fails when there are none.
    shares = graph.cost_model.group_shares() if graph.groups else []
    groups = [{**group.to_dict(), "modules": list(group.modules), "flops_share": share.flops,
               "params_share": share.params} for group, share in zip(graph.groups, shares)]
    uncounted = [{"op": what, "node": node} for what, node in graph.record.uncounted]
    opaque = [{"op": what, "node": node} for what, node in graph.record.counted_opaque]
    totals, smallest_totals, ratio = baseline.to_dict(), smallest.to_dict(), smallest.ratio(baseline).to_dict()
    if uncounted and not baseline.macs:  # nothing counted is not "0 FLOPs": the cost is unknown (JSON null)
        for values in (totals, smallest_totals, ratio):
            values.update(flops=None, macs=None)
    return {
        "model": model,
        "source": source,
        "model_class": type(graph.gm).__name__,
        "inputs": inputs,
        "config": config,
        "totals": totals,
        "uncounted": uncounted,  # ops holding weights whose multiply-adds the cost model cannot count
        "opaque": opaque,  # ops holding weights the analysis does not understand, counted by running them
        "groups": groups,
        "frozen": [{"node": f.node, "reason": f.reason, "channels": f.channels}
                   for f in graph.frozen + graph.output_frozen],
        "prunable_share": graph.prunable_share(),  # the cost that scales with some group's width
        "search_space": {"smallest": smallest_totals, "smallest_ratio": ratio},
        "notes": _notes(source, groups, graph.frozen + graph.output_frozen, baseline.macs, uncounted, opaque),
    }


def _notes(source: str, groups: list[dict], frozen, macs: float, uncounted: list[dict],
           opaque: list[dict]) -> list[str]:
    notes = []
    if uncounted:
        counted = "FLOPs and MACs are unknown" if not macs else "FLOPs and MACs are a lower bound"
        notes.append(f"{counted}: the cost model counts the convolutions, linear layers and attention the "
                     f"channel analysis understands, and cannot count {_ops(uncounted)}")
    if opaque:
        notes.append(f"the channel analysis does not understand {_ops(opaque)}: their channels stay, and their "
                     "multiply-adds are counted by running them")
    uncounted = uncounted + opaque
    if uncounted and source == "torch.export":
        notes.append("a .pt2 is understood when exported without decompositions (torch.export.export, then "
                     "torch.export.save, no run_decompositions()); or analyse the model saved with torch.save, "
                     "or --factory with a state dict")
    if groups:
        return notes
    if frozen:
        reasons = list(dict.fromkeys(f.reason for f in frozen))
        notes.append(f"nothing can be pruned: every channel is frozen (see the table above): {_listed(reasons)}")
    elif uncounted:
        notes.append("nothing can be pruned: the channel analysis understands none of the layers that hold "
                     "weights (see the first note)")
    else:
        notes.append("nothing can be pruned: the model has no layer with channels to remove")
    return notes


def _ops(items: list[dict]) -> str:
    nodes: dict[str, list[str]] = {}
    for item in items:
        nodes.setdefault(item["op"], []).append(item["node"])
    return _listed([f"{op} (node{'s' * (len(names) > 1)} {_listed(names, 2, ', ')})" for op, names in nodes.items()])


def _listed(items: list[str], shown: int = 3, separator: str = "; ") -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return separator.join(items[:shown]) + more


def render_analysis(report: dict, console: Console) -> None:
    totals = report["totals"]
    shapes = ", ".join("x".join(map(str, i["shape"])) + f" {i['dtype']}" for i in report["inputs"])
    console.print(Text.assemble(("Model   ", "bold"), f"{report['model']} ({report['model_class']}, "
                                f"loaded from {report['source']})"))
    console.print(Text.assemble(("Inputs  ", "bold"), shapes))
    if totals["macs"] is None:
        cost = f"{_si(totals['params'])} params; MACs and FLOPs unknown (see the note below)"
    else:
        bound = "at least " if report["uncounted"] else ""
        cost = f"{_si(totals['params'])} params, {bound}{_si(totals['macs'])} MACs, {_si(totals['flops'])} FLOPs per sample"
    console.print(Text.assemble(("Cost    ", "bold"), cost))
    share = report["prunable_share"]
    low = any(value is not None and value < LOW_PRUNABLE_SHARE for value in share.values())
    console.print(Text.assemble(("Prunable", "bold"), " ", Text(
        ", ".join(f"{value:.1%} of the {name}" for name, value in (("FLOPs", share["flops"]),
                                                                     ("params", share["params"])) if value is not None)
        or "nothing", style="yellow" if low else "")))
    console.print()
    console.print(_groups_table(report["groups"]))
    console.print(_frozen_table(report["frozen"]))
    _render_search_space(report, console)
    for note in report["notes"]:
        console.print(Text(f"note: {note}", style="yellow"))


def _groups_table(groups: list[dict]) -> Table | Text:
    if not groups:
        return Text("Channel groups: none", style="bold")
    channels = sum(g["size"] for g in groups)
    table = Table(title=f"Channel groups: {len(groups)} group{'s' * (len(groups) != 1)}, {channels} channels", title_justify="left",
                  title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
                  caption="FLOPs, params: the share of the model's cost that scales with the group's width",
                  caption_justify="left")
    for header, justify in (("id", "right"), ("name", "left"), ("size", "right"), ("unit", "right"),
                            ("members", "right"), ("FLOPs", "right"), ("params", "right")):
        table.add_column(header, justify=justify, no_wrap=True)
    table.add_column("modules", overflow="fold")
    for g in groups:
        modules = ", ".join(g["modules"][:_MODULES_SHOWN])
        if len(g["modules"]) > _MODULES_SHOWN:
            modules += f", +{len(g['modules']) - _MODULES_SHOWN}"
        table.add_row(str(g["id"]), g["name"], str(g["size"]), str(g["unit"]), str(len(g["members"])),
                      f"{g['flops_share']:.1%}", f"{g['params_share']:.1%}", modules)
    return table


def _frozen_table(frozen: list[dict]) -> Table | Text:
    if not frozen:
        return Text("Frozen channels: none (model inputs always keep theirs)\n", style="bold")
    table = Table(title="Frozen channels (never pruned)", title_justify="left", title_style="bold",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("node", no_wrap=True)
    table.add_column("reason", overflow="fold")
    table.add_column("channels", justify="right", no_wrap=True)
    for f in frozen:
        table.add_row(f["node"] or "-", f["reason"], str(f["channels"]))
    return table


def _render_search_space(report: dict, console: Console) -> None:
    config, totals = report["config"], report["totals"]
    smallest, ratio = report["search_space"]["smallest"], report["search_space"]["smallest_ratio"]
    console.print(Text(f"Search space: every group at its smallest width (min_keep={config['min_keep']}, "
                       f"round_to={config['round_to']}) leaves", style="bold"))
    if totals["flops"] is None:
        console.print("  FLOPs  unknown")
    else:
        console.print(f"  FLOPs  {_si(smallest['flops'])} of {_si(totals['flops'])} ({ratio['flops']:.2%})")
    console.print(f"  params {_si(smallest['params'])} of {_si(totals['params'])} ({ratio['params']:.2%})")


def _si(value: float) -> str:
    """1234567 -> '1.23 M': three significant digits with a K/M/G/T suffix."""
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {suffix}"
    return f"{value:.3g}"

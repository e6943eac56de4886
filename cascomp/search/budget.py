"""Budgets that are hit, not approximated: turn a method's proposal into a plan within 1 % below every target.

A method proposes channel scores and a one-parameter *family* of widths (s in [0, 1] -> keep fraction per
group, growing with s: s = 0 is every group at its minimum, s = 1 every group whole), which the projection
rounds to the legal widths of the constraints it works under; a fraction of exactly 0 removes a group whose
residual branch the depth analysis lets go (`graph.depth.removable`: width 0, the branch rewritten away) and
is the group's minimum width otherwise. The projection
1. refuses targets below the floor (every group at its minimum width; frozen channels stay);
2. bisects s for the widest member of the family that fits every target;
3. fills the remaining budget one legal width step at a time, always taking the step whose channels score
   highest among the steps that still fit, until none fits; a group the method proposed removing (width 0)
   stays removed, unless the budget cannot be landed within 1 % otherwise (then a second fill may grow it);
4. when a small model's steps are too coarse for that to land within 1 %, trades one step of one group for
   steps of others while that brings the binding cost closer to its target (removed groups stay removed).
5. with round_to="auto" (compress's default), does all this under widths in multiples of 8 first, then 4, 2
   and 1, and keeps the first whose binding target lands within 1 %: hardware-friendly widths where the
   budget allows them, an exact budget always.
Widths are then cut from each group's channels in score order. Costs depend only on widths (products of kept
counts), so every candidate is priced exactly by the cost model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cascomp.config import Target
from cascomp.errors import SearchError
from cascomp.ir.graph import Graph
from cascomp.ir.plan import Plan
from cascomp.methods.families import Family

TOLERANCE = 0.01
# Width multiples `compress` tries by default (round_to="auto"), largest first: onnxruntime's CPU kernels run
# widths in multiples of 8 much faster than odd ones (see the README's latency table).
PREFERRED_MULTIPLES = (8, 4, 2, 1)


@dataclass(frozen=True)
class Fit:
    plan: Plan
    widths: dict[str, int]
    reached: dict[str, float]  # ratio of the baseline per metric
    goals: dict[str, float]  # target ratio per metric

    def within(self, tolerance: float = TOLERANCE) -> dict[str, bool]:
        return {m: goal * (1 - tolerance) - 1e-12 <= self.reached[m] <= goal + 1e-12 for m, goal in self.goals.items()}


def target_ratios(graph: Graph, targets: tuple[Target, ...]) -> dict[str, float]:
    """Each cost target as a ratio of the baseline (an accuracy tolerance is not one); refuses targets under
    the floor (case 1)."""
    baseline, floor = graph.cost(), graph.min_cost()
    goals = {}
    for target in targets:
        if not graph.groups:
            raise SearchError(f"target {target} cannot be reached: nothing in this model can be pruned, "
                              f"{_why_nothing_prunes(graph)}; `cascomp analyze` shows the details")
        if not target.is_cost:
            continue
        total = getattr(baseline, target.metric)
        if not total:  # checked before the ratio: an absolute budget would divide by zero
            raise SearchError(f"target {target}: {_no_cost(graph, target.metric)}")
        goal = target.ratio(total)
        lowest = getattr(floor, target.metric) / total
        if goal >= 1:
            raise SearchError(f"target {target} is not below the baseline's {target.metric} ({total:,.0f}); "
                              "give a smaller budget")
        if goal < lowest:
            frozen = sum(f.channels for f in graph.frozen)
            reasons = "; ".join(f"{reason}: {channels}" for reason, channels in graph.frozen_reasons()[:2])
            raise SearchError(f"target {target} ({goal:.3f} of the baseline) is below this model's floor of "
                              f"{lowest:.3f}: every group at its minimum width ({graph.constraints.min_keep} channel, "
                              f"round_to={graph.constraints.round_to}) with {frozen} frozen channel(s) ({reasons}); "
                              f"choose {target.metric}≥{lowest:.3f} or {_floor_levers(graph)}")
        goals[target.metric] = goal
    return goals


def _no_cost(graph: Graph, metric: str) -> str:
    uncounted = sorted({what for what, _ in graph.record.uncounted})
    if uncounted:
        return (f"the cost model cannot count this model's {metric}: the channel analysis does not understand "
                f"{'; '.join(uncounted[:3])}; target params= instead, or give those layers as nn.Modules the "
                "analysis knows (Conv, Linear, ...)")
    return f"this model has no {metric} to reduce (no convolution, linear or attention layer); target params="


def _why_nothing_prunes(graph: Graph) -> str:
    """Ops the analysis does not understand first (what to change), then the frozen channels' reasons."""
    parts = []
    uncounted = sorted({what for what, _ in graph.record.uncounted + graph.record.counted_opaque})
    if uncounted:
        parts.append("the channel analysis does not understand " + "; ".join(uncounted[:3]) + " (it reads models "
                     "saved with torch.save, --factory, and .pt2 files exported without run_decompositions())")
    reasons = list(dict.fromkeys(f.reason for f in graph.frozen + graph.output_frozen))
    if reasons:
        parts.append("every channel is frozen: " + "; ".join(reasons[:3]))
    return "; ".join(parts) or "it has no layer with channels to remove"


def _floor_levers(graph: Graph) -> str:
    """What lowers the floor, besides a larger target: the constraints that keep channels."""
    constraints, levers = graph.constraints, []
    if constraints.round_to > 1:
        levers.append(f"lower --round-to (now {constraints.round_to}; 1 allows any width)")
    if constraints.min_keep > 1:
        levers.append(f"lower --min-keep (now {constraints.min_keep})")
    if constraints.ignore:
        levers.append("drop --ignore patterns (their channels stay)")
    return " or ".join(levers) if levers else "compress a larger model"


def fit_widths(graph: Graph, scores: dict[str, torch.Tensor], family: Family, goals: dict[str, float]) -> Fit:
    baseline = graph.cost()
    orders = {g.name: torch.argsort(scores[g.name].double(), descending=True, stable=True) for g in graph.groups}

    def ratios(widths: dict[str, int]) -> dict[str, float]:
        keep = torch.zeros(graph.channels, dtype=torch.float64)
        for group, offset in zip(graph.groups, graph.offsets):
            keep[offset + orders[group.name][:widths[group.name]]] = 1
        cost = graph.cost_model.cost(keep)
        return {m: getattr(cost, m) / getattr(baseline, m) for m in goals}

    fits = lambda widths: all(r <= goals[m] + 1e-12 for m, r in ratios(widths).items())  # noqa: E731
    member = lambda s: _rounded(graph, family(s))  # noqa: E731
    low, high = 0.0, 1.0
    if not fits(member(0.0)):
        raise SearchError(f"even the smallest widths of this method miss the target; raise the target or "
                          f"{_floor_levers(graph)}")
    for _ in range(40):  # case 2
        middle = (low + high) / 2
        low, high = (middle, high) if fits(member(middle)) else (low, middle)
    widths = member(low)
    removed = frozenset(name for name, width in widths.items() if width == 0)
    widths = _fill(graph, widths, scores, orders, fits, blocked=removed)  # case 3
    reached = ratios(widths)
    if removed and all((goals[m] - r) / goals[m] > TOLERANCE for m, r in reached.items()):
        widths = _fill(graph, widths, scores, orders, fits)  # the budget needs the removed groups back
    widths = _tighten(graph, widths, ratios, goals)  # case 4
    plan = Plan({name: tuple(sorted(orders[name][:width].tolist())) for name, width in widths.items()})
    return Fit(plan=plan, widths=widths, reached=ratios(widths), goals=dict(goals))


def fit_preferring_multiples(graph: Graph, scores: dict[str, torch.Tensor], family: Family, goals: dict[str, float],
                             multiples: tuple[int, ...] = PREFERRED_MULTIPLES) -> tuple[Graph, Fit]:
    """Case 5: the first of `multiples` (largest first) whose widths land the binding target within 1 %, with
    the graph under that multiple (the plan validates against it). The last multiple is taken whatever it
    reaches, as `fit_widths` alone would."""
    for multiple in multiples[:-1]:
        view = graph.with_width_multiple(multiple)
        try:
            fit = fit_widths(view, scores, family, goals)
        except SearchError:  # even its smallest widths miss a target
            continue
        if any(fit.within().values()):
            return view, fit
    view = graph.with_width_multiple(multiples[-1])
    return view, fit_widths(view, scores, family, goals)


def _rounded(graph: Graph, fractions: dict[str, float]) -> dict[str, int]:
    removable = graph.depth.removable
    return {g.name: 0 if fractions[g.name] == 0.0 and g.name in removable else graph.constraints.width(g.size, fractions[g.name])
            for g in graph.groups}


def fit_of_plan(graph: Graph, plan: Plan, goals: dict[str, float]) -> Fit:
    """The `Fit` of an existing plan (a resumed run's)."""
    baseline, cost = graph.cost(), graph.cost(plan)
    reached = {m: getattr(cost, m) / getattr(baseline, m) for m in goals}
    return Fit(plan=plan, widths=plan.widths(graph), reached=reached, goals=dict(goals))


def _fill(graph: Graph, widths: dict[str, int], scores, orders, fits,
          blocked: frozenset[str] = frozenset()) -> dict[str, int]:
    widths = dict(widths)
    blocked = set(blocked)  # groups that may not grow
    while True:
        best, best_score = None, -float("inf")
        for group in graph.groups:
            width = widths[group.name]
            step = _next_width(width, group.size, graph.constraints.round_to)
            if group.name in blocked or step == width:
                continue
            added = orders[group.name][width:step]
            score = float(scores[group.name].double()[added].mean())
            if score > best_score:
                best, best_score = (group.name, step), score
        if best is None:
            return widths
        trial = {**widths, best[0]: best[1]}
        if fits(trial):
            widths = trial
        else:
            blocked.add(best[0])  # costs only grow with width, so this group can never grow again


def _tighten(graph: Graph, widths: dict[str, int], ratios, goals: dict[str, float], rounds: int = 8) -> dict[str, int]:
    """Shrink one group by one to three steps and refill the freed budget with the steps of other groups that fit best;
    keep the trade that leaves the least slack."""
    def slack(trial: dict[str, int]) -> float | None:
        reached = ratios(trial)
        if any(r > goals[m] + 1e-12 for m, r in reached.items()):
            return None
        return min((goals[m] - r) / goals[m] for m, r in reached.items())

    current = slack(widths)
    for _ in range(rounds):
        if current is None or current <= TOLERANCE:
            break
        best = None
        for shrink in graph.groups:
            smaller = widths[shrink.name]
            for _ in range(3):  # one, two or three steps down
                smaller = _previous_width(smaller, shrink.size, graph.constraints.round_to,
                                          graph.constraints.smallest(shrink.size))
                trial = _refill(graph, {**widths, shrink.name: smaller}, shrink.name, slack)
                gap = slack(trial)
                if gap is not None and gap < current and (best is None or gap < best[0]):
                    best = (gap, trial)
        if best is None:
            break
        current, widths = best
    return widths


def _refill(graph: Graph, widths: dict[str, int], frozen: str, slack) -> dict[str, int]:
    while True:
        options = []
        for group in graph.groups:
            larger = _next_width(widths[group.name], group.size, graph.constraints.round_to)
            if group.name != frozen and widths[group.name] > 0 and larger != widths[group.name]:
                trial = {**widths, group.name: larger}
                gap = slack(trial)
                if gap is not None:
                    options.append((gap, group.name, trial))
        if not options:
            return widths
        widths = min(options)[2]


def _previous_width(width: int, size: int, multiple: int, smallest: int) -> int:
    if width <= smallest:
        return width
    if width == size and size % multiple:
        return max(smallest, size // multiple * multiple)
    return max(smallest, width - multiple)


def _next_width(width: int, size: int, multiple: int) -> int:
    if width >= size:
        return size
    return min(size, (width // multiple + 1) * multiple)

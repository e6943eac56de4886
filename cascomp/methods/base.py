"""The one interface every compression method implements; the search driver owns the training loop.

A method
- `prepare()`s the model the search trains (the traced graph with the method's search nodes inserted),
- lists its architecture parameters (trained by their own optimiser) and contributes a `penalty()`: the
  expected cost of the current search state as a differentiable ratio of the baseline, per metric,
- may ask for `probes()`: plans whose loss the driver measures without training (`cascomp.train.probe`)
  and hands back through `take_measurements()` before the decision,
- `decide()`s what survives: channel scores plus a family of keep fractions, which `fit_widths` turns into a plan
  that meets every target.
Methods that need no training (`searches = False`) are decided straight from the baseline's weights.

Hooks a searching method may use, none mandatory (the driver, cascomp.train.loops.SearchLoop, calls them):
- `weight_regulariser(model)`: a term added to the weights' loss (group lasso, a KL of variational dropout);
- `controlled = False` with `arch_loss(expected, progress)`: the method's own cost loss on the architecture
  parameters (e.g. a tolerance band) instead of the driver's controlled penalty on `penalty()`;
- `on_step(progress)`: called before every step with the search's progress in [0, 1] (temperature schedules);
- no `arch_parameters()` at all (a search of weights under a regulariser);
- `bilevel = True`: weights step on batches of one half of the training split and architecture parameters on
  the other half (split reproducibly from the seed), one batch of each per step;
- `regularised = True`: the driver sets the strength λ of the method's sparsifying regulariser from the
  budget (cascomp.search.control.StrengthController, started at `initial_strength`): every step it reads
  `measured_ratios(model)`, the cost of the architecture the method would export now, adds λ times
  `weight_regulariser(model)` to the loss and, after the weights' step, calls `shrink(model, lr * λ, goals)`
  with this step's scheduled targets: the method's proximal step (exact zeros for an ℓ1 or ℓ2,1 penalty,
  which plain gradient steps only circle);
- `held_out = N`: N samples of the training split (at most a fifth of it) are held out of the search's training
  (split reproducibly from the seed), and `use_held_out(inquire, validate)` receives two callables: one that
  measures the search model there (cascomp.train.held_out.Inquiry: top-1, loss; its backward pass reaches the
  model's hooks) and one that gives its top-1 on the validation split (`validates = True` alone: the second,
  with None for the first);
- `projection_goals(goals)`: the cost ratios the core projects the decision onto, when the method settled
  its own (an accuracy tolerance's most compact network) rather than only the user's budgets;
- `summary()`: what the report records of the search, beside the driver's epochs and trajectory.
- `warm_start_batches = N` with `warm_start(model, batches)`: before the search's first step, N training
  batches to initialise the search model with (DARC's student-teacher initialisation of its candidates);
- `substitute(model, indices)`: after the search, another network for the projection to work on (DARC's
  operator substitution; None: the traced baseline). The driver traces it again, hands its graph to
  `rebase(graph)` (the decision then ranks its channels) and lands the budgets, still ratios of the
  baseline's cost, on it; `substitution_indices()` is what a resumed run passes back as `indices` to rebuild
  it without the search model;
- `drops_parameters = True`: the search stops using some parameters part-way (DARC's dropped options), so
  under torchrun DDP looks for unused parameters every step.
`goals` (target ratio per metric) tells a method which costs the budget binds.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.fx as fx

from cascomp.ir.graph import Graph
from cascomp.ir.plan import Plan
from cascomp.methods.families import Family


@dataclass(frozen=True)
class Decision:
    scores: dict[str, torch.Tensor]  # per group: importance of each channel (kept first when higher)
    family: Family  # s in [0, 1] -> keep fraction per group (of its size), growing with s


class Method:
    title = ""  # how messages name the method (its registry name when empty)
    config_type: type  # the frozen dataclass CompressConfig.method_config holds for this method
    searches = False
    controlled = True  # the driver sets λ on penalty() every step; False: arch_loss() is the cost loss
    bilevel = False
    keeps_search_weights = True  # False: the compressed network starts from the baseline's weights
    regularised = False  # True: the driver sets the regulariser's strength from measured_ratios()
    initial_strength = 1.0
    held_out = 0  # training samples the search holds out for use_held_out's inquiries
    validates = False  # True: use_held_out is called (for its validation top-1) without held-out samples too

    def __init__(self, graph: Graph, config, goals: dict[str, float] | None = None) -> None:
        self.graph = graph
        self.config = config
        self.goals = dict(goals) if goals else {}
        self.baseline = graph.cost()

    def prepare(self) -> fx.GraphModule:
        return copy.deepcopy(self.graph.gm)

    def arch_parameters(self) -> list[torch.nn.Parameter]:
        return []

    def arch_optimizer(self) -> torch.optim.Optimizer:
        """The optimiser of `arch_parameters()` (the driver steps it with the weights' optimiser)."""
        raise NotImplementedError(f"{type(self).__name__} has no architecture parameters")

    def cost_direction(self, gradients: list[torch.Tensor]) -> list[torch.Tensor]:
        """How the architecture parameters move to lower the expected cost, given its gradient (per
        parameter). The driver scales it by λ; plain gradient descent by default."""
        return gradients

    def penalty(self) -> dict[str, torch.Tensor]:
        return {}

    def expected_ratios(self, keep: torch.Tensor, alive: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The cost model at per-channel keep-probabilities `keep` (and, with a depth search, per-branch
        alive-probabilities `alive`, in `graph.cost_model.branches` order), as ratios of the baseline
        (differentiable; exact at 0/1). Evaluated on the CPU, whatever device `keep` trained on: the cost
        model's tables live there, and the budget's arithmetic is then the same on every machine (the copy
        passes the gradient)."""
        model, alive = self.graph.cost_model, None if alive is None else alive.cpu()
        macs, params = model.evaluate(keep.cpu(), alive)
        ratios = {"flops": macs / max(self.baseline.macs, 1.0), "params": params / max(self.baseline.params, 1.0)}
        if model.latency_table is not None:  # a latency target: the table's prediction
            ratios["latency"] = model.evaluate_latency(keep.cpu(), alive) / max(self.baseline.latency, 1e-12)
        return ratios

    def weight_regulariser(self, model: torch.nn.Module) -> torch.Tensor | None:
        """A term for the weights' loss (None: none); with `regularised`, the driver multiplies it by λ."""
        return None

    def measured_ratios(self, model: torch.nn.Module) -> dict[str, float]:
        """With `regularised`: the cost ratios of the architecture the method would export from `model` now."""
        raise NotImplementedError(f"{type(self).__name__} sets regularised but measures no cost")

    def shrink(self, model: torch.nn.Module, step: float, goals: dict[str, float]) -> None:
        """With `regularised`: the proximal step of the penalty after each weights' step (`step` = lr * λ;
        `goals`: this step's scheduled target ratio per metric)."""

    def arch_loss(self, expected: dict[str, torch.Tensor], progress: float) -> torch.Tensor | None:
        """With `controlled = False`: the cost loss of the architecture parameters, given `penalty()`'s
        expected cost ratios for the targeted metrics."""
        return None

    def on_step(self, progress: float) -> None:
        """Before every search step; `progress` runs from 0 to 1 over the search."""

    def use_held_out(self, inquire: Callable, validate: Callable) -> None:
        """With `held_out` or `validates`: `inquire()` measures the search model on the held-out samples (an
        Inquiry; None without them), `validate()` is its top-1 on the validation split (every process calls it
        together)."""

    def projection_goals(self, goals: dict[str, float]) -> dict[str, float]:
        """The cost ratios `decide()`'s proposal is projected onto (the user's budgets unless the method
        settled tighter ones); the report still measures the result against the user's."""
        return goals

    def summary(self) -> dict:
        """What the report's search section records of the method's own search (nothing by default)."""
        return {}

    warm_start_batches = 0
    drops_parameters = False  # True: the search stops using some parameters part-way (DDP must look every step)

    def warm_start(self, model: torch.nn.Module, batches: list) -> None:
        """With `warm_start_batches`: initialise the search model on these training batches ((x, y) pairs)."""

    def substitute(self, model: torch.nn.Module | None, indices: dict | None = None) -> torch.nn.Module | None:
        """The network the budget projection works on after the search (None: the traced baseline's). A
        resumed run gives `indices` (what `substitution_indices()` returned) and no search model."""
        return None

    def substitution_indices(self) -> dict | None:
        return None

    def rebase(self, graph: Graph) -> None:
        """The graph of `substitute()`'s network, which `decide()` then works on."""
        self.graph = graph

    def probes(self) -> list[Plan]:
        return []

    def take_measurements(self, losses: list[float]) -> None:
        """The measured loss of each of `probes()`, in order."""

    def decide(self, model: fx.GraphModule) -> Decision:  # pragma: no cover - abstract
        raise NotImplementedError

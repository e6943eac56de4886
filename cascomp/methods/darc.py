"""`darc`: Differentiable ARchitecture Compression (../shared/papers/darc-*): cheaper operators substituted
for expensive ones, then the widths for the last percent of the budget.

1. Every eligible convolution (kernels/candidates.py: dense, odd square kernel > 1, "same" zero padding,
   called once) becomes an operator choice (kernels/operator_choice.py): sum_j alpha_j h_j(x) over the
   original and its candidates "3x3DS", "1x1FC", "3x3DS+1x1FC" (and "shift" with `shift`: FLOPs and params
   targets only), alpha on the probability simplex, uniform at
   the start (the paper's choice: alpha one-hot on the original leaves the candidates without gradient).
2. Before the first step, student-teacher initialisation (cascomp.methods.mimic): every candidate, started
   from its analytic fit to the original's kernel, is trained to reproduce the original layer's output on
   `mimic_batches` training batches, all layers in one pass.
3. The search trains the weights and alpha together on the same batches (the task loss with distillation,
   plus lambda x the expected cost: per layer sum_j alpha_j cost_j, FLOPs and/or parameters as ratios of the
   baseline), alpha by SGD followed by the sparsifying projection alpha+ / ||alpha+||_1 after every step.
   The search is cut into `blocks`; after each block the options whose weight is 0 are dropped and, while
   the architecture DARC would export is above the budget, lambda doubles and alpha's learning rate halves.
4. Export: per layer the only option left, or among several the most expensive (the paper's rule); while
   that network is under every budget, layers get their original operator back (those the search weighted
   most toward it first) until the budget is crossed, since widths can only take cost away; the winners
   replace the choices (passes/substitute_ops.py) with the weights they trained, the substituted
   network is traced again, and the core's projection lands every target within 1 % below it by channel
   widths (filter-norm ranking across groups, as `l1`): operator choice first, widths for the last percent,
   which the paper's lambda sweep alone does not give. The compressed network keeps the search's weights
   and is fine-tuned with distillation.
Latency targets (the paper's DARC(T)): every option is priced by the per-layer latency table the run built for
the baseline (cascomp.export.latency_table): each of its convolutions timed alone at its real input shape, in
onnxruntime on the provider, threads and batch the table was built with (cached; the original layer is the
table's own entry), so an option's expected latency is sum_j alpha_j ms_j and the export's budget arithmetic
is the table's prediction, as for every other method.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from cascomp.config import check_positive, check_share, option
from cascomp.errors import ConfigError
from cascomp.kernels.candidates import DEFAULT, candidates_for, conv_cost, eligible
from cascomp.export.latency_table import module_latency
from cascomp.kernels.operator_choice import OperatorChoice
from cascomp.methods.base import Decision, Method
from cascomp.methods.families import ranked_family
from cascomp.methods.scores import filter_norms, normalised
from cascomp.passes import InsertOperatorChoicesPass, SubstituteOpsPass
from cascomp.methods.mimic import mimic

STATE = "cascomp_darc"  # the search model's submodule holding lambda and the block index (so resume is exact)


@dataclass(frozen=True, kw_only=True)
class DarcConfig:
    """DARC: blocks of the search between lambda doublings, lambda's start, alpha's optimiser, the
    student-teacher initialisation."""

    blocks: int = 4
    initial_strength: float = 1.0  # lambda at the start (the task loss and the cost ratio are both ~1)
    alpha_lr: float = 0.05
    init: str = "uniform"
    mimic_batches: int = 64
    mimic_lr: float = 0.01
    search_share: float = 0.5  # of a total --epochs budget, the share spent searching (rounded down)
    shift: bool = option(False, "--shift", "darc: also offer the shift candidate (a zero-MAC shift of the input "
                         "channels, then a 1x1 convolution): the FLOPs of 1x1FC with a 3x3 window, but slower than "
                         "3x3DS in onnxruntime at batch 1; flops and params targets only", value=True)

    def __post_init__(self) -> None:
        if isinstance(self.blocks, bool) or not isinstance(self.blocks, int) or self.blocks < 1:
            raise ConfigError(f"DarcConfig.blocks must be a whole number ≥ 1, got {self.blocks!r}")
        if isinstance(self.mimic_batches, bool) or not isinstance(self.mimic_batches, int) or self.mimic_batches < 0:
            raise ConfigError(f"DarcConfig.mimic_batches must be a whole number ≥ 0, got {self.mimic_batches!r}")
        check_positive(self, "initial_strength", "alpha_lr", "mimic_lr")
        check_share(self, "search_share")
        if self.init not in ("uniform", "original"):
            raise ConfigError(f"DarcConfig.init must be 'uniform' or 'original', got {self.init!r}")


class DarcState(nn.Module):
    """lambda and the current block, as buffers of the search model (checkpointed with it)."""

    def __init__(self, strength: float) -> None:
        super().__init__()
        self.register_buffer("strength", torch.tensor(float(strength), dtype=torch.float64))
        self.register_buffer("block", torch.tensor(0))
        self.register_buffer("doublings", torch.tensor(0))

    def forward(self) -> None:  # pragma: no cover - never called: a holder of state
        return None


class Darc(Method):
    title = "DARC"
    config_type = DarcConfig
    searches = True
    controlled = False  # lambda doubles by blocks (the paper's schedule), not the driver's controller
    drops_parameters = True  # a dropped option's weights get no gradient (under torchrun DDP must know)

    def __init__(self, graph, config, goals=None) -> None:
        super().__init__(graph, config, goals)
        if "latency" in self.goals and config.shift:
            raise ConfigError("darc --shift with a latency target: the per-layer latency table times convolution and "
                              "linear layers, not the shift's split, pad, slice and concat, so it would price the shift "
                              "as free (it is not: see the README); drop --shift or use a flops or params target")
        if "latency" in self.goals and graph.cost_model.latency_table is None:
            raise ConfigError("darc: a latency target needs the baseline's latency table attached to its cost model "
                              "(compress attaches it; with the passes alone, graph.cost_model.attach_latency(table))")
        self.names = DEFAULT + (("shift",) if config.shift else ())
        calls: dict[str, int] = {}
        for node in graph.gm.graph.nodes:
            if node.op == "call_module":
                calls[str(node.target)] = calls.get(str(node.target), 0) + 1
        self.positions: dict[str, int] = {}
        self.inputs: dict[str, tuple[int, ...]] = {}  # each choice's input shape (its options are timed at it)
        for node in graph.gm.graph.nodes:
            target = str(node.target)
            if node.op != "call_module" or calls[target] != 1 or eligible(graph.gm.get_submodule(target)):
                continue
            shape = graph.record.shapes.get(node.name)
            if isinstance(shape, tuple) and len(shape) == 4:
                self.positions[target] = shape[2] * shape[3]
                self.inputs[target] = graph.record.shapes.get(node.args[0].name)
        self.choices: dict[str, OperatorChoice] = {}
        self.state: DarcState | None = None
        self.mimicked = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.substitution: dict[str, str] = {}
        self._winners: dict[str, int] | None = None
        self.warm_start_batches = config.mimic_batches if self.positions else 0

    # -- the search ---------------------------------------------------------------------------------------
    def prepare(self) -> fx.GraphModule:
        gm = self.graph.gm
        candidates = {path: candidates_for(gm.get_submodule(path), self.names) for path in self.positions}
        model = InsertOperatorChoicesPass(candidates, init=self.config.init)(gm).gm
        self.choices = {path: model.get_submodule(path) for path in self.positions}
        self.state = DarcState(self.config.initial_strength)
        model.add_submodule(STATE, self.state)
        costs = [[conv_cost(option, self.positions[path]) for option in choice.options]
                 for path, choice in self.choices.items()]
        # per metric, [layer, option] -> the option's cost (MACs, parameters, predicted ms)
        self._costs = {"flops": torch.tensor([[c[0] for c in row] for row in costs], dtype=torch.float64),
                       "params": torch.tensor([[c[1] for c in row] for row in costs], dtype=torch.float64)}
        if "latency" in self.goals:  # every option timed as the table's layers were (the cache keeps them)
            table = self.graph.cost_model.latency_table
            self._costs["latency"] = torch.tensor(
                [[module_latency(table, option, self.inputs[path]) for option in choice.options]
                 for path, choice in self.choices.items()], dtype=torch.float64)
        return model

    def warm_start(self, model: nn.Module, batches: list) -> None:
        self.mimicked = mimic(model, self.choices, batches, lr=self.config.mimic_lr)

    def arch_parameters(self):
        return [choice.alpha for choice in self.choices.values()]

    def arch_optimizer(self):
        if self.optimizer is None:
            self.optimizer = torch.optim.SGD(self.arch_parameters(), lr=self.config.alpha_lr)
        return self.optimizer

    def _alpha(self) -> torch.Tensor:
        return torch.stack([choice.alpha for choice in self.choices.values()]).double().cpu()

    def penalty(self) -> dict[str, torch.Tensor]:
        if not self.choices:
            return {"flops": torch.tensor(1.0, dtype=torch.float64), "params": torch.tensor(1.0, dtype=torch.float64)}
        return self._expected(self._alpha())

    def _expected(self, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cost ratios of the baseline with each layer's original replaced by its options weighted by
        `weights` ([layer, option]: alpha, or one-hot for a choice made)."""
        totals = {"flops": max(self.baseline.macs, 1.0), "params": max(self.baseline.params, 1.0),
                  "latency": max(self.baseline.latency, 1e-12)}
        return {metric: (totals[metric] - float(table[:, 0].sum()) + (weights * table).sum()) / totals[metric]
                for metric, table in self._costs.items()}

    def arch_loss(self, expected: dict[str, torch.Tensor], progress: float) -> torch.Tensor | None:
        if not expected or self.state is None:
            return None
        return float(self.state.strength) * sum(expected.values())

    def on_step(self, progress: float) -> None:
        """The projection after the previous step; at a block's end, the drop and lambda's doubling."""
        for choice in self.choices.values():
            choice.project()
        if self.state is None:
            return
        block = min(int(progress * self.config.blocks), self.config.blocks - 1)
        while int(self.state.block) < block:
            for choice in self.choices.values():
                choice.drop()
            if any(self.settled_ratios()[m] > goal for m, goal in self.goals.items()):
                self.state.strength.mul_(2)
                self.state.doublings.add_(1)
                for group in self.arch_optimizer().param_groups:
                    group["lr"] /= 2
            self.state.block.add_(1)

    def settled_ratios(self) -> dict[str, float]:
        """The cost ratios of the winners (each layer's most expensive option left)."""
        return self._ratios(self.winners())

    def winners(self) -> dict[str, int]:
        """Per layer the option it becomes (after the last step's projection)."""
        for choice in self.choices.values():
            choice.project()
        costs = self._costs.get("latency", self._costs["flops"])  # its most expensive option left
        return {path: choice.winner(costs[i]) for i, (path, choice) in enumerate(self.choices.items())}

    # -- the export ---------------------------------------------------------------------------------------
    def substitute(self, model: nn.Module | None, indices: dict | None = None) -> nn.Module | None:
        if indices is not None:  # a resumed run: the choices rebuilt, the winners it recorded
            model = self.prepare()
            winners = {path: int(index) for path, index in indices.items()}
        elif not self.choices:
            return None
        else:
            winners = self._up_to_budget(self.winners())
        self._winners = winners
        self.substitution = {path: self.choices[path].names[index] for path, index in winners.items()}
        return SubstituteOpsPass(winners)(model).gm

    def _up_to_budget(self, winners: dict[str, int]) -> dict[str, int]:
        """The winners, with layers given back their original operator while their cost is under every
        budget: the widths can only take cost away, so the substituted network must not start below it. The
        layers the search weighted most toward their original go back first; the last one crosses the budget
        (or all go back)."""
        winners = dict(winners)
        order = sorted((path for path, index in winners.items() if index != 0),
                       key=lambda path: (-float(self.choices[path].alpha.detach()[0]), path))
        for path in order:
            if any(self._ratios(winners)[m] >= goal for m, goal in self.goals.items()):
                break
            winners[path] = 0
        return winners

    def _ratios(self, winners: dict[str, int]) -> dict[str, float]:
        chosen = torch.zeros_like(self._costs["flops"])
        chosen[torch.arange(len(self.choices)), [winners[p] for p in self.choices]] = 1.0
        return {metric: float(ratio) for metric, ratio in self._expected(chosen).items()}

    def substitution_indices(self) -> dict | None:
        return dict(self._winners) if self._winners is not None else None

    def rebase(self, graph) -> None:
        """The graph of the substituted network, which the decision ranks the channels of."""
        self.graph = graph

    def decide(self, model) -> Decision:
        scores = normalised(filter_norms(self.graph, model))
        return Decision(scores=scores, family=ranked_family(self.graph, scores))

    def summary(self) -> dict:
        chosen = self.substitution or {path: self.choices[path].names[i] for path, i in self.winners().items()}
        counts: dict[str, int] = {}
        for name in chosen.values():
            counts[name] = counts.get(name, 0) + 1
        summary = {"operators": dict(chosen), "chosen": counts,
                   "alpha": {path: {name: round(float(a), 4) for name, a in zip(choice.names, choice.alpha.detach())}
                             for path, choice in self.choices.items()}}
        if self.state is not None:
            summary.update(strength=float(self.state.strength), doublings=int(self.state.doublings))
        if self.mimicked is not None:
            summary["mimic"] = {"batches": self.mimicked.batches, "images": self.mimicked.images,
                                "first": self.mimicked.first, "last": self.mimicked.last}
        return summary

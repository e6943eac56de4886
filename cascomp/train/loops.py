"""The training loops of every method: search (task loss + λ·expected cost) and fine-tuning (distillation).

Each epoch starts from seeds derived from (seed, phase, epoch) for the data order and the random draws, and
ends with a checkpoint, so a run resumed from a checkpoint takes exactly the steps the uninterrupted run
would have taken. The loops train on config.device (their models are moved there before their optimisers
are made), with config.amp's autocast for the forward passes (cascomp.train.device); evaluation and BN
recalibration run in full precision wherever the model they are given is. Launched by torchrun, they train
a DDP module on each process's slice of every batch (cascomp.train.distributed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from cascomp.config import CompressConfig
from cascomp.errors import SearchError
from cascomp.methods import Method
from cascomp.train.checkpoint import CheckpointStore
from cascomp.search.control import PenaltyController, StrengthController, scheduled_target
from cascomp.train.device import Placement, backward_and_step, module_device, to_device
from cascomp.train.distributed import Cluster
from cascomp.train.distill import distillation_loss
from cascomp.train.held_out import held_out_count, inquire, split_held_out, subset_loader
from cascomp.train.progress import Reporter

TRAJECTORY_EVERY = 10  # steps between points of the recorded search trajectory
WARM_START_PHASE = 7  # the seed phase of a method's warm-start batches


@dataclass
class History:
    """What the loops did: one row per epoch, and a finer trajectory of the search."""

    epochs: list[dict] = field(default_factory=list)
    trajectory: list[dict] = field(default_factory=list)
    method: dict = field(default_factory=dict)  # what the method records of its search (Method.summary)


def evaluate(model: nn.Module, loader, cluster: Cluster = Cluster()) -> float:
    """Top-1 accuracy of `model` (eval mode, on its own device) on `loader`; with several processes each
    scores its share of the batches and the counts are summed."""
    loader = cluster.shard(loader, train=False)
    was_training = model.training
    model.eval()
    device = module_device(model)
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            x, y = to_device(x, device), to_device(y, device)
            correct += int((model(x).argmax(dim=1) == y).sum())
            total += len(y)
    model.train(was_training)
    correct, total = cluster.sum([correct, total])
    return correct / max(total, 1)


def recalibrate_batch_norm(model: nn.Module, loader, batches: int = 32) -> None:
    """Re-estimate every BatchNorm's running statistics for the model as it now is (eval-mode everything
    else: fixed gates, no dropout), from `batches` training batches. Statistics gathered while the search
    sampled a different channel subset for every batch, or before channels were pruned, do not describe
    the fixed architecture."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    was_training = model.training
    model.eval()
    device = module_device(model)
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the calibration batches
        norm.train()
    with torch.no_grad():
        for index, (x, _) in enumerate(loader):
            if index == batches:
                break
            model(to_device(x, device))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.train(was_training)


def epoch_seed(seed: int, phase: int, epoch: int) -> int:
    return seed * 100_003 + phase * 10_007 + epoch


def seed_epoch(data, seed: int, phase: int, epoch: int) -> None:
    value = epoch_seed(seed, phase, epoch)
    torch.manual_seed(value)
    generator = getattr(data.train, "generator", None)
    if generator is not None:
        generator.manual_seed(value)


def first_batches(data, seed: int, phase: int, count: int) -> list:
    """The first `count` batches of the training split's pass seeded by (seed, phase)."""
    seed_epoch(data, seed, phase, 0)
    batches = []
    for batch in data.train:
        batches.append(batch)
        if len(batches) >= count:  # stop before the loader makes another batch
            break
    return batches


def _finite(loss: torch.Tensor, where: str, x) -> None:
    if torch.isfinite(loss):
        return
    # load_data refuses non-finite samples, but a python: factory's loaders come as they are.
    if isinstance(x, torch.Tensor) and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise SearchError(f"the loss became {float(loss)} in {where} because a training batch holds a non-finite "
                          "input (NaN or inf); fix or drop those samples in the data")
    raise SearchError(f"the loss became {float(loss)} in {where}; lower the learning rate (--lr, or lr= in "
                      "the Python API)")


class SearchLoop:
    """Trains the method's search model: weights on the task loss (plus the method's weight regulariser, at
    the strength the budget sets when the method is `regularised`, followed by its proximal step),
    architecture parameters on the task loss plus the controlled penalty (or the method's own cost loss);
    with a bi-level method, each on its own half of the training split (cascomp.methods.base's hooks)."""

    def __init__(self, method: Method, model: nn.Module, data, config: CompressConfig, goals: dict[str, float],
                 reporter: Reporter, teacher: nn.Module | None = None, cluster: Cluster = Cluster()) -> None:
        self.cluster, self.placement = cluster, Placement.of(config, cluster)
        self.method, self.model, self.data, self.config, self.goals = method, model, data, config, goals
        self.model.to(self.placement.device)  # the architecture parameters too: the gates are its submodule
        # what the search trains on: the training split, less the samples the method holds out (seeded)
        self.train, held = data.train, None
        if method.held_out:
            count = held_out_count(method.held_out, len(data.train.dataset))
            self.train, held = split_held_out(data.train, count, config.seed)
        if method.held_out or method.validates:
            method.use_held_out(None if held is None else (lambda: inquire(self.model, held, self.placement)),
                                lambda: evaluate(self.model, data.val, cluster))
        self.batches = cluster.shard(self.train, train=True)
        # bi-level: (weights' half, architecture's half) of the training split, fixed by the seed
        self.halves = tuple(cluster.shard(h, train=True) for h in _halves(self.train, config.seed)) \
            if method.bilevel else ()
        # what the forward passes go through (DDP with several processes)
        self.runner = cluster.wrap(self.model, lambda: _first_samples(data.train, self.placement),
                                   find_unused=method.drops_parameters)
        use_teacher = teacher is not None and config.distill.in_search
        self.teacher = teacher.eval().to(self.placement.device) if use_teacher else None
        self.reporter = reporter
        self.scaler = self.placement.grad_scaler()
        arch = {id(p) for p in method.arch_parameters()}
        weights = [p for p in model.parameters() if id(p) not in arch and p.requires_grad]
        self.weight_optimizer = torch.optim.SGD(weights, lr=config.lr, momentum=config.momentum,
                                                weight_decay=config.weight_decay)
        self.arch_optimizer = method.arch_optimizer() if method.arch_parameters() else None
        penalty = method.penalty()
        self.start = {m: float(penalty[m].detach()) for m in goals if m in penalty}
        self.controllers = {m: PenaltyController() for m in goals}
        # a regularised method: the regulariser's strength, steered by the cost the method measures
        self.strength = StrengthController(start=method.initial_strength) if method.regularised else None
        if self.strength is not None:
            measured = method.measured_ratios(self.model)
            self.start.update({m: measured[m] for m in goals if m in measured})
        self.history = History()
        self.epoch = 0

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "weight_optimizer": self.weight_optimizer.state_dict(),
                "arch_optimizer": None if self.arch_optimizer is None else self.arch_optimizer.state_dict(),
                "start": self.start, "epoch": self.epoch,
                "controllers": {m: c.state_dict() for m, c in self.controllers.items()},
                "strength": None if self.strength is None else self.strength.state_dict(),
                "history": {"epochs": self.history.epochs, "trajectory": self.history.trajectory},
                **_scaler_state(self.scaler)}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        if self.arch_optimizer is not None:
            self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.start, self.epoch = state["start"], state["epoch"]
        for metric, controller in self.controllers.items():
            controller.load_state_dict(state["controllers"][metric])
        if self.strength is not None:
            self.strength.load_state_dict(state["strength"])
        self.history = History(**state["history"])
        _load_scaler_state(self.scaler, state)

    def run(self, store: CheckpointStore | None, on_epoch: Callable[[str, int], None] | None) -> History:
        epochs = self.config.search_epochs
        if self.epoch == 0 and self.method.warm_start_batches:  # a resumed search has warmed up already
            batches = first_batches(self.data, self.config.seed, WARM_START_PHASE, self.method.warm_start_batches)
            self.method.warm_start(self.model, to_device(batches, self.placement.device))
        while self.epoch < epochs:
            self._epoch(self.epoch, epochs)
            self.epoch += 1
            if store is not None:
                store.save({"phase": "search", "search": self.state_dict()})
            if on_epoch is not None:
                on_epoch("search", self.epoch)
        self.history.method = self.method.summary()
        return self.history

    def _epoch(self, epoch: int, epochs: int) -> None:
        seed_epoch(self.data, self.config.seed, 1, epoch)
        if self.train is not self.data.train:  # the rest of a held-out split: its own order, seeded alike
            self.train.generator.manual_seed(epoch_seed(self.config.seed, 1, epoch) + 3)
        for index, half in enumerate(self.halves):  # the halves' orders, seeded like the whole split's
            half.generator.manual_seed(epoch_seed(self.config.seed, 1, epoch) + 1 + index)
        self.model.train()
        batches = _Paired(*self.halves) if self.halves else self.batches
        steps, started = len(batches), time.perf_counter()
        status = {"loss": 0.0, "acc": 0.0}
        seen = correct = 0
        loss_sum = 0.0
        describe = lambda: self._describe(status)  # noqa: E731
        where = f"search epoch {epoch + 1}"
        for step, batch in enumerate(self.reporter.batches(batches, f"search {epoch + 1}/{epochs}", describe)):
            progress = (epoch * steps + step) / max(epochs * steps, 1)
            progress_next = (epoch * steps + step + 1) / max(epochs * steps, 1)
            self.method.on_step(progress)
            batch, architecture_batch = batch if self.halves else (batch, None)
            x, y = self.placement.batch(*batch)
            logits = self.placement.forward(self.runner, x)
            task = self._task_loss(x, y, logits)
            loss, expected, apply_cost = (task, {}, lambda: None) if self.halves else \
                self._architecture_loss(task, progress, progress_next)
            strength, goals = (1.0, {}) if self.strength is None else self._strength(progress_next, expected)
            regulariser = self.method.weight_regulariser(self.model)
            if regulariser is not None:
                loss = loss + strength * regulariser
            _finite(loss, where, x)
            optimizers = [self.weight_optimizer] + ([self.arch_optimizer] if self.arch_optimizer and not self.halves else [])
            self._step(loss, optimizers)
            apply_cost()
            if self.strength is not None:  # the penalty's proximal step, at the step size the weights took
                with torch.no_grad():
                    self.method.shrink(self.model, self.weight_optimizer.param_groups[0]["lr"] * strength, goals)
            if architecture_batch is not None:  # bi-level (TAS's Algorithm 1): then the architecture, on its half
                xa, ya = self.placement.batch(*architecture_batch)
                loss, expected, apply_cost = self._architecture_loss(
                    self._task_loss(xa, ya, self.placement.forward(self.runner, xa)), progress, progress_next)
                _finite(loss, where, xa)
                self._step(loss, [self.arch_optimizer] if self.arch_optimizer else [])
                apply_cost()
            seen += len(y)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(task.detach()) * len(y)
            status.update(loss=loss_sum / seen, acc=correct / seen, **{m: float(r.detach()) for m, r in expected.items()})
            if step % TRAJECTORY_EVERY == 0:
                self.history.trajectory.append({"epoch": progress * epochs, "train_acc": status["acc"],
                                                **self._cost_fields(status)})
        recalibrate_batch_norm(self.model, self.train)  # the full batches: the same statistics everywhere
        loss_sum, correct, seen = self.cluster.sum([loss_sum, correct, seen])
        status.update(loss=loss_sum / max(seen, 1), acc=correct / max(seen, 1))
        row = {"epoch": epoch + 1, "loss": status["loss"], "train_acc": status["acc"],
               "val_acc": evaluate(self.model, self.data.val, self.cluster), "seconds": time.perf_counter() - started,
               **self._cost_fields(status)}
        self.history.epochs.append(row)
        self.reporter.line(f"search {epoch + 1}/{epochs}  {self._describe(status)}  val top-1 {row['val_acc']:.4f}  "
                           f"({row['seconds']:.0f} s)")

    def _strength(self, progress_next: float, expected: dict) -> tuple[float, dict[str, float]]:
        """This step's regulariser strength and scheduled targets, from the cost of what the method would
        export now (which the progress line then shows as the cost)."""
        measured = self.method.measured_ratios(self.model)
        goals = {m: scheduled_target(self.start[m], self.goals[m], progress_next) for m in self.goals if m in measured}
        expected.update({m: torch.tensor(measured[m]) for m in goals})
        return self.strength.update(measured, goals), goals

    def _architecture_loss(self, task: torch.Tensor, progress: float, progress_next: float):
        """(loss, expected cost ratios, the step to take after the optimisers'): the controlled penalty's step
        (λ times the method's cost direction), or the method's own cost loss added to the task loss."""
        expected = {m: r for m, r in self.method.penalty().items() if m in self.goals}
        if not self.method.controlled:
            extra = self.method.arch_loss(expected, progress)
            return (task if extra is None else task + extra), expected, lambda: None
        if self.arch_optimizer is None:
            return task, expected, lambda: None
        pushes = [self._cost_push(m, ratio, progress, progress_next) for m, ratio in expected.items()]
        return task, expected, lambda: self._take_cost_step(pushes)

    def _step(self, loss: torch.Tensor, optimizers: list[torch.optim.Optimizer]) -> None:
        """Backward, then a step of `optimizers` only (every gradient cleared first)."""
        self.weight_optimizer.zero_grad(set_to_none=True)
        if self.arch_optimizer is not None:
            self.arch_optimizer.zero_grad(set_to_none=True)
        backward_and_step(loss, optimizers, self.scaler)

    def _take_cost_step(self, pushes: list[list[torch.Tensor]]) -> None:
        """The penalty's step, λ times the method's cost direction, taken directly rather than through the
        architecture optimiser: its size is then exactly what the controller asked for, whatever momentum or
        normalisation that optimiser applies to the task gradient (Adam's momentum made the expected cost
        overshoot the budget)."""
        lr = self.arch_optimizer.param_groups[0]["lr"]
        with torch.no_grad():
            for push in pushes:
                for param, direction in zip(self.method.arch_parameters(), push):
                    param.sub_(lr * direction)

    def _task_loss(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if self.teacher is None:
            return F.cross_entropy(logits, y)
        with torch.no_grad():
            teacher = self.placement.forward(self.teacher, x)
        distill = self.config.distill
        return distillation_loss(logits, teacher, y, temperature=distill.temperature, weight=distill.weight)

    def _cost_push(self, metric: str, ratio: torch.Tensor, progress: float, progress_next: float) -> list[torch.Tensor]:
        """λ times the method's cost direction for `metric` this step (see cascomp.search.control):
        λ is chosen so that one optimiser step lowers the expected ratio by what the controller asks for."""
        params = self.method.arch_parameters()
        gradients = [g if g is not None else torch.zeros_like(p) for g, p in
                     zip(torch.autograd.grad(ratio, params, retain_graph=True, allow_unused=True), params)]
        directions = self.method.cost_direction(gradients)
        first_order = sum(float((g * d).sum()) for g, d in zip(gradients, directions))
        goal_now = scheduled_target(self.start[metric], self.goals[metric], progress)
        goal = scheduled_target(self.start[metric], self.goals[metric], progress_next)
        lr = self.arch_optimizer.param_groups[0]["lr"]
        weight = self.controllers[metric].weight(float(ratio.detach()), goal, lr, first_order, goal_now - goal)
        return [weight * d for d in directions]

    def _cost_fields(self, status: dict) -> dict:
        fields = {}
        for metric, controller in self.controllers.items():
            fields[f"expected_{metric}"] = status.get(metric, float("nan"))
            fields[f"lambda_{metric}"] = controller.last_weight if self.strength is None else self.strength.strength
        return fields

    def _describe(self, status: dict) -> str:
        # λ is the driver's controlled weight (of the penalty, or of a regularised method's regulariser); a
        # method with its own cost loss, or with neither architecture parameters nor a regulariser, has none
        costs = "  ".join(f"{m} {status.get(m, float('nan')):.3f}→{self.goals[m]:.3f}"
                          + (f" λ {self.strength.strength:.3g}" if self.strength is not None else
                             f" λ {c.last_weight:.3g}" if self.method.controlled and self.arch_optimizer else "")
                          for m, c in self.controllers.items())
        return f"loss {status['loss']:.3f}  acc {status['acc']:.3f}  {costs}"


class FinetuneLoop:
    """Trains the compressed network with distillation from the baseline; cosine learning-rate decay."""

    def __init__(self, student: nn.Module, teacher: nn.Module, data, config: CompressConfig, epochs: int,
                 reporter: Reporter, cluster: Cluster = Cluster()) -> None:
        self.cluster, self.placement = cluster, Placement.of(config, cluster)
        self.student, self.teacher = student.to(self.placement.device), teacher.eval().to(self.placement.device)
        self.batches = cluster.shard(data.train, train=True)
        self.runner = cluster.wrap(self.student, lambda: _first_samples(data.train, self.placement))
        self.data, self.config, self.epochs, self.reporter = data, config, epochs, reporter
        self.scaler = self.placement.grad_scaler()
        self.optimizer = torch.optim.SGD(student.parameters(), lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        total = max(epochs * len(self.batches), 1)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
        self.epoch = 0
        self.history = History()

    def state_dict(self) -> dict:
        return {"model": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "epoch": self.epoch, "epochs": self.history.epochs,
                **_scaler_state(self.scaler)}

    def load_state_dict(self, state: dict) -> None:
        self.student.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.epoch = state["epoch"]
        self.history = History(epochs=state["epochs"])
        _load_scaler_state(self.scaler, state)

    def run(self, save: Callable[[dict], None] | None, on_epoch: Callable[[str, int], None] | None) -> History:
        while self.epoch < self.epochs:
            self._epoch(self.epoch)
            self.epoch += 1
            if save is not None:
                save(self.state_dict())
            if on_epoch is not None:
                on_epoch("finetune", self.epoch)
        self.student.eval()
        return self.history

    def _epoch(self, epoch: int) -> None:
        seed_epoch(self.data, self.config.seed, 2, epoch)
        self.student.train()
        started, seen, correct, loss_sum = time.perf_counter(), 0, 0, 0.0
        describe = lambda: f"loss {loss_sum / max(seen, 1):.3f}  acc {correct / max(seen, 1):.3f}"  # noqa: E731
        distill = self.config.distill
        for x, y in self.reporter.batches(self.batches, f"fine-tune {epoch + 1}/{self.epochs}", describe):
            x, y = self.placement.batch(x, y)
            with torch.no_grad():
                teacher = self.placement.forward(self.teacher, x)
            logits = self.placement.forward(self.runner, x)
            loss = distillation_loss(logits, teacher, y, temperature=distill.temperature, weight=distill.weight)
            _finite(loss, f"fine-tuning epoch {epoch + 1}", x)
            self.optimizer.zero_grad(set_to_none=True)
            backward_and_step(loss, [self.optimizer], self.scaler)
            self.schedule.step()
            seen += len(y)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss.detach()) * len(y)
        loss_sum, correct, seen = self.cluster.sum([loss_sum, correct, seen])
        row = {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
               "val_acc": evaluate(self.student, self.data.val, self.cluster), "seconds": time.perf_counter() - started}
        self.history.epochs.append(row)
        self.reporter.line(f"fine-tune {epoch + 1}/{self.epochs}  {describe()}  val top-1 {row['val_acc']:.4f}  "
                           f"({row['seconds']:.0f} s)")


def _halves(loader, seed: int) -> tuple:
    """Loaders over two disjoint halves of `loader`'s dataset (a seeded split), each shuffled by its own
    generator, with the loader's batch size and settings."""
    order = torch.randperm(len(loader.dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    middle = len(order) // 2
    return tuple(subset_loader(loader, part, shuffle=True) for part in (order[:middle], order[middle:]))


class _Paired:
    """One batch of each loader per step, as many steps as the shorter has batches."""

    def __init__(self, first, second) -> None:
        self.first, self.second = first, second

    def __len__(self) -> int:
        return min(len(self.first), len(self.second))

    def __iter__(self):
        return zip(self.first, self.second)


def _first_samples(loader, placement: Placement) -> torch.Tensor:
    """The first two samples of `loader`'s dataset as a batch on the placement's device (what Cluster.wrap
    looks for unused parameters with); the loader's order and generator are left alone."""
    dataset = loader.dataset
    x = loader.collate_fn([dataset[i] for i in range(min(2, len(dataset)))])[0]
    return to_device(x, placement.device)


def _scaler_state(scaler: torch.amp.GradScaler | None) -> dict:
    """The loss scaler's state, for a checkpoint (nothing without one: full precision, bfloat16)."""
    return {} if scaler is None else {"scaler": scaler.state_dict()}


def _load_scaler_state(scaler: torch.amp.GradScaler | None, state: dict) -> None:
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])

"""Many processes: a compress run launched by torchrun trains with DistributedDataParallel.

    torchrun --nproc-per-node 2 -m cascomp compress model.pt --target flops=0.33 --data ... -o out/

`Cluster.join(device)` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and
starts the process group: nccl for CUDA devices (each process on cuda:LOCAL_RANK), gloo for the CPU. Without
that environment (or with WORLD_SIZE=1) it is the one-process cluster, and every method here is a no-op, so
the pipeline reads the same either way. A process group the caller started already is joined as it is.

What the processes share, and how a run with N processes computes what the one-process run computes:
- **Batches.** --batch-size is the global batch. Every process draws the same seeded order of the training
  split (the loader's own generator, seeded from (seed, phase, epoch)), cuts each global batch into N equal
  slices and trains on its own (`shard`), so the N slices of a step are the one-process run's batch. The last
  batch of an epoch loses its last (size mod N) samples, so that the slices stay equal: DDP averages the
  processes' gradients, which is the global batch's mean only for equal slices.
- **Weights and architecture parameters** are one DDP module: their gradients are all-reduced, so every
  process takes the same step. Random draws (FiGS's gate samples) come from torch's generator, seeded alike
  on every process, and are the same on all of them; the cost penalty is a function of the architecture
  parameters alone, so the budget controller sees the same cost everywhere.
- **BatchNorm** normalises each process's slice in training (DDP's behaviour; statistics are not synced, so a
  run with BatchNorm matches the one-process run only approximately); the recalibrations before evaluation
  and after the rewrite read the full global batches on every process, so the statistics agree everywhere.
- **Evaluation** splits the validation batches and sums correct/total over the processes; **probes** are
  shared out, each process measuring every N-th plan, and gathered.
- **Decisions and outputs**: the plan is decided on rank 0 and broadcast; rank 0 alone writes checkpoints,
  outputs and progress. A checkpoint holds nothing per-process, so --resume works with any process count.
- **Failures**: a process that raises ends with a `cascomp: error: rank R/N: ...` line, and torchrun stops
  the others; a process left waiting on a dead peer gives up after `TIMEOUT` rather than hanging.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Sampler

from cascomp.errors import ConfigError
from cascomp.train.device import tensors_in

TIMEOUT = datetime.timedelta(minutes=30)  # the longest a collective waits for a peer before failing
_ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Cluster:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def tag(self) -> str:
        """How this process names itself in a message ('' for the one-process cluster)."""
        return f"rank {self.rank}/{self.world_size}" if self.distributed else ""

    # -- joining ----------------------------------------------------------------------------------------------
    @classmethod
    def from_environment(cls) -> "Cluster":
        """The cluster torchrun describes in the environment, or the one-process cluster; nothing started."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
        values = {name: os.environ.get(name) for name in _ENVIRONMENT}
        if values["WORLD_SIZE"] is None:
            return cls()
        try:
            rank, world, local = (int(values[name] or 0) for name in _ENVIRONMENT)
        except ValueError as error:
            raise ConfigError(f"the torchrun environment is not understood ({', '.join(f'{k}={v}' for k, v in values.items())}); "
                              "launch with torchrun, or unset WORLD_SIZE for one process") from error
        if not 0 <= rank < world:
            raise ConfigError(f"RANK={rank} is not below WORLD_SIZE={world}; launch with torchrun")
        return cls(rank, world, local)

    @classmethod
    def join(cls, device: torch.device) -> "Cluster":
        """from_environment, with the process group started for `device` when there are several processes."""
        cluster = cls.from_environment()
        if not cluster.distributed or dist.is_initialized():
            return cluster
        if not dist.is_available():
            raise ConfigError("this torch build has no torch.distributed; run one process, or install a torch "
                              "that has it")
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(cluster.local_rank)
        dist.init_process_group(backend, timeout=TIMEOUT)
        return cluster

    @staticmethod
    def leave() -> None:
        """End the process group, if one was started (the command line's last step under torchrun)."""
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

    def device(self, device: torch.device) -> torch.device:
        """Where this process trains: cuda:LOCAL_RANK for CUDA runs of several processes, else `device`."""
        if self.distributed and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def check_batch(self, batch_size: int | None) -> None:
        if self.distributed and batch_size is not None and batch_size % self.world_size:
            raise ConfigError(f"--batch-size {batch_size} is the global batch, cut into {self.world_size} equal "
                              f"slices, one per process; give a multiple of {self.world_size}")

    # -- training -----------------------------------------------------------------------------------------
    def wrap(self, model: nn.Module, example: Callable[[], torch.Tensor], *, find_unused: bool = False) -> nn.Module:
        """The module to run forward passes through: DDP over `model` with several processes (it shares
        `model`'s parameters, so optimisers and state dicts keep using `model`), else `model` itself.
        `example()`: a small batch on the model's device, to find parameters the output does not reach;
        `find_unused`: look for them every step anyway (a search that stops using parameters part-way)."""
        if not self.distributed:
            return model
        device = next(iter(model.parameters())).device
        ids = [device.index] if device.type == "cuda" else None
        # a parameter the output never reaches (another output's head) would stall the all-reduce: DDP must
        # then look for it on every step, which it does at the price of a walk of the autograd graph
        unused = find_unused or has_unused_parameters(model, example())
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)

    def shard(self, loader: DataLoader, *, train: bool) -> DataLoader:
        """This process's slice of every batch of `loader` (the loader itself for one process). The slices of
        a training batch are equal (the last batch drops its remainder); evaluation keeps every sample."""
        if not self.distributed:
            return loader
        if loader.batch_sampler is None:
            raise ConfigError("the data loader has no batch sampler (batch_size=None); several processes need "
                              "batches to cut into slices")
        slices = BatchSlices(loader.batch_sampler, self.rank, self.world_size, equal=train)
        return DataLoader(loader.dataset, batch_sampler=slices, num_workers=loader.num_workers,
                          collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                          worker_init_fn=loader.worker_init_fn, generator=loader.generator,
                          persistent_workers=loader.persistent_workers)

    # -- sharing ------------------------------------------------------------------------------------------
    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over the processes (float64)."""
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(tensor)
        return tensor.tolist()

    def broadcast(self, value):
        """Rank 0's `value` (any picklable object) on every process."""
        if not self.distributed:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value) -> list:
        """Every process's `value`, in rank order, on every process."""
        if not self.distributed:
            return [value]
        boxes = [None] * self.world_size
        dist.all_gather_object(boxes, value)
        return boxes

    def share(self, count: int) -> range:
        """The indices of `count` independent jobs this process does (every world_size-th)."""
        return range(self.rank, count, self.world_size)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def _collective_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def has_unused_parameters(model: nn.Module, example: torch.Tensor) -> bool:
    """Whether some trainable parameter of `model` is not on the autograd graph of its output for `example`
    (a training-mode forward pass whose random draws and buffer updates are undone)."""
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    buffers = {name: value.clone() for name, value in model.named_buffers()}
    with torch.random.fork_rng(devices=[example.device] if example.device.type == "cuda" else []):
        output = model(example)
    with torch.no_grad():
        for name, value in model.named_buffers():
            value.copy_(buffers[name])
    reached, stack, seen = set(), [t.grad_fn for t in tensors_in(output) if t.grad_fn is not None], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # an AccumulateGrad node: a leaf parameter
        if variable is not None:
            reached.add(id(variable))
        stack.extend(next_node for next_node, _ in node.next_functions)
    return bool(trainable - reached)


class BatchSlices(Sampler[list[int]]):
    """Rank `rank`'s slice of every batch `batches` yields. `equal`: all slices of a batch the same size, the
    last batch losing its remainder (and dropped when smaller than the number of slices); otherwise the
    slices differ by at most one sample and a slice may be empty (and is then skipped)."""

    def __init__(self, batches, rank: int, world_size: int, *, equal: bool) -> None:
        self.batches, self.rank, self.world_size, self.equal = batches, rank, world_size, equal

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            batch = list(batch)
            if self.equal:
                size = len(batch) // self.world_size
                if size == 0:
                    continue
                yield batch[self.rank * size:(self.rank + 1) * size]
                continue
            size, extra = divmod(len(batch), self.world_size)
            start = self.rank * size + min(self.rank, extra)
            part = batch[start:start + size + (self.rank < extra)]
            if part:
                yield part

    def __len__(self) -> int:
        count = len(self.batches)
        if self.equal and count:
            # only the last batch can be smaller than the others: the sampler's size tells it
            sampler = getattr(self.batches, "sampler", None)
            batch_size = getattr(self.batches, "batch_size", None)
            if sampler is not None and batch_size:
                last = len(sampler) - (count - 1) * batch_size
                if 0 < last < self.world_size:
                    count -= 1
        return count

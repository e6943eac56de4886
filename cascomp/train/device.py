"""Where training runs and in which precision: the device of CompressConfig.device, and --amp's autocast.

The pipeline places its models (`model.to(placement.device)`); the loops bring each batch over (a
non-blocking copy, from pinned memory when the loaders pin it) and run the forward passes of search and
fine-tuning under autocast when `amp` is on:
1. bfloat16 on the CPU, and on CUDA devices that support it: its range is float32's, so no loss scaling;
2. float16 elsewhere (older CUDA devices, MPS), with a GradScaler that scales the loss before backward and
   skips a step whose gradients overflowed.
Only the forward passes are autocast: their outputs are cast back to float32 before the loss, and the cost
model, the penalty controller and the budget decision never run under autocast, so the budget lands the same
with or without amp. Evaluation, BN recalibration, probes and reconstruction run in full precision on the
device of the model they are given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from cascomp.config import CompressConfig, resolve_device

_HALF = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Placement:
    device: torch.device
    amp_dtype: torch.dtype | None = None  # None: full precision

    @classmethod
    def of(cls, config: CompressConfig, cluster=None) -> "Placement":
        """config's device and precision; with several CUDA processes (`cluster`, a
        cascomp.train.distributed.Cluster), each process's own GPU."""
        device = resolve_device(config.device)
        if cluster is not None:
            device = cluster.device(device)
        return cls(device=device, amp_dtype=amp_dtype(device) if config.amp else None)

    def batch(self, x, y):
        return to_device(x, self.device), to_device(y, self.device)

    def forward(self, model: nn.Module, x) -> torch.Tensor:
        """model(x), under autocast when amp is on, with a half-precision output cast back to float32."""
        if self.amp_dtype is None:
            return model(x)
        with torch.autocast(self.device.type, dtype=self.amp_dtype):
            output = model(x)
        return output.float() if output.dtype in _HALF else output

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """Case 2's loss scaler; None where no scaling is needed (full precision, bfloat16)."""
        return torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None

    def caution(self) -> str | None:
        """A line for the log where amp makes the run slower, not faster: bfloat16 on a CPU without native
        instructions for it (AVX-512 BF16, AMX) is emulated, 5-9x slower per step than float32 (measured on
        an AVX2 EPYC, the zoo's demo and resnet20)."""
        if self.amp_dtype != torch.bfloat16 or self.device.type != "cpu" or _native_cpu_bfloat16():
            return None
        return (f"amp: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native bfloat16 instructions, "
                "so autocast steps run several times slower than float32 here; leave --amp off on this machine")

    def describe(self) -> dict:
        """For the report's environment: the device the run used, its name, and the autocast precision."""
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else self.device.type
        return {"device": str(self.device), "device_name": name,
                "amp": None if self.amp_dtype is None else str(self.amp_dtype).removeprefix("torch.")}


def amp_dtype(device: torch.device) -> torch.dtype:
    """Case 1 where the device supports bfloat16, else case 2."""
    if device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def _native_cpu_bfloat16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private check: without it, assume the CPU is fine
        return True


def backward_and_step(loss: torch.Tensor, optimizers: list[torch.optim.Optimizer],
                      scaler: torch.amp.GradScaler | None) -> None:
    """Backward and one step of each optimiser, through the loss scaler when there is one."""
    if scaler is None:
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        return
    scaler.scale(loss).backward()
    for optimizer in optimizers:
        scaler.step(optimizer)
    scaler.update()


def to_device(value, device: torch.device):
    """A tensor (or a tuple/list of them) on `device`; a no-op for a tensor already there."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(item, device) for item in value)
    return value


def module_device(model: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for a module holding none)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def tensors_in(value) -> list[torch.Tensor]:
    """The tensors of a (nested) output: tuples and lists in order, dicts by value order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in tensors_in(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in tensors_in(item)]
    return []


def on_cpu(value):
    """`value` (a checkpoint: nested dicts, lists and tuples) with every tensor moved to the CPU, so that it
    loads on any machine; tensors already there are kept as they are."""
    if isinstance(value, torch.Tensor):
        return value if value.device.type == "cpu" else value.detach().cpu()
    if isinstance(value, dict):
        return {key: on_cpu(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(on_cpu(item) for item in value)
    return value


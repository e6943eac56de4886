"""Configs of `cascomp.compress`: frozen dataclasses, validated on construction, round-tripping to dicts.

A `Target` is a cost budget: `flops=0.33` (a ratio of the baseline) or `flops=40M` (an absolute count);
or an accuracy tolerance: `drop=0.5`, top-1 at most 0.5 points below the baseline's (methods whose config
says `accuracy_tolerance`, e.g. gensynth, search for the most compact network that holds it);
`CompressConfig` holds the method, its own small config, the targets and the training schedule.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import torch

from cascomp.errors import ConfigError

METRICS = ("flops", "params", "latency")  # cost budgets (latency: predicted by the per-layer latency table)
TOLERANCE = "drop"  # the accuracy tolerance: top-1 points below the baseline
_SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9}


@dataclass(frozen=True, kw_only=True)
class Target:
    """`metric` (flops or params) at most `value`: a ratio of the baseline when `absolute` is False; or, with
    metric "drop", a top-1 at most `value` percentage points below the baseline's."""

    metric: str
    value: float
    absolute: bool = False

    def __post_init__(self) -> None:
        if self.metric == TOLERANCE:
            if not 0 <= self.value < 100 or self.absolute:
                raise ConfigError(f"target drop={self.value:g} is the top-1 drop allowed, in percentage points, "
                                  "from 0 up to 100; e.g. --target drop=0.5")
            return
        if self.metric not in METRICS:
            raise ConfigError(f"unknown target metric {self.metric!r}; choose one of {', '.join(METRICS)} or "
                              f"{TOLERANCE}, e.g. --target flops=0.33 or --target drop=0.5")
        if not self.value > 0:
            raise ConfigError(f"target {self.metric} must be positive, got {self.value}; e.g. --target flops=0.33")
        if not self.absolute and self.value >= 1:
            example = "latency=12ms" if self.metric == "latency" else "flops=40M"
            raise ConfigError(f"target {self.metric}={self.value} is a ratio of the baseline and must be below 1; "
                              f"write an absolute budget with a suffix, e.g. {example}")

    @property
    def is_cost(self) -> bool:
        """A budget on a cost (flops, params), not the accuracy tolerance."""
        return self.metric in METRICS

    @classmethod
    def parse(cls, text: str) -> "Target":
        """`flops=0.33`, `params=0.5`, `flops=40M`, `params=1.2M`, `flops=2e8`, `latency=0.5`, `latency=12ms`,
        `drop=0.5`."""
        match = re.fullmatch(r"\s*(\w+)\s*=\s*([0-9.eE+-]+)\s*(ms|[KMG]?)\s*", text or "")
        if not match:
            raise ConfigError(f"cannot read target {text!r}; write METRIC=VALUE, e.g. flops=0.33 or params=1.5M")
        metric, number, suffix = match.group(1).lower(), match.group(2), match.group(3)
        if (suffix == "ms") != (metric == "latency" and bool(suffix)):
            raise ConfigError(f"target {text!r}: only latency takes the suffix ms, and latency no other; e.g. "
                              "latency=0.5 (of the baseline's) or latency=12ms")
        if metric == "latency":
            try:
                return cls(metric=metric, value=float(number), absolute=suffix == "ms")
            except ValueError:
                raise ConfigError(f"cannot read the number in target {text!r}; e.g. latency=0.5") from None
        try:
            value = float(number) * _SUFFIX[suffix]
        except ValueError:
            raise ConfigError(f"cannot read the number in target {text!r}; e.g. flops=0.33") from None
        if metric == TOLERANCE:
            if suffix:
                raise ConfigError(f"target {text!r}: drop is in percentage points of top-1, without a suffix; "
                                  "e.g. drop=0.5")
            return cls(metric=metric, value=value)
        if not suffix and 1 <= value < 1000:
            raise ConfigError(f"target {text!r}: a ratio of the baseline must be below 1, and an absolute budget "
                              "needs a suffix or a large number, e.g. flops=0.33, flops=40M or params=250000")
        return cls(metric=metric, value=value, absolute=bool(suffix) or value >= 1000)

    def ratio(self, baseline: float) -> float:
        """The budget as a ratio of the baseline's cost."""
        return self.value / baseline if self.absolute else self.value

    def __str__(self) -> str:
        return f"{self.metric}={self.value:g}{'ms' if self.metric == 'latency' and self.absolute else ''}"


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    """Knowledge distillation from the baseline in fine-tuning: loss = (1-w)*CE + w*T^2*KL (TAS eq. 10)."""

    temperature: float = 4.0
    weight: float = 0.9
    in_search: bool = True

    def __post_init__(self) -> None:
        check_positive(self, "temperature")
        if not 0 <= self.weight <= 1:
            raise ConfigError(f"distillation weight must be in [0, 1], got {self.weight}; e.g. --kd-weight 0.9")


# Method name -> its config dataclass. Each method declares its config next to itself (cascomp/methods/) and
# cascomp.methods registers both; the config is what CompressConfig.method_config holds for that method.
METHOD_CONFIGS: dict[str, type] = {}


def register_method_config(name: str, config_type: type) -> None:
    """Make `name` a method CompressConfig accepts, with `config_type` (a frozen dataclass whose fields all
    have defaults) as its method_config."""
    if not dataclasses.is_dataclass(config_type):
        raise ConfigError(f"method {name!r}: its config {config_type!r} must be a dataclass")
    METHOD_CONFIGS[name] = config_type


def option(default, flag: str, help: str, *, choices: tuple | None = None, value=None, requires=None):
    """A method config field that the command line sets with `flag` (`cascomp compress --help` lists it).
    `value`: the flag takes no argument and sets this value; `requires`: (field, value) the field is read
    with only, so giving the flag without it is refused."""
    metadata = {"flag": flag, "help": help, "choices": choices, "value": value, "requires": requires}
    return field(default=default, metadata=metadata)


def command_line_options(config_type: type) -> list[dataclasses.Field]:
    """The fields of a method config that have a command-line flag."""
    return [f for f in dataclasses.fields(config_type) if "flag" in f.metadata]


@dataclass(frozen=True, kw_only=True)
class CompressConfig:
    """Everything one `compress` run needs besides the model and the data."""

    # the default: the best cascomp method of benchmarks/peers.py (docs/results.md)
    method: str = "sensitivity"
    targets: tuple[Target, ...] = (Target(metric="flops", value=0.33),)
    method_config: object = None
    # the schedule in full passes over the training data: `epochs` is the total, which the method splits
    # (a searching method's config says its share); or search_epochs and finetune_epochs given each (3 and 3
    # when neither is given). Methods without a search fine-tune for the search epochs too.
    epochs: int | None = None
    search_epochs: int | None = None
    finetune_epochs: int | None = None
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    distill: DistillConfig = field(default_factory=DistillConfig)
    seed: int = 0
    # "auto": widths in multiples of 8 where the budget can still be hit within 1 % that way, else 4, 2, 1
    # (onnxruntime's CPU kernels run multiples of 8 far faster than odd widths); an int is a hard rule.
    round_to: int | str = "auto"
    min_keep: int = 1
    ignore: tuple[str, ...] = ()
    latency_batch_sizes: tuple[int, ...] = (1, 32)
    # a latency target prices widths with a per-layer table timed at the first of latency_batch_sizes with
    # this many onnxruntime threads (cascomp.export.latency_table)
    latency_threads: int = 1
    # ... and on this onnxruntime provider: "cpu" or "cuda" (needs onnxruntime-gpu), where the model will run
    latency_device: str = "cpu"
    # refit the pruned model's plain conv/linear layers by least squares to the baseline's outputs before
    # fine-tuning (cascomp.train.reconstruct)
    reconstruct: bool = False
    # which output is the logits when forward returns a tuple/list (an index) or a dict (a key); the
    # compressed model returns that output alone
    output_index: int | str | None = None
    # where search, probes, reconstruction, fine-tuning and evaluation run: "auto" (CUDA when available, else
    # the CPU), "cpu", "cuda", "cuda:N" or "mps"; the result is a CPU module whatever the device
    device: str = "auto"
    # mixed precision for the forward passes of search and fine-tuning (bfloat16 where the device supports
    # it, else float16 with loss scaling); the cost model and the budget stay in float32/float64
    amp: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHOD_CONFIGS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(sorted(METHOD_CONFIGS))}")
        expected = METHOD_CONFIGS[self.method]
        if self.method_config is None:
            object.__setattr__(self, "method_config", expected())
        elif not isinstance(self.method_config, expected):
            raise ConfigError(f"method {self.method!r} takes a {expected.__name__}, "
                              f"got {type(self.method_config).__name__}")
        targets = tuple(Target.parse(t) if isinstance(t, str) else t for t in self.targets)
        object.__setattr__(self, "targets", targets)
        if not targets:
            raise ConfigError("give at least one target, e.g. --target flops=0.33")
        metrics = [t.metric for t in targets]
        if len(set(metrics)) != len(metrics):
            raise ConfigError(f"each metric may have one target, got {', '.join(map(str, targets))}")
        self._resolve_schedule()
        self._check_tolerance()
        for name in ("search_epochs", "finetune_epochs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"{name} must be a whole number ≥ 0, got {getattr(self, name)!r}; "
                                  f"e.g. --{name.replace('_', '-')} 2")
        check_positive(self, "lr")
        if self.round_to != "auto" and (not isinstance(self.round_to, int) or isinstance(self.round_to, bool)
                                        or self.round_to < 1):
            raise ConfigError(f"round_to must be \"auto\" or a positive integer, got {self.round_to!r}; "
                              "e.g. --round-to 8")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ConfigError("momentum must be in [0, 1) and weight_decay ≥ 0")
        if isinstance(self.output_index, bool) or not isinstance(self.output_index, (int, str, type(None))):
            raise ConfigError(f"output_index must be an index or a key, got {self.output_index!r}; e.g. "
                              "--output-index 0 or --output-index logits")
        if isinstance(self.ignore, str):
            raise ConfigError(f"ignore must be a sequence of patterns, got the string {self.ignore!r}; e.g. "
                              f"ignore=({self.ignore!r},)")
        object.__setattr__(self, "ignore", tuple(self.ignore))
        object.__setattr__(self, "latency_batch_sizes", tuple(self.latency_batch_sizes))
        if isinstance(self.latency_threads, bool) or not isinstance(self.latency_threads, int) or self.latency_threads < 1:
            raise ConfigError(f"latency_threads must be a whole number ≥ 1, got {self.latency_threads!r}; "
                              "e.g. --latency-threads 4")
        if self.latency_device not in ("cpu", "cuda"):
            raise ConfigError(f"latency_device must be 'cpu' or 'cuda', got {self.latency_device!r}; "
                              "e.g. --latency-device cuda")
        resolve_device(self.device)
        if not isinstance(self.amp, bool):
            raise ConfigError(f"amp must be True or False, got {self.amp!r}; e.g. --amp")

    @property
    def drop(self) -> float | None:
        """The accuracy tolerance in top-1 points (`--target drop=...`), None without one."""
        return next((t.value for t in self.targets if t.metric == TOLERANCE), None)

    def _check_tolerance(self) -> None:
        """An accuracy tolerance needs a method that searches for it, and a search to do it in."""
        if self.drop is None:
            return
        if not getattr(type(self.method_config), "accuracy_tolerance", False):
            able = sorted(name for name, kind in METHOD_CONFIGS.items() if getattr(kind, "accuracy_tolerance", False))
            raise ConfigError(f"--target drop (an accuracy tolerance) is not understood by method {self.method!r}; "
                              f"use --method {' or '.join(able) or 'gensynth'}, or give a cost target instead")
        if self.search_epochs < 1:
            raise ConfigError(f"--target drop needs a search to check the tolerance in, but search_epochs is "
                              f"{self.search_epochs}; give --epochs 2 or more, or --search-epochs 1")

    def _resolve_schedule(self) -> None:
        """search_epochs and finetune_epochs from `epochs` (the method's split, or the one of them given), or
        their defaults; a total that disagrees with both given is refused."""
        search, finetune, total = self.search_epochs, self.finetune_epochs, self.epochs
        if total is None:
            search, finetune = 3 if search is None else search, 3 if finetune is None else finetune
        else:
            if isinstance(total, bool) or not isinstance(total, int) or total < 1:
                raise ConfigError(f"epochs must be a whole number ≥ 1, got {total!r}; e.g. --epochs 2")
            if search is None and finetune is None:
                search = int(total * getattr(self.method_config, "search_share", 0.0))
            if search is None:
                search = total - finetune
            if finetune is None:
                finetune = total - search
            if search + finetune != total:
                raise ConfigError(f"epochs={total} is the total of search and fine-tuning epochs, but "
                                  f"search_epochs={search} and finetune_epochs={finetune} add up to "
                                  f"{search + finetune}; give --epochs alone, or the two without it")
        object.__setattr__(self, "search_epochs", search)
        object.__setattr__(self, "finetune_epochs", finetune)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["targets"] = [str(t) for t in self.targets]
        data["ignore"] = list(self.ignore)
        data["latency_batch_sizes"] = list(self.latency_batch_sizes)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "CompressConfig":
        data = dict(data)
        method = data.get("method", cls.method)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; known: {', '.join(sorted(known))}")
        if isinstance(data.get("method_config"), dict) and method in METHOD_CONFIGS:
            data["method_config"] = METHOD_CONFIGS[method](**data["method_config"])
        if isinstance(data.get("distill"), dict):
            data["distill"] = DistillConfig(**data["distill"])
        data["targets"] = tuple(data.get("targets", ("flops=0.33",)))
        return cls(**data)


DEVICE_FORMS = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(name: str) -> torch.device:
    """The torch device `name` (a CompressConfig.device) stands for on this machine: "auto" is the first CUDA
    device when there is one, else the CPU. A device this machine lacks is refused, naming those it has."""
    if not isinstance(name, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:(0|[1-9]\d{0,3}))?", name):
        raise ConfigError(f"unknown device {name!r}; give {DEVICE_FORMS}, e.g. --device cuda:0")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    cuda = torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    present = {"cpu": True, "cuda": cuda, "mps": torch.backends.mps.is_available()}[device.type]
    if not present:
        without = device.type == "cuda" and not torch.version.cuda
        build = f" (torch {torch.__version__} is built without CUDA)" if without else ""
        raise ConfigError(f"device {name!r} is not available: this machine has {', '.join(devices())}{build}; "
                          "give one of those, or --device auto")
    return device


def devices() -> list[str]:
    """The devices of this machine, as --device names them."""
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    found = ["cpu"] + [f"cuda:{index}" for index in range(cuda)]
    return found + (["mps"] if torch.backends.mps.is_available() else [])


def check_choice(config, name: str, options: tuple[str, ...]) -> None:
    value = getattr(config, name)
    if value not in options:
        raise ConfigError(f"{type(config).__name__}.{name} must be one of {', '.join(options)}, got {value!r}")


def check_share(config, *names: str) -> None:
    """Each of `names` must be a share in [0, 1] (e.g. a method's search_share of the epoch budget)."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ConfigError(f"{type(config).__name__}.{name} must be in [0, 1], got {value!r}")


def check_positive(config, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{type(config).__name__}.{name} must be positive, got {value!r}")

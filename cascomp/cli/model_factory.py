"""Models built by a user's factory function ("pkg.module:function"), and the state dicts they load."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import Tensor, nn

from cascomp.data.imports import ImportFailure, error_reason as _reason, import_object
from cascomp.errors import ConfigError, ModelLoadError

_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")  # where training checkpoints keep weights


def build_model(spec: str) -> nn.Module:
    """Import `spec` ("pkg.module:function", attributes may be dotted) and call it with no arguments."""
    module_name = spec.partition(":")[0]
    try:
        target = import_object(spec)
    except ImportFailure as failure:
        if failure.malformed:
            raise ConfigError(f"--factory must look like pkg.module:function, got {spec!r}") from None
        if failure.raised:
            raise ModelLoadError(f"importing {module_name!r} for --factory failed: {failure.reason}") from failure
        raise ModelLoadError(f"cannot import --factory {spec}: {failure.reason}; make {module_name!r} importable "
                             "(run from its directory or add it to PYTHONPATH)") from failure
    try:
        model = target()
    except Exception as error:
        raise ModelLoadError(f"--factory {spec} raised {_reason(error)}; it must build the model when called "
                             "with no arguments") from error
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"--factory {spec} returned a {type(model).__name__}, not an nn.Module")
    return model


def state_dict_in(obj) -> dict[str, Tensor] | None:
    """The tensors of a state dict, also inside a training checkpoint ({"state_dict": ...}); else None."""
    if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in _CHECKPOINT_KEYS:
            if key in obj and state_dict_in(obj[key]) is not None:
                return state_dict_in(obj[key])
    return None


def fit_state_dict(model: nn.Module, state: dict[str, Tensor], file: Path, spec: str) -> None:
    """Load `state` into `model`, or say which keys and shapes do not fit (the first few of each kind)."""
    expected = model.state_dict()
    prefix = "module."  # nn.DataParallel and DistributedDataParallel save keys under it
    if all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in expected):
        state = {k[len(prefix):]: v for k, v in state.items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} is {tuple(state[k].shape)} in the file but {tuple(expected[k].shape)} in the model"
                  for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = [f"{what} {_first(keys)}" for what, keys in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch:", mismatched)) if keys]
    if problems:
        raise ModelLoadError(f"{str(file)!r} does not fit the model --factory {spec} builds: {'; '.join(problems)}; "
                             "check that the factory builds the architecture these weights were saved from")
    model.load_state_dict(state)


def _first(items: Sequence[str], shown: int = 3) -> str:
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")

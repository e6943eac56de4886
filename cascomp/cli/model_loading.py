"""Loading a user's model and making its inputs: what every cascomp command starts with.

`load_model` recognises a file by its content, not its name:
  1. a torch.export archive (.pt2): `torch.export.load(...).module()`; it holds no code to run, so it is
     safe, and it carries the example inputs it was exported with;
  2. a torch.save'd nn.Module (.pt/.pth): needs torch.load(weights_only=False), which runs the pickle's
     code; it comes back with a warning, and safe=True refuses it;
  3. a state dict with factory="pkg.module:function" that builds the model (weights_only=True, so safe); a
     factory without a file gives the model with the weights the factory built.
Every failure is a ModelLoadError or ConfigError of one line that says what to do. Inputs come from
--input-shape (`parse_input_shape`, `make_inputs`), and `check_runs` tries them once before any deeper work.
"""

from __future__ import annotations

import inspect
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from cascomp.cli.model_factory import build_model, fit_state_dict, state_dict_in
from cascomp.data.imports import error_reason as _reason
from cascomp.errors import ConfigError, ModelLoadError
from cascomp.ir.trace import exported_module, quiet_logger

_PICKLE_PROTOCOL_2 = b"\x80"  # the first byte of torch.save's pre-1.6 (non-zip) format


@dataclass(frozen=True)
class LoadedModel:
    module: nn.Module
    example_inputs: tuple[Tensor, ...] | None  # the .pt2's own examples; None for other formats
    source: str  # "pickle", "torch.export" or "factory"
    warning: str | None  # one line for the user (pickles run code when loaded); None when safe
    fixed_batch: int | None = None  # a .pt2 exported with a static batch size accepts only this one


def load_model(path: str | os.PathLike | None, *, factory: str | None = None, safe: bool = False) -> LoadedModel:
    """Load the model at `path` (see the module doc for the formats); raises ModelLoadError or ConfigError."""
    if factory is not None:
        return _load_with_factory(path, factory)
    if path is None:
        raise ConfigError("give a model file (.pt, .pth or .pt2), or --factory pkg.module:function")
    file = _existing_file(path)
    kind = _kind_of(file)
    if kind == "torch.export":
        return _load_exported(file)
    obj = _load_weights_only(file)
    if obj is None:  # the pickle holds Python objects beyond tensors: a saved module
        return _load_pickled_module(file, safe)
    if state_dict_in(obj) is not None:
        raise ModelLoadError(f"{str(file)!r} holds a state dict (weights only), not a model; pass --factory "
                             "pkg.module:function naming a function that builds the model, e.g. "
                             "--factory mymodels:build_resnet")
    raise ModelLoadError(f"{str(file)!r} holds a {type(obj).__name__}, not an nn.Module; save the model itself "
                         "(torch.save(model, path)) or its state dict and pass --factory")


def _existing_file(path: str | os.PathLike) -> Path:
    file = Path(path)
    if not file.exists():
        raise ModelLoadError(f"no model file at {str(file)!r}; check the path")
    if not file.is_file():
        raise ModelLoadError(f"{str(file)!r} is not a file; give a model file (.pt, .pth or .pt2)")
    if file.stat().st_size == 0:
        raise ModelLoadError(f"model file {str(file)!r} is empty (0 bytes), so it was not saved completely; "
                             "save the model again")
    return file


def _kind_of(file: Path) -> str:
    """"torch.export" or "pickle", from the bytes; anything else is refused here."""
    if zipfile.is_zipfile(file):
        with zipfile.ZipFile(file) as archive:
            parts = {name.split("/", 1)[-1] for name in archive.namelist()}
        if "archive_format" in parts or "models/model.json" in parts:
            return "torch.export"
        if "constants.pkl" in parts:
            raise ModelLoadError(f"{str(file)!r} is a TorchScript archive (torch.jit.save), which cascomp cannot "
                                 "rewrite; save the Python model with torch.save(model, path) or "
                                 "torch.export.save(program, 'model.pt2')")
        if "data.pkl" in parts:
            return "pickle"
    else:
        with open(file, "rb") as stream:
            if stream.read(1) == _PICKLE_PROTOCOL_2:
                return "pickle"
    raise ModelLoadError(f"cannot read {str(file)!r}: it is neither a torch.save nor a torch.export file (corrupt "
                         "or truncated?); save the model again with torch.save(model, path) or torch.export.save")


def _load_exported(file: Path) -> LoadedModel:
    try:
        with quiet_logger("torch.export"), open(file, "rb") as stream:  # a stream: any name is accepted
            program = torch.export.load(stream)
        module = exported_module(program)
    except Exception as error:  # torch raises many kinds for a damaged archive
        raise ModelLoadError(f"cannot load torch.export archive {str(file)!r}: {_reason(error)}; save it again "
                             "with torch.export.save") from error
    args = (program.example_inputs or ((), {}))[0]
    examples = tuple(args) if args and all(isinstance(t, Tensor) for t in args) else None
    return LoadedModel(module, examples, "torch.export", None, fixed_batch=_fixed_batch(program))


def _fixed_batch(program) -> int | None:
    """Dim 0 of the first user input when torch.export made it static, else None."""
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            value = node.meta.get("val")
            if isinstance(value, Tensor) and value.dim() and isinstance(value.shape[0], int):
                return value.shape[0]
            return None
    return None


def _load_weights_only(file: Path):
    """What torch.load(weights_only=True) gives, or None when the file holds more than tensors and containers."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:
        if "Weights only load failed" in str(error):
            return None
        raise _corrupt(file, error) from error


def _load_pickled_module(file: Path, safe: bool) -> LoadedModel:
    if safe:
        raise ModelLoadError(f"refusing to load {str(file)!r} with --safe: it is a pickle, and loading it runs code "
                             "from the file; use a torch.export file (.pt2), or --factory pkg.module:function "
                             "with a state dict (torch.save(model.state_dict(), path))")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=False)
    except (AttributeError, ImportError) as error:
        raise ModelLoadError(f"cannot unpickle {str(file)!r}: {_reason(error)}; the model's class must be "
                             "importable: run from the directory of its code or add it to PYTHONPATH") from error
    except Exception as error:
        raise _corrupt(file, error) from error
    if not isinstance(obj, nn.Module):
        raise ModelLoadError(f"{str(file)!r} holds a {type(obj).__name__}, not an nn.Module; save the model "
                             "itself with torch.save(model, path)")
    warning = (f"{file} is a pickle: loading it ran code from the file (torch.load weights_only=False); load "
               "only files you trust, or pass --safe to refuse pickles")
    return LoadedModel(obj, None, "pickle", warning)


def _load_with_factory(path: str | os.PathLike | None, spec: str) -> LoadedModel:
    model = build_model(spec)
    if path is not None:
        file = _existing_file(path)
        state = state_dict_in(_load_weights_only(file)) if _kind_of(file) == "pickle" else None
        if state is None:
            raise ModelLoadError(f"with --factory, {str(file)!r} must be a state dict saved with "
                                 "torch.save(model.state_dict(), path); to load a saved model instead, drop --factory")
        fit_state_dict(model, state, file, spec)
    return LoadedModel(model, None, "factory", None)


def _corrupt(file: Path, error: Exception) -> ModelLoadError:
    return ModelLoadError(f"cannot read {str(file)!r} ({_reason(error)}); the file is corrupt or truncated, save "
                          "the model again")


# -- inputs ------------------------------------------------------------------------------------------------
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32, "bool": torch.bool}


def parse_input_shape(text: str) -> tuple[int, ...]:
    """"1,3,32,32" -> (1, 3, 32, 32): positive sizes, the batch first."""
    parts = [part.strip() for part in str(text).split(",")]
    for part in parts:
        if not part.isdigit() or int(part) == 0:
            raise ConfigError(f"--input-shape {text!r}: {part!r} is not a positive integer; give the sizes "
                              "separated by commas, the batch first, e.g. --input-shape 1,3,32,32")
    return tuple(int(part) for part in parts)


def make_inputs(shapes: Sequence[Sequence[int]], dtypes: Sequence[str | torch.dtype] | None = None, *,
                seed: int = 0) -> tuple[Tensor, ...]:
    """Random inputs, the same for a given seed: normal floats; ints and bools in {0, 1}, valid indices for
    any embedding. `dtypes`: one per shape, or one for all (names as in DTYPES); float32 by default."""
    kinds = [_dtype(d) for d in (dtypes or ["float32"])]
    if len(kinds) == 1:
        kinds = kinds * len(shapes)
    if len(kinds) != len(shapes):
        raise ConfigError(f"got {len(kinds)} --input-dtype values for {len(shapes)} --input-shape values; give "
                          "one dtype for all inputs or one per input")
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(tuple(shape), generator=generator).to(kind) if kind.is_floating_point
                 else torch.randint(0, 2, tuple(shape), generator=generator).to(kind)
                 for shape, kind in zip(shapes, kinds))


def _dtype(value: str | torch.dtype) -> torch.dtype:
    if isinstance(value, torch.dtype):
        return value
    if value not in DTYPES:
        raise ConfigError(f"unknown --input-dtype {value!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[value]


def check_runs(loaded: LoadedModel, inputs: tuple[Tensor, ...], *, inputs_from: str | None = None) -> None:
    """Run the model once on `inputs` (eval mode, no grad); a failure is a ConfigError saying what the
    model expects, so a wrong --input-shape is caught before any deeper work. `inputs_from`: where the
    inputs come from when the user does not give their shape (compress: "the samples of DATA"), so the
    message talks about the data rather than a flag that command does not have."""
    module = loaded.module
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            module(*inputs)
    except Exception as error:  # whatever the user's forward raises on a wrong shape or dtype
        shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
        if inputs_from is None:
            raise ConfigError(f"the model does not run on inputs of shape {shapes}: {_reason(error)}"
                              f"{_expectation(loaded)}") from error
        raise ConfigError(f"the model does not run on {inputs_from} (shape {shapes}): {_reason(error)}"
                          f"{_data_expectation(loaded, len(inputs))}") from error
    finally:
        for m, flag in flags:
            m.training = flag


def _data_expectation(loaded: LoadedModel, given: int) -> str:
    """Why the data's samples may not fit the model, and what to do: compress feeds it one input."""
    parameters = _required_inputs(loaded.module)
    if parameters is not None and len(parameters) > given:
        return (f"; its forward takes {len(parameters)} inputs ({', '.join(parameters)}) but compress feeds it "
                f"{given}, the data's samples: wrap it in a module whose forward takes the samples alone")
    hint = _expectation(loaded).split(", e.g. --input-shape")[0]
    return f"{hint}; give data whose samples the model takes, or a model for this data" if hint else (
        "; give data whose samples the model takes, or a model for this data")


def _required_inputs(module: nn.Module) -> list[str] | None:
    """The names of forward's parameters without a default, or None when the signature cannot be read."""
    try:
        signature = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [name for name, parameter in signature.parameters.items()
            if parameter.kind in kinds and parameter.default is inspect.Parameter.empty]


def _expectation(loaded: LoadedModel) -> str:
    """What input the model wants, as far as its examples or its first layer tell."""
    if loaded.example_inputs is not None:
        shapes = " ".join(f"--input-shape {','.join(map(str, t.shape))}" for t in loaded.example_inputs)
        return f"; it was exported for {shapes}"
    for name, layer in loaded.module.named_modules():
        if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            spatial = ",".join("DHW"[3 - len(layer.kernel_size):]) if len(layer.kernel_size) > 1 else "L"
            return (f"; its first convolution {name!r} takes {layer.in_channels} input channels, e.g. "
                    f"--input-shape 1,{layer.in_channels},{spatial}")
        if isinstance(layer, nn.Linear):
            return (f"; its first linear layer {name!r} takes {layer.in_features} features in the last dim, "
                    f"e.g. --input-shape 1,{layer.in_features}")
        if isinstance(layer, nn.Embedding):
            return f"; its first layer {name!r} is an embedding: pass token ids with --input-dtype int64"
    return ""

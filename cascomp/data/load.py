"""load_data: a dataset spec ("SCHEME:ARG") in, a DataBundle of in-memory loaders out.

The steps, in order:
1. read the samples with the scheme's reader (official train/test split where the dataset has one);
2. without an official split, hold out val_fraction of the samples at random (seeded);
3. take the seeded random subsets limit_train / limit_val;
4. scale uint8 pixels to [0, 1] and resize to image_size;
5. normalise per channel with the mean and std of the training samples kept in step 3;
6. wrap both splits in DataLoaders (train shuffled by a generator seeded from seed; `workers` worker
   processes, seeded from that generator, so the batches do not depend on their number; `pin_memory` for
   non-blocking copies to a CUDA device).
python: factories skip steps 2-6: their loaders are used as they come (batch_size, workers and pin_memory are
theirs to set).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass

from cascomp.data import prepare
from cascomp.data.bundle import DataBundle, tensor_bundle
from cascomp.data.cifar import load_cifar
from cascomp.data.digits import load_digits_dataset
from cascomp.data.factory import load_factory
from cascomp.data.folder import load_image_folder
from cascomp.data.idx import load_idx_dataset
from cascomp.data.samples import RawData, Samples, check_labels
from cascomp.data.tensors import load_tensor_file
from cascomp.errors import DataError


@dataclass(frozen=True)
class _Scheme:
    argument: str  # what follows "SCHEME:", as SPEC_HELP shows it; "" when nothing may follow
    read: Callable[[str, int | None], RawData] | None  # (argument, image_size); None: python factories


_SCHEMES = {
    "mnist": _Scheme("DIR", lambda directory, _: load_idx_dataset(directory, "mnist")),
    "fashion-mnist": _Scheme("DIR", lambda directory, _: load_idx_dataset(directory, "fashion-mnist")),
    "cifar10": _Scheme("DIR", lambda directory, _: load_cifar(directory, "cifar10")),
    "cifar100": _Scheme("DIR", lambda directory, _: load_cifar(directory, "cifar100")),
    "imagefolder": _Scheme("DIR", load_image_folder),
    "tensors": _Scheme("FILE.pt|FILE.npz", lambda file, _: load_tensor_file(file)),
    "digits": _Scheme("", lambda _, __: load_digits_dataset()),
    "python": _Scheme("pkg.module:function", None),
}

SPEC_HELP = "dataset specs: " + ", ".join(f"{name}:{scheme.argument}" for name, scheme in _SCHEMES.items())


def spec_path(spec: str) -> str | None:
    """The file or folder a spec names ("fashion-mnist:DIR", "tensors:FILE"), as written; None for specs that
    name none (digits:, python:) and for specs that do not parse (load_data says why)."""
    scheme, _, argument = str(spec).strip().partition(":")
    known = _SCHEMES.get(scheme.lower())
    return argument if known is not None and known.argument.startswith(("DIR", "FILE")) and argument else None


def absolute_spec(spec: str) -> str:
    """`spec` with its path made absolute, so that it names the same data from any working directory."""
    path = spec_path(spec)
    if path is None:
        return spec
    return f"{spec.strip().partition(':')[0]}:{os.path.abspath(os.path.expanduser(path))}"


def load_data(spec: str, *, batch_size: int = 128, val_fraction: float = 0.1, seed: int = 0,
              limit_train: int | None = None, limit_val: int | None = None,
              image_size: int | None = None, workers: int = 0, pin_memory: bool = False) -> DataBundle:
    """The DataBundle `spec` names (see SPEC_HELP); DataError, in one line, for anything that does not fit."""
    prepare.check_arguments(batch_size, val_fraction, limit_train, limit_val, image_size)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise DataError(f"workers (--workers) must be a whole number >= 0, got {workers!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"seed (--seed) must be an integer, got {seed!r}")
    name, argument = _parse(spec)
    if _SCHEMES[name].read is None:
        _refuse_options_for_factories(spec, limit_train=limit_train, limit_val=limit_val,
                                      image_size=image_size)
        return load_factory(spec, argument)
    raw = _SCHEMES[name].read(argument, image_size)
    train, val = raw.train, raw.val
    if val is None:
        train, val = prepare.random_split(train, val_fraction, seed, spec)
    train = prepare.limit(train, limit_train, seed, train=True)
    val = prepare.limit(val, limit_val, seed, train=False)
    check_labels(val, raw.num_classes, f"{spec} (validation labels)")
    train_x = prepare.resize(prepare.to_float(train.x), image_size, spec)
    val_x = prepare.resize(prepare.to_float(val.x), image_size, spec)
    if train_x.shape[1:] != val_x.shape[1:]:
        raise DataError(f"{spec}: training samples have shape {tuple(train_x.shape[1:])} but validation "
                        f"samples {tuple(val_x.shape[1:])}; both splits need the same shape (store them so, or "
                        "resize both with load_data's image_size= in the Python API)")
    mean, std = prepare.channel_stats(train_x, spec)
    return tensor_bundle(spec, Samples(x=prepare.normalise(train_x, mean, std), y=train.y),
                         Samples(x=prepare.normalise(val_x, mean, std), y=val.y),
                         num_classes=raw.num_classes, batch_size=batch_size, seed=seed, mean=mean, std=std,
                         workers=workers, pin_memory=pin_memory)


def _parse(spec: str) -> tuple[str, str]:
    """(scheme, argument) of "SCHEME:ARG", checked against the table."""
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"empty dataset spec {spec!r}; give one of the {SPEC_HELP}")
    name, _, argument = spec.strip().partition(":")
    name = name.lower()
    if name not in _SCHEMES:
        close = difflib.get_close_matches(name, list(_SCHEMES), n=1)
        hint = f" (did you mean {close[0]}:?)" if close else ""
        raise DataError(f"unknown dataset scheme {name!r} in spec {spec!r}{hint}; {SPEC_HELP}")
    expected = _SCHEMES[name].argument
    if expected and not argument:
        raise DataError(f"dataset spec {spec!r} lacks its argument; write {name}:{expected}")
    if not expected and argument:
        raise DataError(f"dataset spec {spec!r}: {name}: takes no argument; write {name}:")
    return name, argument


def _refuse_options_for_factories(spec: str, **options: int | None) -> None:
    # Silently training on the full data when a subset was asked for would be worse than stopping.
    flags = {"limit_train": "limit_train (--limit-train)", "limit_val": "limit_val (--limit-val)"}
    given = [flags.get(option, option) for option, value in options.items() if value is not None]
    if given:
        raise DataError(f"{', '.join(given)} cannot apply to {spec}: its loaders are used as they come; "
                        "subset or resize inside the factory, or leave them out")

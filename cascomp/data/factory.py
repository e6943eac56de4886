"""Data from the user's own code: "python:pkg.module:function".

The function is called with no arguments and returns a DataBundle (used as it is) or a pair
(train_loader, val_loader) of DataLoaders yielding (x, y) batches. Those loaders are used as they are: no
split, subset, resizing or normalisation is applied, so mean/std are recorded as 0 and 1 per channel.
num_classes is len(train_loader.dataset.classes) when the dataset has that attribute, else 1 + the largest
label in the first few batches of each loader (set `classes` when rare classes may be missing there).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from cascomp.data.imports import ImportFailure, error_reason as _reason, import_object
from cascomp.data.bundle import DataBundle
from cascomp.errors import DataError

_BATCHES_FOR_CLASSES = 8  # enough to see every class of a shuffled loader in practice, cheap to read


def load_factory(name: str, target: str) -> DataBundle:
    """Call the function named by `target` ("pkg.module:function") and build the bundle `name` from it."""
    result = _call(_resolve(target), target)
    if isinstance(result, DataBundle):
        return result
    if not (isinstance(result, (tuple, list)) and len(result) == 2
            and all(isinstance(loader, DataLoader) for loader in result)):
        raise DataError(f"python:{target} returned {_describe(result)}; it must return a DataBundle or a "
                        "pair (train_loader, val_loader) of torch DataLoaders")
    train, val = result
    x = _batches(train, 1, target, "train")[0][0]
    channels = x.shape[1] if x.ndim >= 3 else 1
    return DataBundle(name=name, train=train, val=val, num_classes=_num_classes(train, val, target),
                      input_shape=tuple(x.shape[1:]), train_size=_size(train, target, "train"),
                      val_size=_size(val, target, "val"), mean=(0.0,) * channels, std=(1.0,) * channels)


def _resolve(target: str):
    module_name = target.partition(":")[0]
    try:
        found = import_object(target)
    except ImportFailure as failure:
        if failure.malformed:
            raise DataError(f"dataset spec python:{target} must look like python:pkg.module:function") from None
        if failure.raised:
            raise DataError(f"importing {module_name!r} for python:{target} failed: {failure.reason}") from failure
        raise DataError(f"cannot import python:{target} ({failure.reason}); make {module_name!r} importable "
                        "(run from its directory or add it to PYTHONPATH) and check the function name"
                        ) from failure
    if not callable(found):
        raise DataError(f"python:{target} is a {type(found).__name__}, not a function; name a function that "
                        "returns the data")
    return found


def _call(function, target: str):
    try:
        return function()
    except Exception as error:
        raise DataError(f"python:{target} raised {_reason(error)}; it must build the data when called with "
                        "no arguments") from error


def _batches(loader: DataLoader, count: int, target: str, split: str) -> list[tuple[Tensor, Tensor]]:
    """The first `count` batches, each checked to be an (x, y) pair of tensors with integer labels."""
    try:
        batches = list(itertools.islice(iter(loader), count))
    except Exception as error:
        raise DataError(f"reading the {split} loader of python:{target} raised {_reason(error)}") from error
    if not batches:
        raise DataError(f"the {split} loader of python:{target} yields no batches; give it at least one "
                        "sample")
    for number, batch in enumerate(batches):
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2
                and all(isinstance(part, Tensor) for part in batch)):
            raise DataError(f"the {split} loader of python:{target} yields {_describe(batch)}; each batch "
                            "must be an (x, y) pair of tensors")
        if batch[1].is_floating_point() or batch[1].ndim != 1:
            raise DataError(f"the {split} loader of python:{target} yields labels y of dtype "
                            f"{batch[1].dtype} and shape {tuple(batch[1].shape)}; y must hold one integer "
                            "class per sample")
        if len(batch[1]) and int(batch[1].min()) < 0:
            raise DataError(f"the {split} loader of python:{target} yields the negative label "
                            f"{int(batch[1].min())}; class labels must be 0..K-1")
        if batch[0].is_floating_point() and batch[0].ndim and not bool(torch.isfinite(batch[0]).all()):
            bad = ~torch.isfinite(batch[0])
            sample = int((bad.flatten(1).any(dim=1) if bad.ndim > 1 else bad).nonzero()[0])
            raise DataError(f"the {split} loader of python:{target} yields a non-finite value (NaN or inf) in x "
                            f"of batch {number}, sample {sample}; fix or drop those samples in the factory")
    return batches


def _num_classes(train: DataLoader, val: DataLoader, target: str) -> int:
    labels = {split: [y for _, y in _batches(loader, _BATCHES_FOR_CLASSES, target, split) if len(y)]
              for loader, split in ((train, "train"), (val, "val"))}
    classes = getattr(train.dataset, "classes", None)
    if classes is None or len(classes) == 0:
        return 1 + max((int(y.max()) for ys in labels.values() for y in ys), default=0)
    for split, ys in labels.items():  # a label past `classes` would crash the loss far from here
        largest = max((int(y.max()) for y in ys), default=0)
        if largest >= len(classes):
            raise DataError(f"the {split} loader of python:{target} yields label {largest}, but its training "
                            f"dataset's classes lists {len(classes)} (labels 0..{len(classes) - 1}); make classes "
                            "name every class, or drop it to count the classes from the labels")
    return len(classes)


def _size(loader: DataLoader, target: str, split: str) -> int:
    try:
        return len(loader.dataset)
    except TypeError:  # an IterableDataset without __len__: count what one pass yields
        pass
    try:
        return sum(len(batch[1]) for batch in loader)
    except Exception as error:
        raise DataError(f"counting the samples of the {split} loader of python:{target} raised "
                        f"{_reason(error)}; give its dataset a __len__") from error


def _describe(value) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} ({', '.join(type(v).__name__ for v in value[:3])})"
    return f"a {type(value).__name__}"

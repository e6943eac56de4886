"""CIFAR-10 and CIFAR-100 from the official "python version" pickle batches.

Each batch is a pickled dict with b"data" (uint8, N x 3072: the red, green and blue 32x32 planes in turn) and
the labels (b"labels" for CIFAR-10, b"fine_labels" for CIFAR-100). Pickles can run code when loaded: only
point these specs at files you trust, as with any pickle.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cascomp.data.paths import missing_reason
from cascomp.data.samples import RawData, Samples, as_samples, check_labels
from cascomp.errors import DataError

_PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class _Layout:
    subfolder: str          # the folder the official archive extracts to
    train: tuple[str, ...]  # batch files of the training split
    test: str
    label_key: bytes
    num_classes: int


_LAYOUTS = {
    "cifar10": _Layout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                       b"labels", 10),
    "cifar100": _Layout("cifar-100-python", ("train",), "test", b"fine_labels", 100),
}


def load_cifar(directory: str, scheme: str) -> RawData:
    """The official training batches and the test batch (used as validation) in `directory`."""
    layout = _LAYOUTS[scheme]
    folder = _find_folder(Path(directory).expanduser(), layout, scheme)
    train = _concatenate([_read_batch(folder / name, layout, scheme) for name in layout.train])
    test = _read_batch(folder / layout.test, layout, scheme)
    return RawData(train=train, val=test, num_classes=layout.num_classes)


def _find_folder(directory: Path, layout: _Layout, scheme: str) -> Path:
    problem = missing_reason(directory, directory=True)
    if problem:
        raise DataError(f"{scheme}: {str(directory)!r} {problem}; pass the folder holding "
                        f"{layout.test} (or the {layout.subfolder} folder the archive extracts to), "
                        f"e.g. {scheme}:/path/to/{layout.subfolder}")
    for folder in (directory, directory / layout.subfolder):
        if (folder / layout.test).is_file():
            return folder
    raise DataError(f"{scheme}: no {layout.test} in {str(directory)!r} nor in its {layout.subfolder} "
                    f"subfolder; extract the official python-version archive there "
                    f"({', '.join(layout.train)}, "
                    f"{layout.test})")


def _read_batch(path: Path, layout: _Layout, scheme: str) -> Samples:
    if not path.is_file():
        raise DataError(f"{scheme}: {str(path)!r} is missing; the folder needs {', '.join(layout.train)} "
                        f"and {layout.test}")
    batch = _unpickle(path, scheme)
    if not isinstance(batch, dict) or b"data" not in batch or layout.label_key not in batch:
        found = ", ".join(repr(key) for key in list(batch)[:5]) if isinstance(batch, dict) else "no dict"
        raise DataError(f"{scheme}: {str(path)!r} is not a {scheme} batch (found {found}, expected "
                        f"b'data' and {layout.label_key!r}); check the spec's scheme matches the files")
    data = np.asarray(batch[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        raise DataError(f"{scheme}: {str(path)!r} has data of shape {data.shape} and dtype {data.dtype}; "
                        f"expected uint8 rows of {_PIXELS} values (3x32x32)")
    samples = as_samples(data.reshape(-1, 3, 32, 32), np.asarray(batch[layout.label_key]), str(path))
    check_labels(samples, layout.num_classes, str(path))
    return samples


def _unpickle(path: Path, scheme: str):
    try:
        with path.open("rb") as file:
            return pickle.load(file, encoding="bytes")
    except Exception as error:  # a damaged pickle raises almost anything: UnpicklingError, EOFError, ...
        raise DataError(f"{scheme}: cannot unpickle {str(path)!r} ({type(error).__name__}: {error}); "
                        "the file is damaged or not a CIFAR python batch, download it again") from error


def _concatenate(parts: list[Samples]) -> Samples:
    if len(parts) == 1:
        return parts[0]
    return Samples(x=torch.cat([part.x for part in parts]), y=torch.cat([part.y for part in parts]))

"""Samples saved as tensors: a .pt dict (read with weights_only=True, so no code runs) or a .npz archive.

Keys: "x" (uint8 pixels or float values, one row per sample) and "y" (integer class labels), and optionally
"x_val" and "y_val" as the validation split; without them the data is split randomly.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from cascomp.data.paths import missing_reason
from cascomp.data.samples import RawData, as_samples
from cascomp.errors import DataError

_NPY_MAGIC = b"\x93NUMPY"
_HOW = ('save a dict with "x" (N, ...) and "y" (N,) class labels, and optionally "x_val"/"y_val", '
        'e.g. torch.save({"x": x, "y": y}, "data.pt") or numpy.savez("data.npz", x=x, y=y)')


def load_tensor_file(file: str) -> RawData:
    path = Path(file).expanduser()
    problem = missing_reason(path, directory=False)
    if problem:
        raise DataError(f"tensors: {str(path)!r} {problem}; {_HOW}")
    content = _read(path)
    missing = [key for key in ("x", "y") if key not in content]
    if missing:
        present = ", ".join(repr(key) for key in content) or "no keys"
        raise DataError(f"tensors: {str(path)!r} lacks the keys {missing} (it has {present}); {_HOW}")
    if ("x_val" in content) != ("y_val" in content):
        raise DataError(f"tensors: {str(path)!r} has only one of x_val and y_val; give both or neither")
    train = as_samples(content["x"], content["y"], f"{path} (x, y)")
    val = None
    if "x_val" in content:
        val = as_samples(content["x_val"], content["y_val"], f"{path} (x_val, y_val)")
    if val is not None and val.x.shape[1:] != train.x.shape[1:]:
        raise DataError(f"tensors: {str(path)!r} has x samples of shape {tuple(train.x.shape[1:])} but x_val "
                        f"samples of shape {tuple(val.x.shape[1:])}; both splits need the same sample shape")
    num_classes = 1 + max(int(train.y.max()), int(val.y.max()) if val is not None else 0)
    return RawData(train=train, val=val, num_classes=num_classes)


def _read(path: Path) -> Mapping:
    if path.suffix == ".pt":
        content = _load_pt(path)
    elif path.suffix == ".npz":
        content = _load_npz(path)
    else:
        raise DataError(f"tensors: {str(path)!r} is neither .pt nor .npz; {_HOW}")
    if not isinstance(content, Mapping):
        raise DataError(f"tensors: {str(path)!r} holds a {type(content).__name__}, not a dict; {_HOW}")
    return content


def _load_pt(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # damaged zip, foreign pickle, objects weights_only refuses: all user data
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"tensors: cannot load {str(path)!r} with torch.load(weights_only=True) ({reason}); "
                        f"{_HOW}") from error


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """The named arrays of an archive numpy.savez wrote; never unpickles (allow_pickle=False throughout)."""
    with path.open("rb") as file:
        start = file.read(len(_NPY_MAGIC))
    if start == _NPY_MAGIC:  # a lone .npy array renamed to .npz
        raise DataError(f"tensors: {str(path)!r} holds a single array, not named arrays; {_HOW}")
    if not zipfile.is_zipfile(path):
        raise DataError(f"tensors: {str(path)!r} is not an .npz archive numpy.savez wrote (it is not a zip file: "
                        f"damaged, truncated, or another format); write it again: {_HOW}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: _array(archive, key, path) for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"tensors: {str(path)!r} is a damaged .npz archive ({reason}); write it again: "
                        f"{_HOW}") from error


def _array(archive, key: str, path: Path) -> np.ndarray:
    if _holds_objects(archive, key):  # loading such an array means unpickling, which can run code
        raise DataError(f"tensors: array {key!r} in {str(path)!r} holds Python objects (dtype=object), which "
                        "load only by unpickling, and unpickling can run code: refused; save numeric arrays, "
                        'e.g. numpy.savez("data.npz", x=x.astype("float32"), y=y.astype("int64"))')
    return archive[key]


def _holds_objects(archive, key: str) -> bool:
    """Whether the array's .npy header declares a dtype with Python objects (read without loading it)."""
    member = f"{key}.npy" if f"{key}.npy" in archive.zip.namelist() else key
    with archive.zip.open(member) as file:
        version = np.lib.format.read_magic(file)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read_header:
            return False  # a version numpy itself will refuse with its own error
        return bool(read_header[version](file)[2].hasobject)

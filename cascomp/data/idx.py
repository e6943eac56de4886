"""MNIST and Fashion-MNIST from their IDX files, gzipped or plain, parsed with numpy.

IDX layout: two zero bytes, a dtype code (0x08 = unsigned byte, the only one these datasets use), the number
of dimensions, then one big-endian int32 size per dimension, then the values in row-major order.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from cascomp.data.paths import missing_reason
from cascomp.data.samples import RawData, Samples, as_samples, check_labels
from cascomp.errors import DataError

_UBYTE = 0x08
_NUM_CLASSES = 10
_FILES = {  # split -> (images, labels)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Besides DIR itself: the folders torchvision's downloads leave the same files in.
_SUBFOLDERS = ("raw", "MNIST/raw", "FashionMNIST/raw")


def load_idx_dataset(directory: str, scheme: str) -> RawData:
    """The official train and test (used as validation) splits found in `directory`."""
    folder = _find_folder(Path(directory).expanduser(), scheme)
    train, test = (_read_split(folder, split, scheme) for split in ("train", "test"))
    return RawData(train=train, val=test, num_classes=_NUM_CLASSES)


def read_idx(path: Path) -> np.ndarray:
    """The array an IDX file holds; DataError when the header, the dtype or the length is wrong."""
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{str(path)!r} is not an IDX file (its magic number does not start with two zero "
                        "bytes); point the spec at the original MNIST-format files")
    if data[2] != _UBYTE:
        raise DataError(f"{str(path)!r} stores IDX dtype code 0x{data[2]:02x}; only 0x08 (unsigned byte) "
                        "is supported, as in the MNIST and Fashion-MNIST files")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{str(path)!r}: IDX header for {ndim} dimensions is cut short; the file is damaged, "
                        "download it again")
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise DataError(f"{str(path)!r}: the header promises shape {shape} ({expected} bytes) but "
                        f"{len(data) - header} bytes follow; the file is truncated or damaged, download it "
                        "again")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _read_split(folder: Path, split: str, scheme: str) -> Samples:
    image_name, label_name = _FILES[split]
    image_path, label_path = _find_file(folder, image_name, scheme), _find_file(folder, label_name, scheme)
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{scheme}: {str(image_path)!r} has shape {images.shape} and {str(label_path)!r} "
                        f"{labels.shape}; expected (N, H, W) images and (N,) labels")
    if len(images) != len(labels):
        raise DataError(f"{scheme}: {str(image_path)!r} holds {len(images)} images but {str(label_path)!r} "
                        f"{len(labels)} labels; the two files must come from the same {split} split")
    samples = as_samples(images[:, None], labels, str(image_path))
    check_labels(samples, _NUM_CLASSES, str(label_path))
    return samples


def _find_folder(directory: Path, scheme: str) -> Path:
    problem = missing_reason(directory, directory=True)
    if problem:
        raise DataError(f"{scheme}: {str(directory)!r} {problem}; pass the folder holding "
                        f"{_FILES['train'][0]}(.gz) and the other IDX files, e.g. {scheme}:/path/to/{scheme}")
    for folder in (directory, *(directory / sub for sub in _SUBFOLDERS)):
        if any((folder / name).is_file() or (folder / f"{name}.gz").is_file() for name in _FILES["train"]):
            return folder
    return directory  # _find_file names the first missing file there


def _find_file(folder: Path, name: str, scheme: str) -> Path:
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    raise DataError(f"{scheme}: neither {name} nor {name}.gz is in {str(folder)!r}; the folder needs the "
                    "four IDX files (train-images, train-labels, t10k-images, t10k-labels)")


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as file:
                return file.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read {str(path)!r}: {error}; the file is damaged or not gzip, "
                        "download it again") from error

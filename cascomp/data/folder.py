"""Image folders: one subfolder per class (sorted names give the class indices), read with Pillow.

Layouts, in the order they are tried:
1. DIR/train/<class>/... and DIR/val/<class>/... (or DIR/test/): that split is used as it is;
2. DIR/train/<class>/... alone: DIR/train is split randomly;
3. DIR/<class>/...: DIR is split randomly.
Every image is loaded into memory, converted to RGB (or kept grayscale when all of them are "L") and resized
to image_size x image_size, by default to the size of the first training image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cascomp.data.paths import missing_reason
from cascomp.data.samples import RawData, Samples, as_samples
from cascomp.errors import DataError

_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
_VAL_NAMES = ("val", "test")


def load_image_folder(directory: str, image_size: int | None) -> RawData:
    root = Path(directory).expanduser()
    problem = missing_reason(root, directory=True)
    if problem:
        raise DataError(f"imagefolder: {str(root)!r} {problem}; pass a folder with one "
                        "subfolder of images per class, e.g. imagefolder:/data/pets")
    train_root, val_root = _split_roots(root)
    classes = _class_names(train_root)
    train_files = _labelled_files(train_root, classes, required=True)
    val_files = _labelled_files(val_root, classes, required=False) if val_root else []
    if val_root and not val_files:
        raise DataError(f"imagefolder: {str(val_root)!r} holds no images in the class folders of "
                        f"{str(train_root)!r}; add validation images or remove it to split randomly")
    all_files = train_files + val_files
    mode = "L" if all(_mode(path) == "L" for path, _ in all_files) else "RGB"
    size = (image_size, image_size) if image_size else _size(train_files[0][0])
    train = _load(train_files, mode, size)
    val = _load(val_files, mode, size) if val_files else None
    return RawData(train=train, val=val, num_classes=len(classes))


def _split_roots(root: Path) -> tuple[Path, Path | None]:
    if not (root / "train").is_dir():
        return root, None
    for name in _VAL_NAMES:
        if (root / name).is_dir():
            return root / "train", root / name
    return root / "train", None


def _class_names(root: Path) -> list[str]:
    # hidden folders (.ipynb_checkpoints, .git) are tool clutter, not classes
    names = sorted(entry.name for entry in root.iterdir()
                   if entry.is_dir() and not entry.name.startswith("."))
    if not names:
        raise DataError(f"imagefolder: {str(root)!r} has no class subfolders; put each class's images in "
                        "its own folder (e.g. cats/, dogs/)")
    return names


def _labelled_files(root: Path, classes: list[str], *, required: bool) -> list[tuple[Path, int]]:
    files = []
    for label, name in enumerate(classes):
        folder = root / name
        images = _images_in(folder)
        if required and not images:
            raise DataError(f"imagefolder: class folder {str(folder)!r} holds no images "
                            f"({', '.join(sorted(_EXTENSIONS))}); add some or remove the folder")
        files.extend((path, label) for path in images)
    unknown = [name for name in _class_names(root) if name not in classes]
    if unknown:
        raise DataError(f"imagefolder: {str(root)!r} has class folders {unknown} that the training folder "
                        "lacks; give train/ and val/ the same class subfolders")
    return files


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():  # a validation folder may lack classes the training folder has
        return []
    return sorted(path for path in folder.rglob("*") if path.suffix.lower() in _EXTENSIONS and path.is_file())


def _mode(path: Path) -> str:
    with _open(path) as image:  # opening reads the header only: cheap even for many files
        return image.mode


def _size(path: Path) -> tuple[int, int]:
    with _open(path) as image:
        return image.size


def _load(files: list[tuple[Path, int]], mode: str, size: tuple[int, int]) -> Samples:
    arrays = []
    for path, _ in files:
        with _open(path) as image:
            try:
                converted = image.convert(mode)
                if converted.size != size:
                    converted = converted.resize(size, Image.Resampling.BILINEAR)
                arrays.append(np.asarray(converted, dtype=np.uint8))
            except OSError as error:  # a truncated file only fails when its pixels are decoded
                raise DataError(f"imagefolder: cannot decode {str(path)!r} ({error}); fix or remove the "
                                "file") from error
    x = np.stack(arrays)
    x = x[:, None] if mode == "L" else x.transpose(0, 3, 1, 2)
    return as_samples(x, np.array([label for _, label in files], dtype=np.int64), "imagefolder")


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except OSError as error:  # PIL.UnidentifiedImageError is an OSError
        raise DataError(f"imagefolder: cannot read {str(path)!r} as an image ({error}); fix or remove the "
                        "file") from error

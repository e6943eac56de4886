"""cascomp.data: each spec scheme reads tiny files in the real formats; bad input gives one DataError."""

from __future__ import annotations

import gzip
import pickle
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cascomp.data import SPEC_HELP, DataBundle, load_data
from cascomp.data.idx import read_idx
from cascomp.errors import DataError

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")


def write_idx(path: Path, array: np.ndarray, *, magic: bytes = b"\x00\x00\x08") -> None:
    header = magic + bytes([array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def write_mnist(folder: Path, *, gz: bool, train: int = 40, test: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = (rng.integers(0, 256, (train, 28, 28)), np.arange(train) % 10,
              rng.integers(0, 256, (test, 28, 28)), np.arange(test) % 10)
    for name, array in zip(IDX_NAMES, arrays):
        write_idx(folder / (name + (".gz" if gz else "")), array)
    return folder


def write_pickle(path: Path, content: dict) -> None:
    with path.open("wb") as file:
        pickle.dump(content, file)


def write_cifar10(folder: Path, per_batch: int = 3) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write_pickle(folder / name, {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                                     b"labels": list(rng.integers(0, 10, per_batch))})
    return folder


def write_cifar100(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name, count in (("train", 8), ("test", 4)):
        write_pickle(folder / name, {b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                                     b"fine_labels": list(rng.integers(0, 100, count)),
                                     b"coarse_labels": list(rng.integers(0, 20, count))})
    return folder


def write_images(folder: Path, count: int, mode: str = "RGB") -> None:
    rng = np.random.default_rng(len(str(folder)))
    for cls in ("cat", "dog"):
        (folder / cls).mkdir(parents=True)
        for i in range(count):
            shape = (12, 10) if mode == "L" else (12, 10, 3)  # 10 wide, 12 high
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / cls / f"{i}.png")


def shape_classes_sizes(bundle: DataBundle) -> tuple:
    return bundle.input_shape, bundle.num_classes, bundle.train_size, bundle.val_size


def test_spec_help_lists_every_scheme():
    for scheme in ("mnist:", "fashion-mnist:", "cifar10:", "cifar100:", "imagefolder:", "tensors:", "digits:",
                   "python:"):
        assert scheme in SPEC_HELP
    assert "\n" not in SPEC_HELP


# IDX: MNIST and Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
def test_idx_loads_normalised_batches(tmp_path, gz):
    bundle = load_data(f"mnist:{write_mnist(tmp_path / 'm', gz=gz)}", batch_size=16)
    assert isinstance(bundle, DataBundle)
    assert shape_classes_sizes(bundle) == ((1, 28, 28), 10, 40, 20)
    x, y = next(iter(bundle.train))
    assert x.dtype == torch.float32 and x.shape == (16, 1, 28, 28) and y.dtype == torch.int64
    train_x = bundle.train.dataset.tensors[0]
    assert abs(float(train_x.mean())) < 1e-4 and abs(float(train_x.std(correction=0)) - 1) < 1e-4
    assert sorted(bundle.val.dataset.tensors[1].tolist()) == sorted(list(range(10)) * 2)
    assert len(bundle.mean) == len(bundle.std) == 1 and 0.4 < bundle.mean[0] < 0.6  # uint8 scaled to [0, 1]
    assert isinstance(bundle.train.generator, torch.Generator)


def test_idx_limits_are_seeded_subsets(tmp_path):
    spec = f"fashion-mnist:{write_mnist(tmp_path / 'f', gz=True)}"

    def train_and_val_pixels(seed):
        bundle = load_data(spec, limit_train=7, limit_val=5, seed=seed)
        assert (bundle.train_size, bundle.val_size) == (7, 5)
        return bundle.train.dataset.tensors[0], bundle.val.dataset.tensors[0]

    first, again, other = (train_and_val_pixels(seed) for seed in (0, 0, 1))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


def test_idx_train_order_follows_the_seed(tmp_path):
    spec = f"mnist:{write_mnist(tmp_path / 'm', gz=False)}"
    order = [torch.cat([y for _, y in load_data(spec, batch_size=8, seed=s).train]) for s in (3, 3, 4)]
    assert torch.equal(order[0], order[1]) and not torch.equal(order[0], order[2])


def test_idx_wrong_magic_is_refused(tmp_path):
    folder = write_mnist(tmp_path / "m", gz=True)
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((40, 28, 28)), magic=b"\x01\x00\x08")
    with pytest.raises(DataError, match="not an IDX file"):
        load_data(f"mnist:{folder}")


def test_idx_label_count_mismatch_is_refused(tmp_path):
    folder = write_mnist(tmp_path / "m", gz=False)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(19))
    with pytest.raises(DataError, match="20 images but .* 19 labels"):
        load_data(f"mnist:{folder}")


def test_idx_truncated_and_missing_files_are_refused(tmp_path):
    path = tmp_path / "cut-idx3-ubyte"
    write_idx(path, np.zeros((3, 4, 4)))
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)
    folder = write_mnist(tmp_path / "m", gz=True)
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        load_data(f"mnist:{folder}")


def test_real_fashion_mnist():
    if not FASHION_MNIST.is_dir():
        pytest.skip(f"{FASHION_MNIST} is missing (Debian package fashion-mnist not installed)")
    bundle = load_data(f"fashion-mnist:{FASHION_MNIST}", limit_train=512, limit_val=256, batch_size=64)
    assert shape_classes_sizes(bundle) == ((1, 28, 28), 10, 512, 256)
    x, y = next(iter(bundle.val))
    assert x.shape == (64, 1, 28, 28) and y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) <= 9
    assert len(torch.cat([y for _, y in bundle.train]).unique()) == 10


# CIFAR


@pytest.mark.parametrize("subfolder", [False, True], ids=["direct", "archive-subfolder"])
def test_cifar10(tmp_path, subfolder):
    folder = write_cifar10(tmp_path / "c" / "cifar-10-batches-py")
    bundle = load_data(f"cifar10:{folder.parent if subfolder else folder}", batch_size=4)
    assert shape_classes_sizes(bundle) == ((3, 32, 32), 10, 15, 3)
    assert len(bundle.mean) == 3 and next(iter(bundle.train))[0].shape == (4, 3, 32, 32)


@pytest.mark.parametrize("subfolder", [False, True], ids=["direct", "archive-subfolder"])
def test_cifar100(tmp_path, subfolder):
    folder = write_cifar100(tmp_path / "c" / "cifar-100-python")
    bundle = load_data(f"cifar100:{folder.parent if subfolder else folder}")
    assert shape_classes_sizes(bundle) == ((3, 32, 32), 100, 8, 4)


def test_cifar_bad_files_are_refused(tmp_path):
    folder = write_cifar10(tmp_path / "c")
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="cannot unpickle .*data_batch_3"):
        load_data(f"cifar10:{folder}")
    folder = write_cifar100(tmp_path / "d")
    with pytest.raises(DataError, match="no test_batch in"):
        load_data(f"cifar10:{folder}")  # a CIFAR-100 folder under the CIFAR-10 scheme


# image folders


def test_imagefolder_random_split_and_first_image_size(tmp_path):
    write_images(tmp_path / "pets", 5)
    bundle = load_data(f"imagefolder:{tmp_path / 'pets'}", val_fraction=0.2)
    assert shape_classes_sizes(bundle) == ((3, 12, 10), 2, 8, 2)
    again = load_data(f"imagefolder:{tmp_path / 'pets'}", val_fraction=0.2)
    assert torch.equal(bundle.val.dataset.tensors[0], again.val.dataset.tensors[0])


def test_imagefolder_train_val_layout_grayscale_resized(tmp_path):
    write_images(tmp_path / "pets" / "train", 3, mode="L")
    write_images(tmp_path / "pets" / "val", 2, mode="L")
    bundle = load_data(f"imagefolder:{tmp_path / 'pets'}", image_size=8)
    assert shape_classes_sizes(bundle) == ((1, 8, 8), 2, 6, 4)
    assert bundle.val.dataset.tensors[1].tolist() == [0, 0, 1, 1]  # sorted class names: cat=0, dog=1


def test_imagefolder_bad_input_is_refused(tmp_path):
    write_images(tmp_path / "pets", 2)
    (tmp_path / "pets" / "dog" / "broken.png").write_bytes(b"no image")
    with pytest.raises(DataError, match="broken.png"):
        load_data(f"imagefolder:{tmp_path / 'pets'}")
    write_images(tmp_path / "split" / "train", 1)
    write_images(tmp_path / "split" / "val" / "birds", 1)  # val/birds/cat, val/birds/dog: a class train lacks
    with pytest.raises(DataError, match=r"class folders \['birds'\] that the training folder lacks"):
        load_data(f"imagefolder:{tmp_path / 'split'}")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        load_data(f"imagefolder:{tmp_path / 'empty'}")


# tensor files


def test_tensors_pt_with_validation_split(tmp_path):
    path = tmp_path / "data.pt"
    torch.save({"x": torch.rand(10, 3, 4, 4), "y": torch.arange(10) % 3,
                "x_val": torch.rand(4, 3, 4, 4), "y_val": torch.tensor([0, 1, 2, 4])}, path)
    bundle = load_data(f"tensors:{path}")
    assert shape_classes_sizes(bundle) == ((3, 4, 4), 5, 10, 4)


def test_tensors_npz_uint8_random_split(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.full((20, 6), 255, dtype=np.uint8), y=np.arange(20) % 2)
    bundle = load_data(f"tensors:{path}", val_fraction=0.25, seed=5)
    assert shape_classes_sizes(bundle) == ((6,), 2, 15, 5)
    assert bundle.mean == (1.0,) and bundle.std == (1.0,)  # /255, and a constant channel keeps std 1


def test_tensors_bad_files_are_refused(tmp_path):
    torch.save({"x": torch.rand(4, 2)}, tmp_path / "no_y.pt")
    with pytest.raises(DataError, match=r"lacks the keys \['y'\]"):
        load_data(f"tensors:{tmp_path / 'no_y.pt'}")
    np.savez(tmp_path / "float_y.npz", x=np.zeros((4, 2)), y=np.zeros(4))
    with pytest.raises(DataError, match="integers"):
        load_data(f"tensors:{tmp_path / 'float_y.npz'}")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(DataError, match="cannot load .*junk.pt"):
        load_data(f"tensors:{tmp_path / 'junk.pt'}")
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(DataError, match="neither .pt nor .npz"):
        load_data(f"tensors:{tmp_path / 'data.csv'}")


# python factories

FACTORY_MODULE = '''
import torch
from torch.utils.data import DataLoader, TensorDataset

def pair():
    train = TensorDataset(torch.rand(12, 2, 5, 5), torch.arange(12) % 4)
    val = TensorDataset(torch.rand(6, 2, 5, 5), torch.arange(6) % 4)
    return DataLoader(train, batch_size=5, shuffle=True), DataLoader(val, batch_size=5)

def not_loaders():
    return 42

def broken():
    raise RuntimeError("no data today")
'''


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    (tmp_path / "user_data_factory.py").write_text(FACTORY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "user_data_factory"
    sys.modules.pop("user_data_factory", None)


def test_python_factory_pair(factory_module):
    bundle = load_data(f"python:{factory_module}:pair")
    assert shape_classes_sizes(bundle) == ((2, 5, 5), 4, 12, 6)
    assert bundle.mean == (0.0, 0.0) and bundle.std == (1.0, 1.0)


@pytest.mark.parametrize("target, message", [
    ("{module}:missing", "cannot import"),
    ("no_such_module_here:pair", "cannot import"),
    ("{module}:not_loaders", "returned a int"),
    ("{module}:broken", "raised RuntimeError: no data today"),
    ("{module}", "must look like python:pkg.module:function"),
])
def test_python_factory_errors(factory_module, target, message):
    with pytest.raises(DataError, match=message):
        load_data("python:" + target.format(module=factory_module))


def test_python_factory_refuses_limits(factory_module):
    with pytest.raises(DataError, match="--limit-train"):
        load_data(f"python:{factory_module}:pair", limit_train=3)


# digits and spec errors


def test_digits():
    pytest.importorskip("sklearn", reason="scikit-learn is not installed")
    bundle = load_data("digits:", val_fraction=0.2, limit_train=100)
    assert (bundle.input_shape, bundle.num_classes, bundle.train_size) == ((1, 8, 8), 10, 100)
    assert bundle.val_size == round(1797 * 0.2)  # the rest, 1438, is cut to limit_train


@pytest.mark.parametrize("spec, message", [
    ("", "empty dataset spec"),
    ("   ", "empty dataset spec"),
    ("mnits:/data", "unknown dataset scheme 'mnits'.*did you mean mnist"),
    ("/data/images", "unknown dataset scheme '/data/images'.*dataset specs:"),
    ("mnist:", "lacks its argument; write mnist:DIR"),
    ("digits:/x", "takes no argument"),
])
def test_bad_specs(spec, message):
    with pytest.raises(DataError, match=message):
        load_data(spec)


@pytest.mark.parametrize("scheme", ["mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder",
                                    "tensors"])
def test_missing_path_names_it(tmp_path, scheme):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=f"{scheme}: .*{re.escape(repr(str(missing)))} does not exist"):
        load_data(f"{scheme}:{missing}")


@pytest.mark.parametrize("option, message", [
    ({"batch_size": 0}, r"batch_size \(--batch-size\) must be an integer >= 1, got 0"),
    ({"val_fraction": 1.0}, "^val_fraction must be between 0 and 1"),
    ({"limit_train": 0}, r"limit_train \(--limit-train\) must be"),
    ({"limit_val": -2}, r"limit_val \(--limit-val\) must be"),
    ({"image_size": 0}, "^image_size must be"),
])
def test_bad_arguments_name_the_argument_and_the_flag(option, message):
    """Each message names the argument, and the flag only where the command line has one."""
    with pytest.raises(DataError, match=message):
        load_data("digits:", **option)


def test_a_spec_names_its_path_and_can_be_made_absolute(tmp_path, monkeypatch):
    from cascomp.data import absolute_spec, spec_path
    monkeypatch.chdir(tmp_path)
    assert spec_path("tensors:data.npz") == "data.npz" and spec_path("digits:") is None
    assert spec_path("python:pkg.module:function") is None and spec_path("nosuch:x") is None
    assert absolute_spec("fashion-mnist:sub/dir") == f"fashion-mnist:{tmp_path}/sub/dir"
    assert absolute_spec("python:pkg.module:function") == "python:pkg.module:function"

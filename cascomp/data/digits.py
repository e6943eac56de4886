"""scikit-learn's bundled 8x8 handwritten digits: 1797 images, no download, small enough for quick runs."""

from __future__ import annotations

import numpy as np

from cascomp.data.samples import RawData, as_samples
from cascomp.errors import DataError

_MAX_VALUE = 16.0  # pixel values are counts 0..16 of a 4x4 block of the original 32x32 bitmap


def load_digits_dataset() -> RawData:
    """All 1797 digits as float images (1, 8, 8) in [0, 1]; with no official split, load_data splits them."""
    try:
        from sklearn.datasets import load_digits  # optional dependency: imported only for this spec
    except ImportError as error:
        raise DataError("the digits: dataset needs scikit-learn, which is not installed; "
                        "run pip install scikit-learn or choose another dataset spec") from error
    digits = load_digits()
    x = (np.asarray(digits.data, dtype=np.float32) / _MAX_VALUE).reshape(-1, 1, 8, 8)
    return RawData(train=as_samples(x, digits.target, "sklearn digits"), val=None, num_classes=10)

"""Layout checks and SHA-256 digests for the four arrays of a data set."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np

from .catalog import DATASETS
from .errors import DataError

KEYS: tuple[str, ...] = ("x_train", "y_train", "x_test", "y_test")
IMAGE_SHAPE: tuple[int, int] = DATASETS["mnist"].image_shape[1:]  # (H, W) of the MNIST family's grey images


def sha256_array(array: np.ndarray) -> str:
    """SHA-256 hex digest of the bytes of ``array`` in C order."""
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


def check_split(x: np.ndarray, y: np.ndarray, x_name: str, y_name: str) -> None:
    """Check that x is (N, 28, 28) uint8 and y is (N,) uint8 with the same N.

    ``x_name`` and ``y_name`` say where the arrays came from, for messages.
    """
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{x_name}: expected images of shape (N, 28, 28) uint8, "
                        f"got {x.shape} {x.dtype}")
    if y.dtype != np.uint8 or y.ndim != 1:
        raise DataError(f"{y_name}: expected labels of shape (N,) uint8, got {y.shape} {y.dtype}")
    if len(x) != len(y):
        raise DataError(f"{x_name} and {y_name}: {len(x)} images but {len(y)} labels")


def check_layout(arrays: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Check the four arrays' keys, dtypes and shapes; return them C-contiguous."""
    missing = [key for key in KEYS if key not in arrays]
    if missing:
        raise DataError(f"{source}: missing arrays {', '.join(missing)}")
    out = {key: np.ascontiguousarray(arrays[key]) for key in KEYS}
    for split in ("train", "test"):
        check_split(out[f"x_{split}"], out[f"y_{split}"],
                    f"{source} x_{split}", f"{source} y_{split}")
    return out


def verify(
    arrays: Mapping[str, np.ndarray], expected: Mapping[str, str], source: str
) -> dict[str, str]:
    """Check layout and SHA-256 digests of the four arrays; return the digests.

    Raises :class:`DataError` naming ``source`` and the first mismatching array.
    """
    arrays = check_layout(arrays, source)
    digests = {key: sha256_array(arrays[key]) for key in KEYS}
    for key in KEYS:
        if digests[key] != expected[key]:
            raise DataError(f"{source}: SHA-256 mismatch for {key} {arrays[key].shape}: "
                            f"expected {expected[key]}, got {digests[key]}")
    return digests

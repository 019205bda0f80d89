"""Reading and atomically writing the four arrays of a data set as one .npz."""

from __future__ import annotations

import os
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .arrays import KEYS, verify
from .errors import DataError


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read x_train (N, 28, 28), y_train (N,), x_test (M, 28, 28), y_test (M,).

    Loads with ``allow_pickle=False``; any fault raises :class:`DataError`
    naming the file. Shapes and dtypes are checked later by ``verify``.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in KEYS if key not in npz.files]
            if missing:
                raise DataError(f"{path}: npz lacks arrays {', '.join(missing)}")
            return {key: np.ascontiguousarray(npz[key]) for key in KEYS}
    except DataError:
        raise
    except (OSError, EOFError, ValueError, KeyError, MemoryError,
            zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: unreadable npz: {exc}") from exc


def write_npz_atomic(
    path: str | os.PathLike, arrays: Mapping[str, np.ndarray], expected: Mapping[str, str]
) -> None:
    """Write the four arrays to ``path`` so that it is never seen half-written.

    Writes a temp file in the same folder, fsyncs it, re-reads it and checks
    the digests against ``expected``, then renames it into place. On any
    failure the temp file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz.tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez(out, **{key: arrays[key] for key in KEYS})
            out.flush()
            os.fsync(out.fileno())
        verify(read_npz(tmp), expected, f"cache temp file {tmp}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

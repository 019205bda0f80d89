"""Reading and atomically writing the four arrays of a data set as one .npz."""

from __future__ import annotations

import ast
import math
import os
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import IO

import numpy as np

from ..storage import atomic_path
from .arrays import KEYS, verify
from .errors import DataError

NPY_MAGIC = b"\x93NUMPY"
MAX_HEADER_BYTES = 10_000  # numpy's own bound on a header it will parse
MAX_NDIM = 32  # the fewest dimensions any numpy supports
_CHUNK = 1 << 20


def read_npz(path: str | os.PathLike, keys: Sequence[str] = KEYS) -> dict[str, np.ndarray]:
    """Read the arrays named ``keys``: by default x_train (N, 28, 28), y_train (N,),
    x_test (M, 28, 28), y_test (M,).

    Nothing is unpickled: each member must be a plain .npy array (no object, structured or
    sub-array dtype). The data are read in chunks as they arrive, so a header that claims
    more than the member holds fails when the member runs out, without allocating what it
    claims. Any fault raises :class:`DataError` naming the file. Shapes and dtypes are
    checked later by ``verify``.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            members = {key: next((n for n in (f"{key}.npy", key) if n in names), None) for key in keys}
            missing = [key for key, name in members.items() if name is None]
            if missing:
                raise DataError(f"{path}: npz lacks arrays {', '.join(missing)}")
            return {key: _read_member(zf, name, f"{path}: unreadable npz: {name}")
                    for key, name in members.items()}
    except DataError:
        raise
    except (OSError, EOFError, ValueError, NotImplementedError, zipfile.BadZipFile, zlib.error) as exc:
        # NotImplementedError: zipfile's answer to features it lacks (patched data, strong encryption)
        raise DataError(f"{path}: unreadable npz: {exc}") from exc


def check_member(info: zipfile.ZipInfo, where: str) -> None:
    """Refuse a zip member that zipfile could only open with a password or an unusual codec."""
    if info.flag_bits & 0x41:  # bit 0: encrypted, bit 6: strongly encrypted
        raise DataError(f"{where}: member is encrypted")
    if info.flag_bits & 0x20:
        raise DataError(f"{where}: member is compressed patched data")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise DataError(f"{where}: compression method {info.compress_type}; only stored and deflated "
                        f"members are read")


def _read_member(zf: zipfile.ZipFile, name: str, where: str) -> np.ndarray:
    """One .npy member as an array, with its data read in chunks (see :func:`read_npz`)."""
    info = zf.getinfo(name)
    check_member(info, where)
    with zf.open(info) as fh:
        shape, fortran, dtype = read_npy_header(fh, where)
        size = math.prod(shape) * dtype.itemsize
        data = bytearray()
        while len(data) < size:
            chunk = fh.read(min(_CHUNK, size - len(data)))
            if not chunk:
                raise DataError(f"{where}: truncated: header claims {shape} {dtype} ({size} bytes), "
                                f"the member holds {len(data)}")
            data += chunk
        if fh.read(1):
            raise DataError(f"{where}: data after the {size} bytes of {shape} {dtype}")
    return np.frombuffer(data, dtype, math.prod(shape)).reshape(shape, order="F" if fortran else "C")


def read_npy_header(fh: IO[bytes], where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of an .npy stream, versions 1.0 and 2.0, plain dtypes only."""
    magic = fh.read(8)
    if len(magic) < 8 or magic[:6] != NPY_MAGIC:
        raise DataError(f"{where}: not an .npy array (bad magic {magic[:8]!r})")
    if (magic[6], magic[7]) not in ((1, 0), (2, 0)):
        raise DataError(f"{where}: unsupported .npy format version {magic[6]}.{magic[7]}")
    width = 2 if magic[6] == 1 else 4
    raw_length = fh.read(width)
    length = int.from_bytes(raw_length, "little")
    if len(raw_length) < width:
        raise DataError(f"{where}: truncated .npy header")
    if length > MAX_HEADER_BYTES:
        raise DataError(f"{where}: .npy header of {length} bytes, more than {MAX_HEADER_BYTES}")
    text = fh.read(length)
    if len(text) < length:
        raise DataError(f"{where}: truncated .npy header")
    try:
        header = ast.literal_eval(text.decode("latin1"))
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as exc:
        raise DataError(f"{where}: malformed .npy header: {type(exc).__name__}") from exc
    if type(header) is not dict or set(header) != {"descr", "fortran_order", "shape"}:
        raise DataError(f"{where}: .npy header is not a dict of descr, fortran_order and shape")
    shape, fortran, descr = header["shape"], header["fortran_order"], header["descr"]
    if type(shape) is not tuple or len(shape) > MAX_NDIM or any(type(n) is not int or n < 0 for n in shape):
        raise DataError(f"{where}: bad shape {shape!r} in .npy header")
    if type(fortran) is not bool:
        raise DataError(f"{where}: bad fortran_order {fortran!r} in .npy header")
    try:
        dtype = np.dtype(descr) if type(descr) is str else None
    except (TypeError, ValueError, SyntaxError, OverflowError):
        dtype = None
    if dtype is None or dtype.fields is not None or dtype.subdtype is not None or dtype.itemsize == 0:
        raise DataError(f"{where}: dtype {descr!r} is not a plain array dtype")
    if dtype.hasobject:
        raise DataError(f"{where}: holds Python objects, which load only by unpickling; refused")
    if math.prod(n for n in shape if n) * dtype.itemsize > np.iinfo(np.intp).max:
        raise DataError(f"{where}: shape {shape} {dtype} is larger than any array can be")
    return shape, fortran, dtype


def write_npz_atomic(
    path: str | os.PathLike, arrays: Mapping[str, np.ndarray], expected: Mapping[str, str],
    check: Callable[..., object] = verify, keys: Sequence[str] = KEYS,
) -> None:
    """Write the arrays named ``keys`` (by default the four of a data set) to ``path`` so
    that it is never seen half-written.

    Writes a temp file in the same folder (:func:`vaelab.storage.atomic_path`), fsyncs it,
    re-reads it and checks it with ``check(arrays, expected, source)`` (by default the
    MNIST-shaped digest check), then renames it into place. On any failure the temp file is
    removed and ``path`` is left untouched.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as out:
            np.savez(out, **{key: arrays[key] for key in keys})
            out.flush()
            os.fsync(out.fileno())
        check(read_npz(tmp, keys), expected, f"cache temp file {tmp}")

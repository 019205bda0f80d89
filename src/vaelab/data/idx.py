"""Reader for the IDX binary format of the MNIST family of data sets.

An IDX file is: two zero bytes, a dtype code, the number of dimensions
``ndim``, then ``ndim`` big-endian uint32 sizes, then the data, big-endian,
C order. Files may be gzip-compressed; gzip is detected by its magic bytes.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .arrays import check_split
from .errors import DataError

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
MAX_NDIM = 32  # the fewest dimensions any numpy supports; MNIST files have 1 or 3


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file, raw or gzip-compressed.

    Returns a C-contiguous, native-endian array whose shape is the header's
    dimensions, e.g. (N, 28, 28) uint8 for images or (N,) uint8 for labels.
    Any fault in the file raises :class:`DataError` naming the file.
    """
    path = Path(path)
    try:
        with _open(path) as stream:
            dtype, dims = _read_header(stream, path)
            payload = _read_payload(stream, path, dtype.itemsize * math.prod(dims))
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read IDX file: {exc}") from exc
    array = np.frombuffer(payload, dtype).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx_split(
    images_path: str | os.PathLike, labels_path: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray]:
    """Read an images/labels pair of IDX files and check that they match.

    Returns ``(x, y)``: x (N, 28, 28) uint8 and y (N,) uint8.
    """
    x, y = read_idx(images_path), read_idx(labels_path)
    check_split(x, y, str(images_path), str(labels_path))
    return x, y


@contextmanager
def _open(path: Path) -> Iterator[BinaryIO]:
    """Open ``path`` for reading, transparently decompressing gzip."""
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    with raw:
        is_gzip = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if not is_gzip:
            yield raw
            return
        try:
            with gzip.GzipFile(fileobj=raw) as stream:
                yield stream
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt or truncated gzip stream: {exc}") from exc


def _read_header(stream: BinaryIO, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """Parse the IDX header; returns (big-endian dtype, dimensions)."""
    head = stream.read(4)
    if len(head) < 4:
        raise DataError(f"{path}: truncated IDX header ({len(head)} of 4 bytes)")
    if head[:2] != b"\0\0":
        raise DataError(f"{path}: bad IDX magic number 0x{head.hex()}")
    if head[2] not in IDX_DTYPES:
        raise DataError(f"{path}: unknown IDX dtype code 0x{head[2]:02x}")
    ndim = head[3]
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    if ndim > MAX_NDIM:
        raise DataError(f"{path}: IDX header declares {ndim} dimensions, more than {MAX_NDIM}")
    raw_dims = stream.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header (dimensions cut short)")
    dtype, dims = IDX_DTYPES[head[2]], struct.unpack(f">{ndim}I", raw_dims)
    # numpy refuses such a shape even when a zero dimension leaves nothing to read
    if math.prod(d for d in dims if d) * dtype.itemsize > np.iinfo(np.intp).max:
        raise DataError(f"{path}: IDX dimensions {dims} are larger than any array can be")
    return dtype, dims


def _read_payload(stream: BinaryIO, path: Path, size: int) -> bytearray:
    """Read exactly ``size`` bytes and make sure nothing follows them.

    Reads in chunks, so a header that claims far more data than the file
    holds fails as soon as the file runs out, without a huge allocation.
    """
    buf = bytearray()
    while len(buf) < size:
        chunk = stream.read(min(_CHUNK, size - len(buf)))
        if not chunk:
            raise DataError(
                f"{path}: truncated: header claims {size} data bytes, file holds {len(buf)}"
            )
        buf += chunk
    if stream.read(1):
        raise DataError(f"{path}: trailing garbage after the {size} data bytes")
    return buf

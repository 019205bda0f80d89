"""Tests for the IDX reader: good files of every dtype, and every kind of bad file."""

from __future__ import annotations

import gzip
import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from vaelab.data import DataError, read_idx
from vaelab.data.idx import read_idx_split

CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """Encode ``array`` as an IDX file with the given dtype code."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(CODES[code]).tobytes()


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("code", sorted(CODES))
def test_round_trip_every_dtype(tmp_path, code, gz):
    array = (np.arange(24).reshape(2, 3, 4) - 7).astype(CODES[code])
    if code == 0x08:
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write(tmp_path / "a.idx", idx_bytes(array, code), gz)
    out = read_idx(path)
    np.testing.assert_array_equal(out, array)
    assert out.shape == (2, 3, 4)
    assert out.dtype == np.dtype(CODES[code]).newbyteorder("=")
    assert out.dtype.isnative and out.flags["C_CONTIGUOUS"]


def test_gzip_detected_by_magic_not_extension(tmp_path, images):
    path = write(tmp_path / "train-images-idx3-ubyte", idx_bytes(images), gz=True)
    np.testing.assert_array_equal(read_idx(path), images)


def test_plain_file_named_gz_is_read_as_plain(tmp_path, images):
    path = write(tmp_path / "x.gz", idx_bytes(images))
    np.testing.assert_array_equal(read_idx(path), images)


def test_labels_one_dimensional(tmp_path):
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    out = read_idx(write(tmp_path / "y", idx_bytes(labels), gz=True))
    assert out.shape == (5,) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, labels)


def bad_files(images: np.ndarray) -> dict[str, tuple[bytes, bool, str]]:
    """name -> (file bytes, gzip it?, expected fault in the message)."""
    good = idx_bytes(images)
    gz = gzip.compress(good)
    mid = len(gz) // 2
    return {
        "empty": (b"", False, "truncated IDX header"),
        "short-header": (good[:6], False, "truncated IDX header"),
        "short-data": (good[:-1], False, "truncated"),
        "short-data-gz": (good[:-100], True, "truncated"),
        "bad-magic": (b"\x01\x02" + good[2:], False, "magic"),
        "text-file": (b"hello, this is not idx\n", False, "magic"),
        "bad-dtype": (good[:2] + b"\x07" + good[3:], False, "dtype code 0x07"),
        "zero-dims": (b"\x00\x00\x08\x00", False, "0 dimensions"),
        "trailing": (good + b"\x00", False, "trailing garbage"),
        "trailing-gz": (good + b"junk", True, "trailing garbage"),
        "cut-gzip": (gz[:mid], False, "gzip"),
        "corrupt-gzip": (gz[:mid] + bytes(b ^ 0xFF for b in gz[mid:mid + 50]) + gz[mid + 50:],
                         False, "gzip"),
        "gzip-header-only": (gz[:10], False, "gzip"),
        "bad-gzip-header": (b"\x1f\x8b\x00\x00garbage", False, "gzip"),
    }


@pytest.mark.parametrize("case", list(bad_files(np.zeros((5, 28, 28), np.uint8))))
def test_bad_file_is_one_data_error_naming_file(tmp_path, images, case):
    data, gz, fault = bad_files(images)[case]
    path = write(tmp_path / f"{case}.idx", data, gz)
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert fault in str(info.value)


def test_huge_header_claim_fails_fast_without_allocating(tmp_path):
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 10**9, 28, 28)
    path = write(tmp_path / "huge.idx", header + bytes(28 * 28 * 3), gz=True)
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(DataError, match="truncated: header claims 784000000000"):
        read_idx(path)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 16 * 2**20


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match="nope.idx"):
        read_idx(tmp_path / "nope.idx")
    with pytest.raises(DataError, match=str(tmp_path)):
        read_idx(tmp_path)


def test_random_damage_only_ever_raises_data_error(tmp_path, images):
    """Cut, flip and insert bytes at random: the reader either parses or says DataError."""
    rng = np.random.default_rng(1)
    sources = [idx_bytes(images[:2]), gzip.compress(idx_bytes(images[:2]))]
    for trial in range(300):
        data = bytearray(sources[trial % 2])
        pos = int(rng.integers(0, len(data)))
        kind = trial % 3
        if kind == 0:
            del data[pos:]
        elif kind == 1:
            data[pos] ^= int(rng.integers(1, 256))
        else:
            data[pos:pos] = rng.bytes(int(rng.integers(1, 8)))
        path = write(tmp_path / "fuzz.idx", bytes(data))
        try:
            read_idx(path)
        except DataError as exc:
            assert str(path) in str(exc)


def test_split_pair_good(tmp_path, images):
    labels = np.arange(5, dtype=np.uint8)
    x, y = read_idx_split(write(tmp_path / "x", idx_bytes(images), gz=True),
                          write(tmp_path / "y", idx_bytes(labels)))
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def test_split_pair_count_mismatch_names_both_files(tmp_path, images):
    x_path = write(tmp_path / "x", idx_bytes(images))
    y_path = write(tmp_path / "y", idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(DataError, match="5 images but 4 labels") as info:
        read_idx_split(x_path, y_path)
    assert str(x_path) in str(info.value) and str(y_path) in str(info.value)


@pytest.mark.parametrize("array, code", [
    (np.zeros((5, 27, 28), np.uint8), 0x08),
    (np.zeros((5, 784), np.uint8), 0x08),
    (np.zeros((5, 28, 28), np.int32), 0x0C),
])
def test_split_pair_wrong_image_layout(tmp_path, array, code):
    x_path = write(tmp_path / "x", idx_bytes(array, code))
    y_path = write(tmp_path / "y", idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(DataError, match=r"expected images of shape \(N, 28, 28\) uint8") as info:
        read_idx_split(x_path, y_path)
    assert str(x_path) in str(info.value)


def test_split_pair_labels_not_one_dimensional(tmp_path, images):
    x_path = write(tmp_path / "x", idx_bytes(images))
    y_path = write(tmp_path / "y", idx_bytes(np.zeros((5, 1), np.uint8)))
    with pytest.raises(DataError, match="expected labels") as info:
        read_idx_split(x_path, y_path)
    assert str(y_path) in str(info.value)

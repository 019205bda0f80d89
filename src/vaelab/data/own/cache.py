"""The cache of decoded image folders: a raw .npy of the pixels plus an .npz of everything else.

One entry per folder and set of options, under ``<cache dir>/images/`` (the cache dir is
:func:`vaelab.data.default_cache_dir`, as for MNIST):

- ``<stem>.npz``: labels, split sizes, label names, file names, skipped and ignored files,
  the SHA-256 of every array, the name of the pixel file, and the folder's fingerprint:
  SHA-256 over every image file's relative path, size and mtime_ns and over the options.
  A folder whose fingerprint no longer matches (a file added, removed or edited) is
  decoded again and its entry replaced.
- ``<stem>.<token>.npy``: the pixels, (N, C, H, W) uint8, rows in split order (train, val,
  test). A raw .npy, always opened memory-mapped and read-only: reading back costs no copy
  (0.1 s for 60,000 28x28 images, most of it the digest check), pages are shared with the
  OS cache, and data larger than memory works. Up to :data:`MMAP_THRESHOLD_BYTES` the
  pixels are checked against their SHA-256 on every load; beyond it only their shape is,
  since hashing would read the whole file.

Decoding writes the pixels straight into a temp .npy (so a folder larger than memory never
has to fit in it); the entry is committed only when the temp file has been flushed, fsynced
and re-read to the same digests: the .npy is renamed to its fresh token name, then the .npz
is written by :func:`vaelab.data.npzfile.write_npz_atomic` (temp, fsync, re-read, rename),
and only that last rename makes the entry visible (both temp files are made by
:class:`vaelab.storage.StagedFile`). A failure or an interruption at any point leaves
the previous entry as it was, and no half-written file under a name a reader opens.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL

from ...storage import StagedFile
from ..arrays import sha256_array
from ..errors import DataError
from ..npzfile import read_npz, write_npz_atomic
from .dataset import SPLITS

FORMAT_VERSION = 1
CACHE_SUBDIR = "images"
# Pixel files up to this size are checked against their digests on every load; larger ones
# only by shape, so that loading does not read them in whole.
MMAP_THRESHOLD_BYTES = 1 << 30
META_KEYS: tuple[str, ...] = ("version", "fingerprint", "images_file", "shape", "split_sizes",
                              "labelled", "labels", "label_names", "files", "skipped", "ignored",
                              "digest_names", "digest_values")
_HASH_CHUNK_ROWS = 4096


# What the fingerprint takes from one image file: (relative path, size, mtime_ns). A plain
# tuple: a folder has tens of thousands, listed again on every load.
FileStamp = tuple[str, int, int]


@dataclass(frozen=True)
class CachedImages:
    """A decoded folder: images (N, C, H, W) uint8, labels (N,) int64 or None, files (N,) str,
    all in split order."""

    images: np.ndarray
    labels: np.ndarray | None
    split_sizes: tuple[int, int, int]
    label_names: tuple[str, ...]
    files: np.ndarray
    skipped: tuple[str, ...]
    ignored: tuple[str, ...]
    digests: dict[str, str]


def fingerprint(stamps: Sequence[FileStamp], settings: Mapping[str, object]) -> str:
    """SHA-256 hex of the files' paths, sizes and mtimes and of the decode settings."""
    digest = hashlib.sha256(_settings_text(settings).encode())
    digest.update("".join(f"{rel}\0{size}\0{mtime}\n" for rel, size, mtime in stamps).encode())
    return digest.hexdigest()


def entry_stem(cache_dir: Path, root: Path, settings: Mapping[str, object]) -> Path:
    """``<cache_dir>/images/<folder name>-<hash of its path and the settings>``."""
    key = hashlib.sha256(f"{root}\0{_settings_text(settings)}".encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", root.name)[:40] or "folder"
    return cache_dir / CACHE_SUBDIR / f"{slug}-{key}"


def _settings_text(settings: Mapping[str, object]) -> str:
    """The settings as canonical JSON, with what else changes the decoded pixels."""
    return json.dumps({**settings, "format": FORMAT_VERSION, "pillow": PIL.__version__},
                      sort_keys=True, default=list)


def read_cache(stem: Path, expected_fingerprint: str) -> CachedImages | None:
    """The entry at ``stem`` if it holds the folder as fingerprinted, else None.

    Raises :class:`DataError` naming the file when the entry is there but damaged.
    """
    meta_path = stem.with_suffix(".npz")
    if not meta_path.is_file():
        return None
    meta = read_npz(meta_path, META_KEYS)
    if int(meta["version"]) != FORMAT_VERSION or str(meta["fingerprint"]) != expected_fingerprint:
        return None
    shape = tuple(int(n) for n in meta["shape"])
    digests = dict(zip(map(str, meta["digest_names"]), map(str, meta["digest_values"]), strict=True))
    split_sizes = tuple(int(n) for n in meta["split_sizes"])
    images = _read_pixels(stem.parent / str(meta["images_file"]), shape, split_sizes, digests)
    return CachedImages(
        images=images, labels=meta["labels"] if bool(meta["labelled"]) else None,
        split_sizes=split_sizes, label_names=_strings(meta["label_names"]),
        files=meta["files"], skipped=_strings(meta["skipped"]),
        ignored=_strings(meta["ignored"]), digests=digests)


def _read_pixels(path: Path, shape: tuple[int, ...], split_sizes: Sequence[int],
                 digests: Mapping[str, str]) -> np.ndarray:
    """The pixel file, memory-mapped read-only; checked against its digests unless large."""
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable cache pixel file: {exc}") from exc
    if mapped.shape != shape or mapped.dtype != np.uint8:
        raise DataError(f"{path}: cache pixel file holds {mapped.shape} {mapped.dtype}, "
                        f"its index says {shape} uint8")
    if mapped.nbytes <= MMAP_THRESHOLD_BYTES:
        for key, value in split_digests(mapped, split_sizes).items():
            if digests.get(key) != value:
                raise DataError(f"{path}: cache pixel file's {key} does not match its SHA-256")
    return mapped


def _strings(array: np.ndarray) -> tuple[str, ...]:
    return tuple(str(item) for item in array)


def split_digests(images: np.ndarray, split_sizes: Sequence[int]) -> dict[str, str]:
    """SHA-256 of x_train, x_val and x_test, the row blocks of ``images`` (N, C, H, W).

    Hashed a few thousand rows at a time, so a memory-mapped file is never read in whole.
    """
    digests, start = {}, 0
    for split, size in zip(SPLITS, split_sizes, strict=True):
        digest = hashlib.sha256()
        for first in range(start, start + size, _HASH_CHUNK_ROWS):
            last = min(first + _HASH_CHUNK_ROWS, start + size)
            digest.update(np.ascontiguousarray(images[first:last]).data)
        digests[f"x_{split}"] = digest.hexdigest()
        start += size
    return digests


class PixelWriter:
    """A temp .npy next to the cache entry that decoding writes rows into, then commits.

    ``pixels`` is the writable (N, C, H, W) memory map. Use as a context manager: leaving
    it without :meth:`commit` removes the temp file.
    """

    def __init__(self, stem: Path, shape: tuple[int, int, int, int]) -> None:
        self.stem = stem
        # A fresh name for every entry: a reader still mapping the previous pixel file keeps it.
        self.file = StagedFile(stem.parent / f"{stem.name}.{secrets.token_hex(4)}.npy")
        self.pixels = np.lib.format.open_memmap(self.file.tmp, mode="w+", dtype=np.uint8, shape=shape)

    @property
    def tmp(self) -> Path:
        return self.file.tmp

    def __enter__(self) -> PixelWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.pixels = None  # drops the map, so the file can go on any system
        self.file.discard()

    def shrink(self, n_rows: int) -> None:
        """Keep only the first ``n_rows`` rows (after skipped files left the tail unused)."""
        old_file, old = self.file, self.pixels
        self.file = StagedFile(old_file.path)
        self.pixels = np.lib.format.open_memmap(self.file.tmp, mode="w+", dtype=np.uint8,
                                                shape=(n_rows, *old.shape[1:]))
        for first in range(0, n_rows, _HASH_CHUNK_ROWS):
            last = min(first + _HASH_CHUNK_ROWS, n_rows)
            self.pixels[first:last] = old[first:last]
        del old
        old_file.discard()

    def commit(self, meta: dict[str, np.ndarray], digests: Mapping[str, str]) -> Path:
        """Flush, verify against ``digests`` (x_train, x_val, x_test), publish; the pixel file."""
        self.pixels.flush()
        with open(self.tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        self.pixels = None
        split_sizes = [int(n) for n in meta["split_sizes"]]
        reread = np.load(self.tmp, mmap_mode="r", allow_pickle=False)
        found = split_digests(reread, split_sizes)
        del reread
        for key, value in found.items():
            if digests[key] != value:
                raise DataError(f"cache temp file {self.tmp}: {key} reads back with another SHA-256")
        return self._publish(meta)

    def _publish(self, meta: dict[str, np.ndarray]) -> Path:
        """Rename the pixels into place, then write the index that names them."""
        meta_path = self.stem.with_suffix(".npz")
        previous = _previous_pixel_file(meta_path)
        pixel_path = self.file.path
        self.file.publish()
        meta = {**meta, "images_file": np.array(pixel_path.name)}
        try:
            write_npz_atomic(meta_path, meta, meta, check=_same_arrays, keys=META_KEYS)
        except BaseException:
            pixel_path.unlink(missing_ok=True)
            raise
        if previous is not None and previous != pixel_path:
            # OSError: still mapped by a reader on a system that forbids deleting it
            with contextlib.suppress(OSError):
                previous.unlink(missing_ok=True)
        return pixel_path


def _previous_pixel_file(meta_path: Path) -> Path | None:
    """The pixel file the current index names, to delete once the new one is in place."""
    try:
        name = str(read_npz(meta_path, ("images_file",))["images_file"])
    except DataError:
        return None
    return meta_path.parent / name if re.fullmatch(r"[\w.-]+\.npy", name) else None


def _same_arrays(reread: Mapping[str, np.ndarray], written: Mapping[str, np.ndarray], where: str) -> None:
    """The check write_npz_atomic runs on the re-read index: every array as written."""
    for key in META_KEYS:
        if not np.array_equal(reread[key], np.asarray(written[key])):
            raise DataError(f"{where}: {key} reads back differently")


def meta_arrays(fingerprint_hex: str, cached: CachedImages) -> dict[str, np.ndarray]:
    """The index arrays of an entry (all plain dtypes, strings as unicode arrays)."""
    labelled = cached.labels is not None
    labels = cached.labels if labelled else np.zeros(0, np.int64)
    names, values = zip(*sorted(cached.digests.items()), strict=True)
    return {
        "version": np.array(FORMAT_VERSION), "fingerprint": np.array(fingerprint_hex),
        "images_file": np.array(""), "shape": np.array(cached.images.shape, np.int64),
        "split_sizes": np.array(cached.split_sizes, np.int64), "labelled": np.array(labelled),
        "labels": labels.astype(np.int64), "label_names": _text_array(cached.label_names),
        "files": _text_array(cached.files), "skipped": _text_array(cached.skipped),
        "ignored": _text_array(cached.ignored), "digest_names": _text_array(names),
        "digest_values": _text_array(values),
    }


def _text_array(items: Sequence[str]) -> np.ndarray:
    """A unicode array (never an object array, which only pickle could store)."""
    return np.array(list(items), dtype=str) if len(items) else np.zeros(0, dtype="<U1")


def label_digests(labels: np.ndarray | None, split_sizes: Sequence[int]) -> dict[str, str]:
    """SHA-256 of y_train, y_val and y_test (none when unlabelled)."""
    if labels is None:
        return {}
    bounds = np.cumsum([0, *split_sizes])
    return {f"y_{split}": sha256_array(labels[bounds[i]:bounds[i + 1]]) for i, split in enumerate(SPLITS)}

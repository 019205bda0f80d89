"""The result of loading your own images (a folder, an array file or arrays), and its splits."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..arrays import sha256_array

SPLITS: tuple[str, ...] = ("train", "val", "test")
TRAIN, VAL, TEST = range(3)  # split ids, in the order rows are stored


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """Images in three splits, uint8 and channel-first, as the trainer takes them.

    Like :class:`vaelab.data.RawDataset` (x_train, y_train, x_test, y_test, name, source,
    digests) with a validation split, label names and the image shape added:

    - ``x_train`` (N_train, C, H, W), ``x_val`` (N_val, C, H, W), ``x_test`` (N_test, C, H, W):
      uint8 0..255, C = 1 (grey) or 3 (RGB). A split may be empty (N = 0). From a folder
      they are read-only views of a memory map of the cache file (np.memmap; copy them to
      write to them); from arrays, ordinary arrays.
    - ``y_train`` (N_train,), ``y_val`` (N_val,), ``y_test`` (N_test,): int64 class indices
      into ``label_names``, or None for unlabelled images (no class sub-folders, no labels).
    - ``label_names``: the class names; label i is ``label_names[i]`` (sorted sub-folder
      names for a folder). Empty when unlabelled.
    - ``image_shape``: (C, H, W).
    - ``name``: the folder's or file's name, or "arrays"; ``source``: where the images were
      read from, e.g. "folder /data/cats (decoded)" or "cache /home/me/.cache/vaelab/...".
    - ``digests``: SHA-256 of each array above (keys x_train, y_train, x_val, ...; y_* only
      when labelled), as :class:`RawDataset` has them.
    - ``files``: for a folder, the path of each image relative to it, per split, as str
      arrays (``files["train"][i]`` is the file of ``x_train[i]``); empty arrays otherwise.
    - ``skipped``: one line per bad file that ``skip_bad=True`` left out, naming the file
      and the fault; ``ignored``: the relative paths of files left out as not images
      (.txt, .json, hidden files, ...).
    """

    name: str
    x_train: np.ndarray = field(repr=False)
    y_train: np.ndarray | None = field(repr=False)
    x_val: np.ndarray = field(repr=False)
    y_val: np.ndarray | None = field(repr=False)
    x_test: np.ndarray = field(repr=False)
    y_test: np.ndarray | None = field(repr=False)
    label_names: tuple[str, ...] = ()
    image_shape: tuple[int, int, int] = (1, 1, 1)
    source: str = ""
    digests: dict[str, str] = field(default_factory=dict, repr=False)
    files: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    skipped: tuple[str, ...] = field(default=(), repr=False)
    ignored: tuple[str, ...] = field(default=(), repr=False)

    @property
    def labelled(self) -> bool:
        return self.y_train is not None


def assemble(
    name: str, source: str, images: np.ndarray, labels: np.ndarray | None,
    split_sizes: Sequence[int], label_names: Sequence[str], *,
    files: np.ndarray | None = None, skipped: Sequence[str] = (), ignored: Sequence[str] = (),
    digests: dict[str, str] | None = None,
) -> ImageDataset:
    """An ImageDataset from images (N, C, H, W) and labels (N,) stored train, val, test in turn.

    ``split_sizes``: (N_train, N_val, N_test), summing to N. ``files``: N relative paths in
    the same order, or None. ``digests``: when already known (a cache), else computed here.
    """
    bounds = np.cumsum([0, *split_sizes])
    parts = {split: slice(int(bounds[i]), int(bounds[i + 1])) for i, split in enumerate(SPLITS)}
    arrays = {f"x_{split}": images[part] for split, part in parts.items()}
    arrays |= {f"y_{split}": None if labels is None else labels[part] for split, part in parts.items()}
    if digests is None:
        digests = {key: sha256_array(value) for key, value in arrays.items() if value is not None}
    files = np.zeros(len(images), "<U1") if files is None else np.asarray(files, dtype=str)
    split_files = {split: files[part] if len(files) else files[:0] for split, part in parts.items()}
    return ImageDataset(name=name, label_names=tuple(label_names), image_shape=tuple(images.shape[1:]),
                        source=source, digests=digests, files=split_files, skipped=tuple(skipped),
                        ignored=tuple(ignored), **arrays)


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Each fraction in [0, 1), their sum below 1 (something must be left to train on)."""
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{key} must be in [0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be below 1, got "
                         f"{val_fraction} + {test_fraction}")


def split_by_rank(names: Sequence[str], val_fraction: float, test_fraction: float,
                  seed: int) -> np.ndarray:
    """Split ids (N,) int8 (TRAIN, VAL or TEST) for items named ``names``.

    round(N * test_fraction) items go to test and round(N * val_fraction) to val: the ones
    whose SHA-256 of "<seed>:<name>" ranks lowest. Ranking by a keyed hash rather than by a
    permutation of positions keeps a file's split when other files are added or removed
    (only files near the cut-off move), so a growing folder does not leak test images into
    training; the same seed and names always give the same split.
    """
    check_fractions(val_fraction, test_fraction)
    n = len(names)
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    keys = [hashlib.sha256(f"{seed}:{name}".encode()).digest() for name in names]
    order = sorted(range(n), key=keys.__getitem__)
    split = np.full(n, TRAIN, dtype=np.int8)
    split[order[:n_test]] = TEST
    split[order[n_test:n_test + n_val]] = VAL
    return split

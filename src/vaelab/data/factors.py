"""Data sets whose images are a full grid over the factors that made them (dSprites, 3D Shapes, MPI3D).

A `FactorGrid` knows each factor's name, levels and real values, and reads the image of any
factor tuple: the disentanglement scores draw factors with `sample` and encode `batch`.
A `FactorDataset` is such a grid as the raw data of a run (the splits `views.make_views` reads),
with each split's factor levels beside its images, so the factors travel with the data.

Row order is the published files': the last factor changes fastest (`np.ravel_multi_index`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..progress import progress as progress_bar

VAL_SIZE = 5_000
TEST_SIZE = 10_000
"""Validation and test images of a factor data set: seeded subsets of the grid, which the
disentanglement literature's protocol (train on every image) means they overlap training."""


@dataclass(eq=False)
class FactorGrid:
    """names, sizes (levels per factor), values (the real value of each level, float64) of a grid of
    images; `images` (N, C, H, W) uint8 in grid order, N = prod(sizes), often a read-only memory map.

    `binary`: the pixels are {0, 1} (dSprites), else 0..255 (colour sets, read as x/255).
    """

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    values: tuple[np.ndarray, ...]
    images: np.ndarray | None = field(default=None, repr=False)
    binary: bool = False

    def __post_init__(self) -> None:
        self.names, self.sizes = tuple(self.names), tuple(int(s) for s in self.sizes)
        self.values = tuple(np.asarray(v, dtype=np.float64) for v in self.values)
        if not len(self.names) == len(self.sizes) == len(self.values):
            raise ValueError(f"FactorGrid: {len(self.names)} names, {len(self.sizes)} sizes, "
                             f"{len(self.values)} value arrays")
        for name, size, values in zip(self.names, self.sizes, self.values):
            if values.shape != (size,):
                raise ValueError(f"FactorGrid: factor {name} has {size} levels but values of shape {values.shape}")
        if self.images is not None and len(self.images) != len(self):
            raise ValueError(f"FactorGrid: {len(self.images)} images for a grid of {len(self)}")

    def __len__(self) -> int:
        return math.prod(self.sizes)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, k) int64 factor levels, each factor uniform and independent."""
        return rng.integers(0, np.array(self.sizes), size=(n, len(self.sizes)), dtype=np.int64)

    def index(self, factors: np.ndarray) -> np.ndarray:
        """(n,) int64: the grid row of each factor tuple of `factors` (n, k)."""
        factors = np.asarray(factors)
        if factors.ndim != 2 or factors.shape[1] != len(self.sizes):
            raise ValueError(f"factors must be (n, {len(self.sizes)}), got {factors.shape}")
        return np.ravel_multi_index(tuple(factors.T), self.sizes).astype(np.int64)

    def levels(self, rows: np.ndarray) -> np.ndarray:
        """(n, k) int64: the factor levels of grid rows `rows` (n,), the inverse of `index`."""
        return np.stack(np.unravel_index(np.asarray(rows, dtype=np.int64), self.sizes), axis=1).astype(np.int64)

    def factor_values(self, factors: np.ndarray) -> np.ndarray:
        """(n, k) float64: the real value of each level in `factors` (n, k)."""
        return np.stack([self.values[j][factors[:, j]] for j in range(len(self.sizes))], axis=1)

    def batch(self, factors: np.ndarray) -> torch.Tensor:
        """(n, C*H*W) float32 in [0, 1]: the images of `factors` (n, k), as training sees them
        ({0, 1} for binary sets, x/255 otherwise)."""
        if self.images is None:
            raise ValueError("FactorGrid: no images attached")
        rows = self.index(factors)
        order = np.argsort(rows, kind="stable")  # a memory map reads in order far faster than at random
        pixels = np.empty((len(rows), *self.images.shape[1:]), np.uint8)
        pixels[order] = self.images[rows[order]]
        batch = torch.from_numpy(pixels.reshape(len(rows), -1)).float()
        return batch if self.binary else batch.div_(255.0)

    def describe(self) -> dict[str, list]:
        """{"names": [...], "sizes": [...]}: what a run records of its factors."""
        return {"names": list(self.names), "sizes": list(self.sizes)}


@dataclass(eq=False)
class FactorDataset:
    """A factor grid as a run's raw data: the splits (images (n, C, H, W) uint8, labels (n,)) that
    `make_views` reads, each split's factor levels (n, k) int64, and the grid itself.

    The training split is the whole grid (no copy of a memory map); validation and test are
    seeded subsets of it (`split_rows`)."""

    name: str
    grid: FactorGrid
    source: str
    label_factor: int  # the factor whose level is each image's label (dSprites: shape)
    label_names: tuple[str, ...]
    seed: int = 0
    label_levels: np.ndarray | None = None  # the label of each level of the label factor (None: the level)
    labelled: bool = True
    splits: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # split -> grid rows (None: all)
    digests: dict[str, str] = field(default_factory=dict, repr=False)  # none: generated, or checked by layout

    def __post_init__(self) -> None:
        n = len(self.grid)
        rows = split_rows(n, self.seed)
        self.splits = {"train": None, "val": rows["val"], "test": rows["test"]}

    @property
    def binary(self) -> bool:
        return self.grid.binary

    @property
    def factors(self) -> FactorGrid:
        return self.grid

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.grid.images.shape[1:])

    def _x(self, split: str) -> np.ndarray:
        rows = self.splits[split]
        return self.grid.images if rows is None else self.grid.images[rows]

    def _rows(self, split: str) -> np.ndarray:
        rows = self.splits[split]
        return np.arange(len(self.grid)) if rows is None else rows

    def split_factors(self, split: str) -> np.ndarray:
        """(n, k) int64 factor levels of the split's images, in its order."""
        return self.grid.levels(self._rows(split))

    def _y(self, split: str) -> np.ndarray:
        levels = self.split_factors(split)[:, self.label_factor]
        return levels if self.label_levels is None else np.asarray(self.label_levels, np.int64)[levels]

    x_train = property(lambda self: self._x("train"))
    x_val = property(lambda self: self._x("val"))
    x_test = property(lambda self: self._x("test"))
    y_train = property(lambda self: self._y("train"))
    y_val = property(lambda self: self._y("val"))
    y_test = property(lambda self: self._y("test"))


def split_rows(n: int, seed: int) -> dict[str, np.ndarray]:
    """{"val": rows, "test": rows}: seeded subsets of a grid of n images, sorted (a memory map
    reads them in order), of VAL_SIZE and TEST_SIZE images or all n where the grid is smaller."""
    rng = np.random.default_rng(seed)
    return {split: np.sort(rng.choice(n, size=min(size, n), replace=False))
            for split, size in (("val", VAL_SIZE), ("test", TEST_SIZE))}


def write_blocks(path: Path, shape: tuple[int, ...], blocks: Iterable[np.ndarray], label: str,
                 progress: bool) -> int:
    """Write `blocks` of uint8 images, in order, into a new .npy of `shape` at `path` (a temp file the
    caller checks and renames), with a progress bar; the number of images written."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    done = 0
    with progress_bar(shape[0], label, "image", enabled=progress) as bar:
        for block in blocks:
            out[done:done + len(block)] = block
            done += len(block)
            bar.update(len(block))
    out.flush()
    del out  # closes the map before the caller reads the file back or renames it
    return done

"""The published factor data sets, when the user has their files: `--images FILE` reads them with their factors.

- dSprites: ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` (``imgs`` (737280, 64, 64) uint8 {0,1},
  ``latents_classes`` and ``latents_values`` (737280, 6)); its ``metadata`` member is a pickled
  object and is never read.
- 3D Shapes: ``3dshapes.h5`` (``images`` (480000, 64, 64, 3) uint8, ``labels`` (480000, 6) float64:
  the factor values); reading it needs h5py (``pip install "vaelab[h5]"``).
- MPI3D: ``mpi3d_*.npz`` (``images`` (1036800, 64, 64, 3) uint8), a grid of 6x6x2x3x3x40x40
  factor levels in row order (the files hold no values: a level's value is its index).

Nothing is downloaded. The images are copied once into the image cache as channel-first uint8
.npy (a temp file, checked, renamed), named by the file's path, size and modification time, and
memory-mapped from there; the factors are checked against the grid's row order.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..storage import atomic_path
from .errors import DataError
from .factors import FactorDataset, FactorGrid, write_blocks
from .npzfile import check_member, read_npy_header, read_npz

DSPRITES_NAMES = ("shape", "scale", "orientation", "x", "y")
SHAPES3D_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
MPI3D_NAMES = ("object_color", "object_shape", "object_size", "camera_height", "background_color",
               "horizontal_axis", "vertical_axis")
MPI3D_SIZES = (6, 6, 2, 3, 3, 40, 40)
MPI3D_SHAPES = ("cone", "cube", "cylinder", "hexagonal", "pyramid", "sphere")
H5_INSTALL = 'pip install "vaelab[h5]"'
_ROWS = 4096  # images copied at a time


def factor_file_kind(path: Path) -> str | None:
    """"dsprites", "3dshapes" or "mpi3d" for a file of a published factor data set, else None."""
    name, suffix = path.name.lower(), path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return "3dshapes"
    if suffix != ".npz":
        return None
    if name.startswith("dsprites"):
        return "dsprites"
    if name.startswith("mpi3d"):
        return "mpi3d"
    try:
        with zipfile.ZipFile(path) as zf:
            members = set(zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return None  # the ordinary .npz reader says what is wrong with it
    return "dsprites" if {"imgs.npy", "latents_classes.npy"} <= members else None


def load_factor_file(path: Path, kind: str, seed: int = 0, progress: bool = True,
                     cache_dir: Path | None = None, sizes: tuple[int, ...] | None = None) -> FactorDataset:
    """A published factor data set's file (a kind of `factor_file_kind`) as a FactorDataset.

    The images are checked against the grid their factors make (dSprites, 3D Shapes: read from the
    file; MPI3D: `sizes`, by default MPI3D_SIZES)."""
    readers = {"dsprites": _dsprites, "3dshapes": _shapes3d, "mpi3d": _mpi3d}
    return readers[kind](path, seed, progress, cache_dir, sizes)


# ---------------------------------------------------------------- the three layouts

def _dsprites(path: Path, seed: int, progress: bool, cache_dir: Path | None,
              sizes: tuple[int, ...] | None = None) -> FactorDataset:
    where = str(path)
    latents = read_npz(path, ("latents_classes", "latents_values"))  # not metadata: a pickle
    classes, values = latents["latents_classes"], latents["latents_values"]
    for key, array in latents.items():
        if array.ndim != 2 or array.shape[1] != 6 or array.dtype.kind not in "iuf" or not len(array):
            raise DataError(f"{where}: {key} must be (N, 6) numbers (colour, shape, scale, orientation, x, y), "
                            f"got {array.shape} {array.dtype}")
    if classes.shape != values.shape:
        raise DataError(f"{where}: latents_classes {classes.shape} and latents_values {values.shape} differ in shape")
    # the colour factor has one level: left out, as in vaelab's own dsprites
    levels = classes[:, 1:].astype(np.int64)
    grid = _grid_from_levels(where, "latents_classes", DSPRITES_NAMES, tuple(levels.max(0) + 1), levels,
                             values[:, 1:])
    n = len(grid)
    images = _cached(path, "dsprites", (n, 1, 64, 64), _npz_rows(path, "imgs", (n, 64, 64), channel_last=False),
                     progress, cache_dir)
    grid.images, grid.binary = images, True
    return FactorDataset("dsprites", grid, f"{path} (dSprites, cached as {images.filename}); validation and "
                         "test are seeded subsets of the training grid", 0, ("square", "ellipse", "heart"), seed=seed)


def _shapes3d(path: Path, seed: int, progress: bool, cache_dir: Path | None,
              sizes: tuple[int, ...] | None = None) -> FactorDataset:
    h5py = _h5py()
    where = str(path)
    try:
        with h5py.File(path, "r") as f:
            for key in ("images", "labels"):
                if key not in f or not isinstance(f[key], h5py.Dataset):
                    raise DataError(f"{where}: no {key} dataset (3dshapes.h5 holds images and labels)")
            labels = _h5_labels(f["labels"], where)
            _h5_images(f["images"], where, (len(labels), 64, 64, 3))
    except OSError as exc:
        raise DataError(f"{where}: not a readable HDF5 file: {exc}") from exc
    grid = _grid_from_values(where, "labels", SHAPES3D_NAMES, labels)
    images = _cached(path, "3dshapes", (len(grid), 3, 64, 64), _h5_rows(path, "images", h5py), progress, cache_dir)
    grid.images = images
    return FactorDataset("3dshapes", grid, f"{path} (3D Shapes, cached as {images.filename}); validation and "
                         "test are seeded subsets of the training grid", 4, ("cube", "cylinder", "sphere", "capsule"),
                         seed=seed)


def _mpi3d(path: Path, seed: int, progress: bool, cache_dir: Path | None,
           sizes: tuple[int, ...] | None = None) -> FactorDataset:
    """`sizes`: the grid (MPI3D_SIZES; the tests give a smaller one, as no file of 12 GB is made for them)."""
    sizes = sizes or MPI3D_SIZES
    grid = FactorGrid(MPI3D_NAMES, sizes, tuple(np.arange(float(size)) for size in sizes))
    n = len(grid)
    images = _cached(path, "mpi3d", (n, 3, 64, 64), _npz_rows(path, "images", (n, 64, 64, 3), channel_last=True),
                     progress, cache_dir)
    grid.images = images
    return FactorDataset("mpi3d", grid, f"{path} (MPI3D, cached as {images.filename}); validation and test are "
                         "seeded subsets of the training grid", 1, MPI3D_SHAPES[:sizes[1]], seed=seed)


# ---------------------------------------------------------------- factors

def _grid_from_levels(where: str, key: str, names: tuple[str, ...], sizes: tuple[int, ...], levels: np.ndarray,
                      values: np.ndarray) -> FactorGrid:
    """The grid of a file whose rows give each image's levels and values: checked to be the full grid in
    row order, each level with one value."""
    grid = FactorGrid(names, sizes, tuple(np.zeros(size) for size in sizes))
    if math.prod(sizes) != len(levels):
        raise DataError(f"{where}: {key}: {len(levels)} rows, but its levels make a grid of "
                        f"{'x'.join(map(str, sizes))} = {math.prod(sizes)} ({', '.join(names)})")
    expected = grid.levels(np.arange(len(grid)))
    if levels.shape != expected.shape or not np.array_equal(levels, expected):
        raise DataError(f"{where}: {key} is not the {'x'.join(map(str, sizes))} grid of {', '.join(names)} "
                        "in row order (the last factor fastest)")
    first = [np.ravel_multi_index(tuple(np.where(np.arange(len(sizes)) == j, np.arange(size)[:, None], 0).T),
                                  sizes) for j, size in enumerate(sizes)]
    grid.values = tuple(values[rows, j].astype(np.float64) for j, rows in enumerate(first))
    if not np.array_equal(grid.factor_values(expected), values):
        raise DataError(f"{where}: {key}: a factor level has more than one value")
    return grid


def _grid_from_values(where: str, key: str, names: tuple[str, ...], values: np.ndarray) -> FactorGrid:
    """The grid of a file whose rows give only each image's factor values (3D Shapes): the sorted
    distinct values of each factor are its levels."""
    levels = np.empty(values.shape, np.int64)
    for j in range(len(names)):
        levels[:, j] = np.unique(values[:, j], return_inverse=True)[1].reshape(-1)
    return _grid_from_levels(where, key, names, tuple(levels.max(0) + 1), levels, values)


# ---------------------------------------------------------------- images into the cache

Rows = Callable[[], Iterator[np.ndarray]]  # blocks of (rows, C, H, W) uint8 images, in order


def _cached(path: Path, kind: str, shape: tuple[int, ...], rows: Rows, progress: bool,
            cache_dir: Path | None) -> np.memmap:
    """The file's images as a read-only memory map of their channel-first copy in the image cache."""
    from .sources import default_cache_dir

    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = Path(cache_dir or default_cache_dir()) / "images" / f"{kind}-{key}.npy"
    if target.is_file():
        try:
            images = np.load(target, mmap_mode="r")
            if images.shape == shape and images.dtype == np.uint8:
                return images
        except (OSError, ValueError):
            pass  # a bad cache file is copied again
    blocks = rows()
    first = next(blocks, None)  # the file's layout is checked before a byte is written
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        done = write_blocks(tmp, shape, itertools.chain([] if first is None else [first], blocks),
                            f"copying {path.name} into the cache (once)", progress)
        if done != shape[0]:
            raise DataError(f"{path}: holds {done} images, not {shape[0]}")
    return np.load(target, mmap_mode="r")


def _npz_rows(path: Path, key: str, shape: tuple[int, ...], channel_last: bool) -> Rows:
    """Blocks of an .npz member's images, read as they stream out of the zip (never the whole array)."""
    where = f"{path}: {key}"

    def blocks() -> Iterator[np.ndarray]:
        try:
            with zipfile.ZipFile(path) as zf:
                name = next((n for n in (f"{key}.npy", key) if n in zf.namelist()), None)
                if name is None:
                    raise DataError(f"{path}: npz lacks the array {key}")
                info = zf.getinfo(name)
                check_member(info, where)
                with zf.open(info) as fh:
                    found, fortran, dtype = read_npy_header(fh, where)
                    if found != shape or dtype != np.uint8 or fortran:
                        raise DataError(f"{where}: expected {shape} uint8 (C order), got {found} {dtype}"
                                        + (" (Fortran order)" if fortran else ""))
                    yield from _stream(fh, shape, channel_last, where)
        except (OSError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{where}: unreadable: {exc}") from exc

    return blocks


def _stream(fh, shape: tuple[int, ...], channel_last: bool, where: str) -> Iterator[np.ndarray]:
    row_bytes = math.prod(shape[1:])
    for start in range(0, shape[0], _ROWS):
        rows = min(_ROWS, shape[0] - start)
        data = fh.read(rows * row_bytes)
        if len(data) < rows * row_bytes:
            raise DataError(f"{where}: truncated after {start} images")
        block = np.frombuffer(data, np.uint8).reshape(rows, *shape[1:])
        yield block.transpose(0, 3, 1, 2) if channel_last else block[:, None]


def _h5py():
    try:
        import h5py
    except ImportError:
        raise DataError(f"reading an HDF5 file (3dshapes.h5) needs h5py: {H5_INSTALL}") from None
    return h5py


def _h5_labels(dataset, where: str) -> np.ndarray:
    """3D Shapes' labels: (N, 6) float factor values."""
    if len(dataset.shape) != 2 or dataset.shape[1] != 6 or dataset.dtype.kind != "f" or not dataset.shape[0]:
        raise DataError(f"{where}: labels must be (N, 6) floats (floor, wall, object hue, scale, shape, "
                        f"orientation), got {dataset.shape} {dataset.dtype}")
    return dataset[()].astype(np.float64)


def _h5_images(dataset, where: str, shape: tuple[int, ...]) -> None:
    if dataset.shape != shape or dataset.dtype != np.uint8:
        raise DataError(f"{where}: images must be {shape} uint8 (one per row of labels), "
                        f"got {dataset.shape} {dataset.dtype}")


def _h5_rows(path: Path, key: str, h5py) -> Rows:
    def blocks() -> Iterator[np.ndarray]:
        with h5py.File(path, "r") as f:
            images = f[key]
            for start in range(0, images.shape[0], _ROWS):
                yield images[start:start + _ROWS].transpose(0, 3, 1, 2)
    return blocks

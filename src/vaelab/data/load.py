"""The data a run's config names, from wherever it comes: a known data set or the user's own images.

Every command that needs a run's images (training, evaluation, figures, report, explorer) loads
them here, so a run trained on a folder of JPEGs is scored and drawn from the same pixels.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import DATASETS, IMAGES
from .errors import DataError
from .sources import default_cache_dir, load_dataset

ARRAY_SPLITS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def load_data(data: Any, data_dir: str | os.PathLike | None = None, progress: bool = True) -> Any:
    """The raw data of a data config (`config.data`): a RawDataset, or an ImageDataset for "images".

    `data_dir` overrides `data.data_dir` (the --data-dir of the command line).
    """
    where = data_dir or data.data_dir
    info = DATASETS.get(data.name)
    if info and info.generated:  # drawn by vaelab into the cache, once
        from .generated import load_generated
        return load_generated(data.name, levels=data.factor_levels, seed=data.split_seed, progress=progress)
    if data.name != IMAGES:
        return load_dataset(data.name, where, progress=progress)
    if not where:
        raise DataError("data.data_dir: no images given; name a folder of images, an .npy or an .npz "
                        "(vaelab train --images PATH)")
    return _load_images(Path(where).expanduser(), data, progress)


def load_factors(data: Any, data_dir: str | os.PathLike | None = None, progress: bool = True) -> Any:
    """The FactorGrid of a run's data config (`config.data`), or None when its images have no factors
    (MNIST, a folder of images). A run that recorded factors (data.factor_names / factor_sizes) gets
    the same grid back, or a DataError saying how the data now differs."""
    grid = getattr(load_data(data, data_dir, progress), "factors", None)
    recorded = (list(data.factor_names), list(data.factor_sizes))
    if recorded[0] and (grid is None or (list(grid.names), list(grid.sizes)) != recorded):
        found = "no factors" if grid is None else f"factors {list(grid.names)} of sizes {list(grid.sizes)}"
        raise DataError(f"data.factor_names: the run was trained on factors {recorded[0]} of sizes {recorded[1]}, "
                        f"but its data now has {found}")
    return grid


def image_options(data: Any) -> dict[str, Any]:
    """How a data config's settings shape a user's images, as the image readers take them."""
    return {"image_size": tuple(data.image_size) or None, "resize_mode": data.resize_mode,
            "channels": data.channels or None, "background": tuple(data.background),
            "val_fraction": data.val_fraction, "test_fraction": data.test_fraction, "seed": data.split_seed}


def _load_images(path: Path, data: Any, progress: bool) -> Any:
    from .own.arrays import load_image_file
    from .own.folder import load_image_folder

    from .factor_files import factor_file_kind, load_factor_file

    kind = factor_file_kind(path) if path.is_file() else None
    if kind:  # dSprites', 3D Shapes' or MPI3D's own file: read with its factors
        return load_factor_file(path, kind, seed=data.split_seed, progress=progress)
    shared = image_options(data)
    if path.is_dir():
        return load_image_folder(path, skip_bad=data.skip_bad, progress=progress, **shared)
    if path.suffix.lower() in (".npy", ".npz"):
        return load_image_file(path, **shared)
    if not path.exists():
        raise DataError(f"{path}: no such folder or file (data.data_dir)")
    raise DataError(f"{path}: neither a folder of images nor an .npy / .npz / .h5 file (data.data_dir)")


def save_arrays(images: Any, cache_dir: str | os.PathLike | None = None) -> Path:
    """Keep in-memory images (an ImageDataset) as an .npz in the cache, named by their content.

    A run trained on arrays passed from Python records this file as its data, so `vaelab evaluate`,
    figures and the explorer can read the same images later from the shell.
    """
    from .npzfile import write_npz_atomic

    arrays = {key: np.ascontiguousarray(getattr(images, key)) for key in ARRAY_SPLITS
              if getattr(images, key) is not None}
    arrays["label_names"] = np.array(images.label_names or [], dtype=str)
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(key.encode() + arrays[key].tobytes() + str(arrays[key].shape).encode())
    path = Path(cache_dir or default_cache_dir()) / "images" / f"arrays-{digest.hexdigest()[:16]}.npz"
    if not path.exists():
        write_npz_atomic(path, arrays, arrays, check=_same_arrays, keys=tuple(arrays))
    return path


def _same_arrays(read: dict[str, np.ndarray], written: dict[str, np.ndarray], where: str) -> None:
    """The re-read temp file holds exactly what was written (else it is not published)."""
    for key, array in written.items():
        if read[key].shape != array.shape or not np.array_equal(read[key], array):
            raise DataError(f"{where}: {key} reads back different from what was written")

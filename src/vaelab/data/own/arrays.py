"""Images given as arrays: in memory (numpy, torch) or in an .npy / .npz file.

Accepted images: (N, H, W), (N, H, W, C) or (N, C, H, W) with C in 1, 3, 4; uint8 0..255,
or float in [0, 1] (rounded to uint8 as round(x * 255)). The channel axis is the one of
axes 1 and 3 whose length is 1, 3 or 4. When both are (e.g. (N, 3, 4, 4), or (N, 1, 28, 1)),
the stated rule is: a torch tensor is channel-first (N, C, H, W), torch's convention, and
anything else is channel-last (N, H, W, C), numpy's and Pillow's; ``layout`` overrides it.
Four channels are RGBA and are composited on ``background``.

An .npz holds ``x`` (or ``images``, ``X``, ``arr_0``) with optional ``y`` (or ``labels``,
``Y``), or the splits ``x_train``, ``y_train``, ``x_val``, ``y_val``, ``x_test``, ``y_test``
(only ``x_train`` required), and optionally ``label_names`` (strings). Nothing is unpickled:
an .npz member or .npy holding Python objects is refused.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DataError
from ..npzfile import read_npy_header, read_npz
from .dataset import TEST, TRAIN, VAL, ImageDataset, assemble, split_by_rank
from .decode import WHITE, DecodeOptions, check_unit_range, convert_image

LAYOUTS: tuple[str, ...] = ("NHW", "NHWC", "NCHW")
CHANNEL_COUNTS: tuple[int, ...] = (1, 3, 4)
X_KEYS: tuple[str, ...] = ("x", "images", "X", "arr_0")
Y_KEYS: tuple[str, ...] = ("y", "labels", "Y")
SPLIT_KEYS: tuple[str, ...] = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
# Labels are class indices, with a name each ("0", "1", ... by default): a label of 2**40 would
# ask for 10^12 names. Far more classes than any labelled image set has.
MAX_CLASSES = 2**16


def load_image_arrays(
    x: Any, y: Any = None, *, x_val: Any = None, y_val: Any = None, x_test: Any = None,
    y_test: Any = None, label_names: Sequence[str] | None = None, layout: str | None = None,
    image_size: Sequence[int] | None = None, resize_mode: str = "resize",
    channels: int | None = None, background: Sequence[int] = WHITE,
    val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
    name: str = "arrays", source: str = "arrays",
) -> ImageDataset:
    """Arrays or tensors of images (and labels) as an :class:`ImageDataset`.

    Given only ``x`` (and ``y``), the images are split by ``val_fraction`` and
    ``test_fraction`` (seeded); given ``x_val`` or ``x_test`` too, those are the splits, as
    they are. Labels are integers (N,) in 0..MAX_CLASSES-1; ``label_names`` defaults to "0", "1",
    ... up to the largest label. image_size, resize_mode, channels and background act as
    for a folder (see :func:`vaelab.data.own.folder.load_image_folder`); channels None keeps 1
    and turns 3 or 4 into 3.
    """
    options = DecodeOptions(None if image_size is None else tuple(image_size), resize_mode,
                            channels, tuple(background))
    given = {"x_train": x, "y_train": y, "x_val": x_val, "y_val": y_val, "x_test": x_test,
             "y_test": y_test}
    images = {key: _nchw_uint8(value, layout, f"{source} {key}")
              for key, value in given.items() if key.startswith("x") and value is not None}
    labels = {key: _labels(value, f"{source} {key}")
              for key, value in given.items() if key.startswith("y") and value is not None}
    if x_val is None and x_test is None:
        images, labels = _split(images["x_train"], labels.get("y_train"), val_fraction,
                                test_fraction, seed, source)
    images = {key: _convert(value, options, f"{source} {key}") for key, value in images.items()}
    return _assemble(name, source, images, labels, label_names)


def load_image_file(path: str | os.PathLike, **options: Any) -> ImageDataset:
    """An .npy (images only) or .npz (see the module docstring) as an :class:`ImageDataset`.

    ``options``: as :func:`load_image_arrays` takes them (layout, image_size, ...).
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        arrays = {"x": _read_npy(path)}
    elif path.suffix.lower() == ".npz":
        arrays = _read_npz_images(path)
    else:
        raise DataError(f"{path}: not an .npy or .npz file")
    names = arrays.pop("label_names", None)
    if names is not None:
        options.setdefault("label_names", [str(n) for n in np.ravel(names)])
    if "x_train" in arrays:
        x = arrays.pop("x_train")
        y = arrays.pop("y_train", None)
        return load_image_arrays(x, y, **arrays, name=path.stem, source=f"file {path}", **options)
    return load_image_arrays(arrays["x"], arrays.get("y"), name=path.stem, source=f"file {path}",
                             **options)


def _read_npy(path: Path) -> np.ndarray:
    """An .npy, memory-mapped (a header claiming more than the file holds fails, costing nothing).

    The header is checked first by the parser the .npz members go through: numpy's own lets
    some malformed headers out as tokenize.TokenError and negative sizes as OverflowError.
    """
    try:
        with open(path, "rb") as fh:
            read_npy_header(fh, f"{path}: unreadable .npy")
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: unreadable .npy: {' '.join(str(exc).split())}") from exc


def _read_npz_images(path: Path) -> dict[str, np.ndarray]:
    """The image, label and name members of an .npz, by the keys the module docstring lists."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = {name.removesuffix(".npy") for name in zf.namelist()}
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: unreadable .npz: {exc}") from exc
    if "x_train" in members:
        keys = [key for key in SPLIT_KEYS if key in members]
    else:
        x_key = next((key for key in X_KEYS if key in members), None)
        if x_key is None:
            raise DataError(f"{path}: no images: expected a member named {' or '.join(X_KEYS)}, or "
                            f"x_train (with y_train, x_test, ...); found {', '.join(sorted(members))}")
        y_key = next((key for key in Y_KEYS if key in members), None)
        keys = [x_key] + ([y_key] if y_key else [])
    names_key = next((key for key in ("label_names", "names") if key in members), None)
    arrays = read_npz(path, keys + ([names_key] if names_key else []))
    renamed = {"x" if key in X_KEYS else "y" if key in Y_KEYS else key: value
               for key, value in arrays.items() if key != names_key}
    if names_key:
        renamed["label_names"] = arrays[names_key]
    return renamed


def _nchw_uint8(array: Any, layout: str | None, where: str) -> np.ndarray:
    """Images as uint8 (N, C, H, W), C in 1, 3, 4, from any accepted layout and dtype."""
    is_tensor = type(array).__module__.startswith("torch")
    values = array.detach().cpu().numpy() if is_tensor else np.asarray(array)
    layout = layout or _guess_layout(values.shape, is_tensor, where)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if values.ndim != len(layout):
        raise DataError(f"{where}: shape {values.shape} does not match layout {layout}")
    if layout == "NHW":
        values = values[:, np.newaxis]
    elif layout == "NHWC":
        values = values.transpose(0, 3, 1, 2)
    if values.shape[1] not in CHANNEL_COUNTS:
        raise DataError(f"{where}: {values.shape[1]} channels; images must have 1, 3 or 4")
    if 0 in values.shape[2:]:  # no image to train on, and nothing Pillow could resize
        raise DataError(f"{where}: images of {values.shape[2]} x {values.shape[3]} pixels (H x W); "
                        f"each side must be at least 1")
    return np.ascontiguousarray(_to_uint8(values, where))


def _guess_layout(shape: tuple[int, ...], is_tensor: bool, where: str) -> str:
    """NHW for 3 axes; for 4, the axis (1 or 3) of length 1, 3 or 4; both: see the module rule."""
    if len(shape) == 3:
        return "NHW"
    if len(shape) != 4:
        raise DataError(f"{where}: shape {shape}; images must be (N, H, W), (N, H, W, C) or (N, C, H, W)")
    first, last = shape[1] in CHANNEL_COUNTS, shape[3] in CHANNEL_COUNTS
    if first and last:
        return "NCHW" if is_tensor else "NHWC"
    if first or last:
        return "NCHW" if first else "NHWC"
    raise DataError(f"{where}: shape {shape} has no channel axis of length 1, 3 or 4 "
                    f"(as axis 1 or 3); images must be (N, H, W), (N, H, W, C) or (N, C, H, W)")


def _to_uint8(values: np.ndarray, where: str) -> np.ndarray:
    """uint8 as it is; float in [0, 1] as round(x * 255); every other dtype refused."""
    if values.dtype == np.uint8:
        return values
    if np.issubdtype(values.dtype, np.floating):
        check_unit_range(values, where)
        return np.rint(values * 255.0).astype(np.uint8)
    raise DataError(f"{where}: dtype {values.dtype}; images must be uint8 (0..255) or float in [0, 1]")


def _labels(array: Any, where: str) -> np.ndarray:
    """Labels as int64 (N,): non-negative integers."""
    is_tensor = type(array).__module__.startswith("torch")
    values = array.detach().cpu().numpy() if is_tensor else np.asarray(array)
    if values.ndim != 1 or not (np.issubdtype(values.dtype, np.integer) or values.dtype == bool):
        raise DataError(f"{where}: labels must be integers of shape (N,), got {values.shape} {values.dtype}")
    if values.size and values.min() < 0:
        raise DataError(f"{where}: labels must be non-negative, found {values.min()}")
    if values.size and values.max() >= MAX_CLASSES:  # checked before int64 could wrap a uint64
        raise DataError(f"{where}: labels must be below {MAX_CLASSES:,} (a class each), found {values.max()}")
    return values.astype(np.int64)


def _split(x: np.ndarray, y: np.ndarray | None, val_fraction: float, test_fraction: float,
           seed: int, where: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """x (and y) cut into train, val and test by seeded fractions, each in its original order."""
    if y is not None and len(y) != len(x):
        raise DataError(f"{where}: {len(x)} images but {len(y)} labels")
    split = split_by_rank([str(i) for i in range(len(x))], val_fraction, test_fraction, seed)
    parts = {"train": split == TRAIN, "val": split == VAL, "test": split == TEST}
    images = {f"x_{name}": x[mask] for name, mask in parts.items()}
    labels = {} if y is None else {f"y_{name}": y[mask] for name, mask in parts.items()}
    return images, labels


def _convert(images: np.ndarray, options: DecodeOptions, where: str) -> np.ndarray:
    """Resize and change channels per image through Pillow, as for files; as-is when nothing to do."""
    channels = options.channels or (1 if images.shape[1] == 1 else 3)
    if options.image_size in (None, images.shape[2:]) and channels == images.shape[1]:
        return images
    if len(images) == 0:
        return np.zeros((0, channels, *(options.image_size or images.shape[2:])), np.uint8)
    resolved = DecodeOptions(options.image_size, options.resize_mode, channels, options.background)
    modes = {1: "L", 3: "RGB", 4: "RGBA"}
    mode = modes[images.shape[1]]
    converted = [convert_image(Image.fromarray(_hwc(image), mode), resolved, f"{where}[{i}]")
                 for i, image in enumerate(images)]
    return np.stack(converted)


def _hwc(image: np.ndarray) -> np.ndarray:
    """(C, H, W) to what Image.fromarray takes: (H, W) for grey, (H, W, C) otherwise."""
    return image[0] if image.shape[0] == 1 else np.ascontiguousarray(image.transpose(1, 2, 0))


def _assemble(name: str, source: str, images: dict[str, np.ndarray], labels: dict[str, np.ndarray],
              label_names: Sequence[str] | None) -> ImageDataset:
    """Check the splits agree (shape, labels) and stack them in split order."""
    splits = ("train", "val", "test")
    shape = images["x_train"].shape[1:]
    xs = [images.get(f"x_{s}", np.zeros((0, *shape), np.uint8)) for s in splits]
    for split, x in zip(splits, xs, strict=True):
        if x.shape[1:] != shape:
            raise DataError(f"{source}: x_{split} images are {x.shape[1:]}, x_train's are {shape}")
    labelled = "y_train" in labels
    ys = [labels.get(f"y_{s}", np.zeros(0, np.int64)) for s in splits] if labelled else None
    _check_labels(source, xs, ys, labels, labelled)
    all_labels = np.concatenate(ys) if labelled else None
    names = _label_names(source, all_labels, label_names)
    return assemble(name, source, np.concatenate(xs), all_labels, [len(x) for x in xs], names)


def _check_labels(source: str, xs: list[np.ndarray], ys: list[np.ndarray] | None,
                  labels: dict[str, np.ndarray], labelled: bool) -> None:
    """Every split labelled or none, each with as many labels as images."""
    if not labelled and labels:
        raise DataError(f"{source}: {', '.join(sorted(labels))} given without y_train")
    for split, x, y in zip(("train", "val", "test"), xs, ys or [None] * 3, strict=True):
        if y is not None and len(y) != len(x):
            raise DataError(f"{source}: x_{split} has {len(x)} images but y_{split} {len(y)} labels")


def _label_names(source: str, labels: np.ndarray | None,
                 label_names: Sequence[str] | None) -> tuple[str, ...]:
    """The given names (one per label value at least), or "0", "1", ... by default."""
    if labels is None:
        return ()
    n_classes = int(labels.max()) + 1 if labels.size else 0
    if label_names is None:
        return tuple(str(i) for i in range(n_classes))
    if len(label_names) < n_classes:
        raise DataError(f"{source}: {len(label_names)} label names for labels up to {n_classes - 1}")
    return tuple(str(n) for n in label_names)

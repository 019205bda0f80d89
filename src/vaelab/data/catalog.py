"""The data sets vaelab knows, one entry each: the one place their facts are written.

Config validation (sizes, classes, image sides), the model (input shape), the readers in this
package (shapes and row counts they check) and the figures (class names) all read them here.
Adding a data set starts with an entry in `DATASETS`; its readers live in `sources.py`.
This module imports nothing, so any module may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PixelKind = Literal["grey", "colour"]
""""grey": one channel of grey levels, which the dynamic and static views binarize as MNIST is;
"colour": three channels (RGB)."""


@dataclass(frozen=True)
class DatasetInfo:
    """What is fixed about a data set, whichever source serves it."""

    name: str
    image_shape: tuple[int, int, int]  # (C, H, W)
    train_size: int  # images in the official training split (validation is taken from its end)
    test_size: int
    n_classes: int  # labels 0..n_classes-1
    label_names: tuple[str, ...]  # display name of each label, in label order
    pixels: PixelKind


_DIGITS = tuple(str(digit) for digit in range(10))
_FASHION = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
            "ankle boot")
_CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

DATASETS: dict[str, DatasetInfo] = {info.name: info for info in (
    DatasetInfo("mnist", (1, 28, 28), 60_000, 10_000, 10, _DIGITS, "grey"),
    DatasetInfo("fashion-mnist", (1, 28, 28), 60_000, 10_000, 10, _FASHION, "grey"),
    DatasetInfo("cifar10", (3, 32, 32), 50_000, 10_000, 10, _CIFAR10, "colour"),
)}

IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {name: info.image_shape for name, info in DATASETS.items()}
"""(C, H, W) by data set name: what a model is built for (`model.IMAGE_SHAPES` re-exports it)."""

IMAGES = "images"
"""data.name of a user's own images (a folder, an .npy/.npz file or arrays): their shape, size and
labels are facts of the data, read when it is loaded and recorded in the run's config."""

AUTO = "auto"
"""data.binarization / model.likelihood chosen from the data when it is loaded (see
`likelihoods.likelihood_for_data`), and recorded in the run's config."""


def image_shape(data: object) -> tuple[int, int, int]:
    """(C, H, W) of the images a data config describes (a user's images: as resolved when loaded)."""
    name = getattr(data, "name")
    if name != IMAGES:
        return DATASETS[name].image_shape
    size, channels = list(getattr(data, "image_size")), getattr(data, "channels")
    if len(size) != 2 or not channels:
        raise ValueError(f"data.image_size / data.channels: not resolved yet for {IMAGES} "
                         "(they are set from the images when training starts)")
    return (channels, size[0], size[1])


def label_names(data: object) -> tuple[str, ...]:
    """The display name of each label of the data a data config describes."""
    name = getattr(data, "name")
    return tuple(getattr(data, "label_names")) if name == IMAGES else DATASETS[name].label_names


def known_label_names(data_name: str | None) -> tuple[str, ...]:
    """The display name of each label of a known data set; () for any other name (a user's images,
    whose names come with the data, or none)."""
    info = DATASETS.get(data_name or "")
    return info.label_names if info else ()

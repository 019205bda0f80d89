"""Training, validation and test images held on the training device, in one of four views.

- `dynamic`: the training images are re-binarized as Bernoulli(x/255) at every draw, which
  training makes once an epoch (the likelihood literature's protocol); validation and test
  images are binarized once, with a fixed seed, so that evaluations are comparable across
  epochs and runs.
- `static`: all images binarized once with `static_seed`.
- `grey`: x/255 in [0, 1].
- `binary`: images that are already {0,1} (dSprites), kept as they are: their own binarization.
  A binary data set is always in this view (`pipeline.fit_to_factors` records it so); other data
  cannot be (`make_views` refuses it).

Images stay uint8 on the device; the float batch is made there, so no DataLoader and no
host-to-device copy sits in the training loop.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..config import ConfigError, DataConfig
from .catalog import BINARY, drawn_inverted, known_label_names, not_binary

if TYPE_CHECKING:
    from .factors import FactorGrid
    from .sources import RawDataset


@dataclass
class ImageSet:
    """pixels: (n, n_pixels) uint8, either 0..255 or {0,1} (`binary`); labels: (n,) int64;
    factors: (n, k) int64 factor levels of each image (a factor data set, see factors.py), else None."""

    pixels: torch.Tensor
    labels: torch.Tensor
    resample: bool  # True: binarize anew at every draw (pixels are 0..255)
    binary: bool  # True: pixels are {0,1}
    factors: torch.Tensor | None = None
    # Built by the first `draw` of a sparse set (see `_binarized`): the flat positions and the
    # probabilities of the pixels strictly between 0 and 255, and the binarized set they are drawn into.
    _uncertain: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = field(default=None, repr=False,
                                                                                compare=False)

    def __len__(self) -> int:
        return self.pixels.shape[0]

    def batch(self, index: torch.Tensor | slice, generator: torch.Generator | None = None) -> torch.Tensor:
        """The float batch (len(index), n_pixels) in [0, 1] (in {0, 1} for binarized views)."""
        pixels = self.pixels[index] if isinstance(index, slice) else self.pixels.index_select(0, index)
        if self.binary:
            return pixels.float()
        grey = pixels.float().div_(255.0)
        if not self.resample:
            return grey
        # P(u < p) = p: the same Bernoulli draw as torch.bernoulli, several times faster on a CPU.
        u = torch.rand(grey.shape, generator=generator, device=grey.device)
        return (u < grey).float()

    def probabilities(self, index: torch.Tensor) -> torch.Tensor:
        """(len(index), n_pixels) in [0, 1]: each pixel's probability of being on, not binarized (grey / 255)."""
        pixels = self.pixels.index_select(0, index).float()
        return pixels if self.binary else pixels.div_(255.0)

    def draw(self, index: torch.Tensor, generator: torch.Generator | None = None,
             out: torch.Tensor | None = None) -> ImageSet:
        """The images at `index` (1-d, any order) as one draw, in that order.

        A resampled (dynamic) view comes back binarized: every pixel an independent
        Bernoulli(x/255) drawn from `generator`, the same distribution `batch` draws from.
        Other views come back as they are. A training epoch draws all its images this way
        at once: one pass over the set instead of many small ones, and on a CPU only the
        pixels whose outcome is uncertain (0 < x < 255: a fifth of MNIST's) draw a number.
        `out`: a (len(index), n_pixels) uint8 tensor to write the images into, which a training
        loop reuses from epoch to epoch (a fresh 47 MB for MNIST costs 20 ms of page faults).
        """
        labels = self.labels.index_select(0, index)
        factors = None if self.factors is None else self.factors.index_select(0, index.to(self.factors.device))
        if out is not None and (out.shape != (len(index), self.pixels.shape[1]) or out.dtype != torch.uint8):
            raise ValueError(f"draw: out must be uint8 of shape {(len(index), self.pixels.shape[1])}, "
                             f"not {out.dtype} {tuple(out.shape)}")
        source = self._binarized(generator) if self.resample else self.pixels
        return ImageSet(torch.index_select(source, 0, index, out=out), labels, resample=False,
                        binary=self.binary or self.resample, factors=factors)

    def _binarized(self, generator: torch.Generator | None) -> torch.Tensor:
        """All pixels binarized once, (n, n_pixels) uint8 in {0, 1}, in the set's order.

        On a sparse set the result is a buffer this set keeps and the next call overwrites.
        """
        if self._uncertain is None:
            self._uncertain = (torch.empty(0, dtype=torch.long), torch.empty(0), torch.empty(0))
            flat = self.pixels.reshape(-1)
            # A GPU draws every pixel as fast. So does a CPU for a set of mostly grey pixels, where
            # the positions (8 bytes each) would outweigh the images.
            if self.pixels.device.type == "cpu":
                uncertain = flat.sub(1).lt_(254)  # uint8 arithmetic wraps 0 to 255: true for 1..254
                if uncertain.sum() <= flat.numel() // 4:
                    at = uncertain.nonzero().squeeze(1)
                    # x = 0 and x = 255 are certain (Bernoulli(0), Bernoulli(1)): written once here;
                    # every call overwrites all the uncertain positions, so they never need resetting
                    self._uncertain = (at, flat.index_select(0, at).float().div_(255.0),
                                       self.pixels.eq(255).view(torch.uint8))
        at, probability, binary = self._uncertain
        if not at.numel():
            return torch.cat([self.batch(slice(start, start + _DRAW_ROWS), generator).to(torch.uint8)
                              for start in range(0, len(self), _DRAW_ROWS)])
        # In chunks that stay in cache; uniform_ on consecutive chunks draws the same stream as one rand.
        chunk = min(_DRAW_CHUNK, at.numel())
        uniform, drawn = torch.empty(chunk, device=at.device), torch.empty(chunk, dtype=torch.bool, device=at.device)
        flat = binary.view(-1)
        for start in range(0, at.numel(), chunk):
            size = min(chunk, at.numel() - start)
            u = uniform[:size].uniform_(generator=generator)
            bits = torch.lt(u, probability[start:start + size], out=drawn[:size])
            flat.index_copy_(0, at[start:start + size], bits.view(torch.uint8))
        return binary

    def batches(self, batch_size: int, generator: torch.Generator | None = None,
                shuffle: bool = False) -> Iterator[torch.Tensor]:
        """All images once, in order or shuffled by `generator`."""
        n = len(self)
        order = torch.randperm(n, generator=generator, device=self.pixels.device) if shuffle else None
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size] if shuffle else slice(start, start + batch_size)
            yield self.batch(index, generator)

    def mean_image(self) -> torch.Tensor:
        """(n_pixels,) in [0, 1]: the mean intensity, which is also the mean of the binarized pixels."""
        # summed in blocks: a float copy of a large set (dSprites: 3 GB of bytes) would not fit in memory
        total = torch.zeros(self.pixels.shape[1], dtype=torch.float64, device=self.pixels.device)
        for start in range(0, len(self), _DRAW_ROWS):
            total += self.pixels[start:start + _DRAW_ROWS].sum(0, dtype=torch.float64)
        mean = (total / max(1, len(self))).float()
        return mean if self.binary else mean / 255.0

    def to(self, device: torch.device | str) -> ImageSet:
        factors = None if self.factors is None else self.factors.to(device)
        return ImageSet(self.pixels.to(device), self.labels.to(device), self.resample, self.binary, factors)


_DRAW_ROWS = 4096  # images binarized at a time when every pixel draws (bounds the float temporaries)
_DRAW_CHUNK = 1 << 20  # uncertain pixels drawn at a time on a sparse set (4 MB of uniforms)


@dataclass
class ImageData:
    """The three splits of one data set in one view."""

    name: str
    binarization: str
    source: str
    image_shape: tuple[int, int, int]  # (channels, height, width)
    train: ImageSet
    val: ImageSet
    test: ImageSet
    label_names: tuple[str, ...] = ()  # the name of each label
    labelled: bool = True  # False: the images came without labels (their labels are all 0)
    drawn_inverted: bool = False  # figures draw it dark on white (`catalog.drawn_inverted` of data.name)
    factors: FactorGrid | None = None  # the grid of factors that made the images (dSprites, ...), else None

    @property
    def n_pixels(self) -> int:
        c, h, w = self.image_shape
        return c * h * w


def binarize(images: torch.Tensor, seed: int) -> torch.Tensor:
    """uint8 0..255 -> uint8 {0,1}, pixel i is 1 with probability x_i/255, reproducible from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(images.float() / 255.0, generator=generator).to(torch.uint8)


def make_views(raw: Any, config: DataConfig, device: torch.device | str = "cpu",
               train_subset: int = 0) -> ImageData:
    """Split raw arrays into train/val/test in the configured view, on `device`.

    The validation split is the raw data's own (a user's images: their val/ folder or fraction),
    else the last `config.val_size` training images (for a user's images, a seeded `val_fraction`
    of them). Binarized views binarize the splits they fix once with `binarization_seed`.
    """
    splits = _splits(raw, config)
    factors = _split_factors(raw)
    if train_subset:
        splits["train"] = tuple(t[:train_subset] for t in splits["train"])
        factors["train"] = None if factors["train"] is None else factors["train"][:train_subset]
    # Binary images ({0,1}: dSprites) are the same in every view: binarizing them changes nothing, and
    # drawing a number per pixel to do so would cost as much as the training step.
    binary = getattr(raw, "binary", False)
    if config.binarization == BINARY and not binary:
        raise ConfigError(not_binary(raw.name))
    view = _binary if binary else _view
    sets = {name: view(name, pixels, labels, config) for name, (pixels, labels) in splits.items()}
    for name, levels in factors.items():
        sets[name].factors = levels
    shape = tuple(raw.x_train.shape[1:]) if raw.x_train.ndim == 4 else (1, *raw.x_train.shape[1:3])
    labelled = getattr(raw, "y_train", None) is not None
    names = tuple(getattr(raw, "label_names", ()) or known_label_names(raw.name))
    return ImageData(raw.name, config.binarization, raw.source, shape,
                     **{name: s.to(device) for name, s in sets.items()}, label_names=names, labelled=labelled,
                     drawn_inverted=drawn_inverted(config.name), factors=getattr(raw, "factors", None))


def _split_factors(raw: Any) -> dict[str, torch.Tensor | None]:
    """{split: (n, k) int64 factor levels of its images, or None} (a FactorDataset has them)."""
    if not hasattr(raw, "split_factors"):
        return {"train": None, "val": None, "test": None}
    return {split: torch.from_numpy(raw.split_factors(split)) for split in ("train", "val", "test")}


def _splits(raw: Any, config: DataConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{split: (pixels (n, n_pixels) uint8, labels (n,) int64)}; images without labels get label 0."""
    def pair(x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        with warnings.catch_warnings():
            # A user's images are a read-only memory map of the cache (larger than memory stays
            # on disk); nothing writes into the pixels, so torch's warning about that is moot.
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            pixels = torch.from_numpy(np.ascontiguousarray(x)).reshape(len(x), -1)
        labels = torch.zeros(len(x), dtype=torch.long) if y is None else torch.from_numpy(np.asarray(y)).long()
        return pixels, labels

    train, test = pair(raw.x_train, raw.y_train), pair(raw.x_test, raw.y_test)
    if len(getattr(raw, "x_val", ())):
        return {"train": train, "val": pair(raw.x_val, raw.y_val), "test": test}
    if hasattr(raw, "x_val"):  # a user's images with train/ and test/ folders but no val/
        n_val = max(1, round(config.val_fraction * len(train[0])))
        # A seeded draw, not the tail: a folder's files come in class order, and the last ones
        # would all be of one class.
        order = torch.randperm(len(train[0]), generator=torch.Generator().manual_seed(config.split_seed))
        fit, val = order[n_val:].sort().values, order[:n_val].sort().values
        return {"train": (train[0][fit], train[1][fit]), "val": (train[0][val], train[1][val]), "test": test}
    n_fit = len(train[0]) - config.val_size
    if n_fit < 1:
        raise ConfigError(f"data.val_size={config.val_size} leaves no training images out of {len(train[0])}")
    return {"train": (train[0][:n_fit], train[1][:n_fit]), "val": (train[0][n_fit:], train[1][n_fit:]),
            "test": test}


def _view(split: str, pixels: torch.Tensor, labels: torch.Tensor, config: DataConfig) -> ImageSet:
    return VIEWS[config.binarization](split, pixels, labels, config)


def binarization_seed(config: DataConfig, split: str) -> int | None:
    """The seed `split`'s images are binarized with once: `dynamic` test `eval_seed`, validation
    `eval_seed + 1`; `static` train, validation, test `static_seed` + 0, 1, 2. None where they are
    not binarized once (`dynamic` training images, `grey`, `binary`)."""
    if config.binarization == "dynamic" and split != "train":
        return config.eval_seed + {"test": 0, "val": 1}[split]
    if config.binarization == "static":
        return config.static_seed + {"train": 0, "val": 1, "test": 2}[split]
    return None


def _dynamic(split: str, pixels: torch.Tensor, labels: torch.Tensor, config: DataConfig) -> ImageSet:
    if split == "train":
        return ImageSet(pixels, labels, resample=True, binary=False)
    return ImageSet(binarize(pixels, binarization_seed(config, split)), labels, resample=False, binary=True)


def _static(split: str, pixels: torch.Tensor, labels: torch.Tensor, config: DataConfig) -> ImageSet:
    return ImageSet(binarize(pixels, binarization_seed(config, split)), labels, resample=False, binary=True)


def _binary(split: str, pixels: torch.Tensor, labels: torch.Tensor, config: DataConfig) -> ImageSet:
    """Images already {0,1} (a binary data set), whatever data.binarization: they are their own binarization."""
    return ImageSet(pixels, labels, resample=False, binary=True)


def _grey(split: str, pixels: torch.Tensor, labels: torch.Tensor, config: DataConfig) -> ImageSet:
    return ImageSet(pixels, labels, resample=False, binary=False)


# data.binarization -> (split, uint8 pixels, labels, config) -> that split's ImageSet (see the module docstring)
VIEWS: dict[str, Callable[[str, torch.Tensor, torch.Tensor, DataConfig], ImageSet]] = {
    "dynamic": _dynamic,
    "static": _static,
    "grey": _grey,
    BINARY: _binary,
}

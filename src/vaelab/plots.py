"""Figures as PNG. Pixel intensity is the decoder's mean E[x|z], never a binarized sample.

Uses matplotlib's object API (no pyplot), so nothing depends on a display or global state.

`FIGURES`, a registry name -> function(FigureContext) -> Path, and `make_figures(run_dir)`,
which draws any of them for a run folder into RUN_DIR/figures/<name>.png.

Every figure is built by a `draw_*` function that returns a matplotlib `Figure` (so tests can
inspect it) and is written as PNG by `write_png`.

Every model variant is drawn: Gaussian, Laplace and categorical latents, two stochastic layers
(z = [z1, z2], the decoder reads z1) and conditional models (CVAE: every encode and decode gets
the labels). A figure that means nothing for a variant raises `FigureSkipped` with the reason.
Grey images are drawn ink-dark on white; colour images (3 channels) as they are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from torch.distributions import Distribution, Independent, Laplace, Normal, kl_divergence

from .data.views import ImageData
from .distributions import TwoStep, rsample
from .io import atomic_write_bytes
from .model import VAE


class FigureSkipped(Exception):
    """Raised by a figure that does not apply to this model or run; the message says why."""


# ---------------------------------------------------------------- model variants

PRIOR_NAMES = {"normal": "N(0, I)", "laplace": "Laplace(0, 1)"}
LABEL_NAMES = {
    "fashion-mnist": ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                      "bag", "ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}


def is_conditional(model: VAE) -> bool:
    """Does the model take labels y (a CVAE)?"""
    return getattr(model, "n_labels", 0) > 0


def is_categorical(model: VAE) -> bool:
    return model.config.latent == "categorical"


def is_two_layer(model: VAE) -> bool:
    return model.config.latent_dim2 > 0


def decoded_size(model: VAE) -> int:
    """How many leading entries of z the decoder reads: z1's size for a two-layer model, else all of z."""
    return model.latent.size


def prior_text(model: VAE) -> str:
    """p(z) in words: 'N(0, I)', 'Laplace(0, 1)', 'uniform over ...', 'p(z2) p(z1|z2), ...'."""
    config = model.config
    if is_categorical(model):
        return f"uniform over the {config.categories} classes of each of {config.latent_dim} variables"
    if is_two_layer(model):
        return f"p(z2) p(z1|z2) with p(z2) = {PRIOR_NAMES[config.prior]}"
    return PRIOR_NAMES[config.prior]


def latent_text(model: VAE) -> str:
    """The latent for a title: '2-D latent', '3-D Laplace latent', '4 x 10-class categorical latent', ..."""
    config = model.config
    if is_categorical(model):
        text = f"{config.latent_dim} x {config.categories}-class categorical latent"
    elif is_two_layer(model):
        text = f"two-layer {config.latent_dim}-D + {config.latent_dim2}-D latent"
    else:
        text = f"{config.latent_dim}-D {'Laplace ' if config.latent == 'laplace' else ''}latent"
    if not is_categorical(model) and config.prior != config.latent:
        text += f", {PRIOR_NAMES[config.prior]} prior"
    if is_conditional(model):
        text += ", conditioned on the label"
    return text


def class_names(data_name: str | None, classes: Sequence[int]) -> list[str]:
    """Display names of integer labels: the data set's names where known, else the numbers."""
    names = LABEL_NAMES.get(data_name or "")
    return [names[k] if names and k < len(names) else str(k) for k in classes]


def sample_prior(model: VAE, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """(n, latent_dim) draws of z ~ p(z) from `generator`, flattened as the decoder reads them."""
    return model.latent.flatten(rsample(model.prior(), (n,), generator))


def _generator(model: VAE, seed: int) -> torch.Generator:
    return torch.Generator(model.device).manual_seed(seed)


def decoder_input(model: VAE, z: torch.Tensor) -> torch.Tensor:
    """Flat z (n, latent_dim) as `model.decode_mean` takes it: (n, variables, categories) for categorical
    latents, whose `likelihood` flattens z itself (so it cannot take the flat z `encode_mean` returns)."""
    if is_categorical(model):
        return z.unflatten(-1, (model.config.latent_dim, model.config.categories))
    return z


@torch.no_grad()
def _decode(model: VAE, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """E[x|z(, y)]: flat z (n, latent_dim) -> (n, n_pixels); y: (n,) labels for a conditional model."""
    z = decoder_input(model, z)
    return model.decode_mean(z) if y is None else model.decode_mean(z, y)


@torch.no_grad()
def _encode(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """The posterior mean: (n, n_pixels) -> (n, latent_dim) (class probabilities for categorical latents)."""
    return model.encode_mean(x) if y is None else model.encode_mean(x, y)


def _posterior(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
    return model.posterior(x) if y is None else model.posterior(x, y)


def _needs_labels(model: VAE, y: torch.Tensor | None, what: str) -> None:
    if is_conditional(model) and y is None:
        raise ValueError(f"{what}: this is a conditional model; pass the images' labels")


# ---------------------------------------------------------------- image grids

GUTTER = 0.12  # intensity of the lines between cells: drawn light grey on the white page


def _gutter(images: np.ndarray) -> float:
    """Grey cells are drawn inverted (ink dark), colour cells as they are: the same light gutter in both."""
    return GUTTER if images.ndim == 3 else 1.0 - GUTTER


def tile(images: np.ndarray, rows: int, cols: int, pad: int = 2, gutter: float | None = None) -> np.ndarray:
    """(rows*cols, h, w) grey or (rows*cols, h, w, 3) colour in [0,1] -> one
    (rows*(h+pad)+pad, cols*(w+pad)+pad[, 3]) image.

    Gutters get intensity `gutter` (default: faint), so cells stay apart without a heavy frame.
    """
    n, h, w = images.shape[:3]
    if n != rows * cols:
        raise ValueError(f"tile: {n} images do not fill {rows}x{cols}")
    fill = _gutter(images) if gutter is None else gutter
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, *images.shape[3:]), fill, dtype=np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top:top + h, left:left + w] = image
    return grid


def write_png(fig: Figure, path: str | Path) -> Path:
    """Render `fig` to PNG bytes and write them atomically (a killed process leaves no torn file)."""
    path = Path(path)
    buffer = BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.1)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def image_grid_figure(grid: np.ndarray, title: str, row_labels: Sequence[str] = (),
                      scale: float = 0.04) -> Figure:
    """A figure showing `grid`, (H, W) grey or (H, W, 3) colour in [0,1]; axes in grid pixels.

    Grey: ink (1) dark on white (0). Colour: RGB as it is. The space above the grid grows with the
    title's lines, so a long title never covers the grid.
    """
    height, width = grid.shape[:2]
    head = 0.25 + 0.16 * (title.count("\n") + 1)  # inches: a 9-point line is ~0.15 inch
    fig = Figure(figsize=(width * scale, height * scale + head), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, height * scale / (height * scale + head)))
    if grid.ndim == 3:
        ax.imshow(grid, interpolation="nearest")
    else:
        ax.imshow(1.0 - grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    if row_labels:
        step = height / len(row_labels)
        ax.set_yticks([step * (i + 0.5) for i in range(len(row_labels))], labels=list(row_labels), fontsize=8)
    else:
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9, y=0.995, va="top")
    return fig


def as_images(pixels: torch.Tensor, image_shape: tuple[int, int, int]) -> np.ndarray:
    """(n, n_pixels) channel-major -> (n, h, w, 3) numpy for colour images, (n, h, w) otherwise (first channel)."""
    c, h, w = image_shape
    images = pixels.detach().float().cpu().reshape(-1, c, h, w).clamp(0.0, 1.0)
    if c == 3:
        return images.permute(0, 2, 3, 1).numpy()
    return images[:, 0].numpy()


def reconstruction_grid(originals: np.ndarray, reconstructions: np.ndarray,
                        per_row: int = 10) -> tuple[np.ndarray, int]:
    """(n, h, w[, 3]) twice -> (grid, pairs): rows of up to `per_row` originals, each above its reconstructions.

    A short last row is padded with cells of gutter intensity, so it reads as empty.
    """
    n, cell = len(originals), originals.shape[1:]
    cols = min(n, per_row)
    pairs = math.ceil(n / cols)
    blank = np.full((pairs * cols - n, *cell), _gutter(originals), dtype=np.float32)
    top = np.concatenate([originals, blank]).reshape(pairs, 1, cols, *cell)
    bottom = np.concatenate([reconstructions, blank]).reshape(pairs, 1, cols, *cell)
    cells = np.concatenate([top, bottom], axis=1).reshape(-1, *cell)
    return tile(cells, 2 * pairs, cols), pairs


def sample_row_classes(model: VAE, rows: int) -> list[int]:
    """The label each row of a conditional model's samples grid is decoded with: row r gets r mod n_labels."""
    return [r % model.n_labels for r in range(rows)]


@torch.no_grad()
def samples_grid(model: VAE, image_shape: tuple[int, int, int], n: int, seed: int = 0) -> np.ndarray:
    """n x n decoder means of z ~ p(z), tiled: (n*(h+2)+2, n*(w+2)+2[, 3]).

    A conditional model decodes row r with the label `sample_row_classes(model, n)[r]`.
    """
    z = sample_prior(model, n * n, _generator(model, seed))
    y = None
    if is_conditional(model):
        y = torch.tensor(sample_row_classes(model, n), device=model.device).repeat_interleave(n)
    return tile(as_images(_decode(model, z, y), image_shape), n, n)


@torch.no_grad()
def class_samples_grid(model: VAE, image_shape: tuple[int, int, int], per_class: int, seed: int = 0) -> np.ndarray:
    """A conditional model's (n_labels rows) x (per_class columns) decoder means: row k decoded with y = k,
    every cell from its own z ~ p(z). (n_labels*(h+2)+2, per_class*(w+2)+2[, 3])."""
    if not is_conditional(model):
        raise ValueError("class samples need a conditional model")
    y = torch.arange(model.n_labels, device=model.device).repeat_interleave(per_class)
    z = sample_prior(model, len(y), _generator(model, seed))
    return tile(as_images(_decode(model, z, y), image_shape), model.n_labels, per_class)


@torch.no_grad()
def reconstructions_of(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """E[x | z = mean of q(z|x(, y))(, y)]: (n, n_pixels) -> (n, n_pixels); y: (n,) labels of a CVAE."""
    _needs_labels(model, y, "reconstructions")
    return _decode(model, _encode(model, x, y), y)


@torch.no_grad()
def interpolation_grid(model: VAE, x: torch.Tensor, image_shape: tuple[int, int, int], steps: int,
                       y: torch.Tensor | None = None) -> np.ndarray:
    """x: (2m, n_pixels), y: (2m,) labels of a CVAE -> (m rows x steps) grid; row i walks in a straight
    line from the posterior mean of x[2i] to that of x[2i+1], decoded (for a CVAE) with y[2i] throughout."""
    if len(x) % 2:
        raise ValueError("interpolations need an even number of images (pairs)")
    _needs_labels(model, y, "interpolations")
    means = _encode(model, x, y)
    start, end = means[0::2], means[1::2]  # (m, latent)
    t = torch.linspace(0.0, 1.0, steps, device=means.device)[None, :, None]
    rows = len(start)
    z = (start[:, None] * (1 - t) + end[:, None] * t).reshape(rows * steps, -1)  # row-major (m, steps)
    row_y = None if y is None else y[0::2].repeat_interleave(steps)
    return tile(as_images(_decode(model, z, row_y), image_shape), rows, steps)


def interpolation_row_labels(pairs: int, y: torch.Tensor | None = None, data_name: str | None = None) -> list[str]:
    """'1→2', '3→4', ...; with ', y=<label of the first image>' for a CVAE."""
    labels = [f"{2 * i + 1}\u2192{2 * i + 2}" for i in range(pairs)]
    if y is None:
        return labels
    names = class_names(data_name, y[0::2].tolist())
    return [f"{label}, y={name}" for label, name in zip(labels, names)]


INTERPOLATION_LABEL_NOTE = ("decoded with the label of each row's first image throughout "
                            "(so the right end is image 2's code under image 1's label)")


# ---------------------------------------------------------------- the context every figure gets

MANIFOLD_RANGES = ("minmax", "quantile")
SCATTER_METHODS = ("pca", "tsne")
ACTIVE_THRESHOLD = 0.01  # a dimension is active when Var_x[E_q[z_j|x]] exceeds this (Burda et al., 2016)


@dataclass
class FigureContext:
    """What a figure may draw from; the fields after `title` have defaults, and `make_figures`
    takes any of them but model, data, out_dir and metrics as keyword options."""

    model: VAE  # in eval mode
    data: ImageData  # the run's data in its view; figures use the test split
    out_dir: Path  # RUN_DIR/figures
    title: str  # first title line: model, data and epoch
    metrics: list[dict[str, Any]] = field(default_factory=list)  # records of RUN_DIR/metrics.jsonl
    kl_per_dim: list[float] | None = None  # (KL units,) mean KL per dimension (per variable), from an evaluation
    seed: int = 0
    kl_source: str = ""  # where kl_per_dim came from, for the figure's title
    samples_n: int = 10
    class_samples_n: int = 5  # columns of class-samples: samples of each class (conditional models)
    reconstructions_n: int = 10
    reconstructions_random: bool = False
    interpolation_pairs: int = 5
    interpolation_steps: int = 25
    interpolations_random: bool = False
    manifold_n: int = 20
    manifold_range: str = "minmax"  # minmax of the test posterior means | quantile of the prior
    manifold_dims: tuple[int, int] | None = None  # None: (0, 1); the other dims held at 0 (two layers: their test mean)
    manifold_label: int = 0  # the label a conditional model's manifold is decoded with
    scatter_method: str = "pca"  # for latents of more than 2 dims: pca | tsne (needs scikit-learn)
    tsne_points: int = 2000  # t-SNE is quadratic-ish; it embeds a seeded subset of the test set
    batch_size: int = 1000  # test images per forward pass
    _means: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.manifold_range not in MANIFOLD_RANGES:
            raise ValueError(f"manifold_range: {self.manifold_range!r} is not one of {', '.join(MANIFOLD_RANGES)}")
        if self.scatter_method not in SCATTER_METHODS:
            raise ValueError(f"scatter_method: {self.scatter_method!r} is not one of {', '.join(SCATTER_METHODS)}")
        for name in ("samples_n", "class_samples_n", "reconstructions_n", "interpolation_pairs",
                     "interpolation_steps", "manifold_n", "tsne_points", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.manifold_dims is not None:
            self.manifold_dims = tuple(self.manifold_dims)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.data.image_shape

    @property
    def conditional(self) -> bool:
        return is_conditional(self.model)

    def test_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """All test images in order, (x (batch, n_pixels), y (batch,) or None for an unconditional model)."""
        test, device = self.data.test, self.model.device
        for start in range(0, len(test), self.batch_size):
            index = slice(start, start + self.batch_size)
            y = test.labels[index].to(device) if self.conditional else None
            yield test.batch(index).to(device), y

    @torch.no_grad()
    def test_means(self) -> torch.Tensor:
        """(n_test, latent_dim) posterior means of the test images (flattened class probabilities for
        categorical latents; [z1, z2] for two layers), each encoded with its label for a CVAE; computed once."""
        if self._means is None:
            self._means = torch.cat([_encode(self.model, x, y) for x, y in self.test_batches()])
        return self._means

    def _test_index(self, n: int, random: bool) -> torch.Tensor:
        n_test = len(self.data.test)
        if n > n_test:
            raise ValueError(f"asked for {n} test images, the test set has {n_test}")
        if random:
            return torch.randperm(n_test, generator=torch.Generator().manual_seed(self.seed))[:n]
        return torch.arange(n)

    def test_images(self, n: int, random: bool) -> torch.Tensor:
        """(n, n_pixels) test images on the model's device: the first n, or n drawn with `seed`."""
        return self.test_batch(n, random)[0]

    def test_batch(self, n: int, random: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x (n, n_pixels), y (n,) labels or None for an unconditional model), on the model's device:
        the first n test images, or n drawn with `seed`."""
        test = self.data.test
        index = self._test_index(n, random).to(test.pixels.device)
        y = test.labels[index].to(self.model.device) if self.conditional else None
        return test.batch(index).to(self.model.device), y

    def class_names(self, classes: Sequence[int]) -> list[str]:
        return class_names(self.data.name, classes)

    def headline(self, what: str) -> str:
        return f"{self.title}\n{what}"


# ---------------------------------------------------------------- grid figures

def _mean_note(model: VAE) -> str:
    """What 'posterior mean' means where it is not a point in a continuous latent."""
    return ";\nthe posterior mean of a categorical latent is its class probabilities" if is_categorical(model) else ""


def draw_samples(ctx: FigureContext) -> Figure:
    """n x n images decoded from z ~ p(z), decoder mean (a CVAE's rows labelled with their class)."""
    n, model = ctx.samples_n, ctx.model
    grid = samples_grid(model, ctx.image_shape, n, ctx.seed)
    what = f"{n} x {n} samples from the prior {prior_text(model)}, decoder mean"
    rows: list[str] = []
    if ctx.conditional:
        rows = ctx.class_names(sample_row_classes(model, n))
        what += ";\neach row decoded with the label on its left"
    return image_grid_figure(grid, ctx.headline(what), row_labels=rows)


def draw_class_samples(ctx: FigureContext) -> Figure:
    """A conditional model's samples of each class: one row per label, z ~ p(z), decoder mean."""
    if not ctx.conditional:
        raise FigureSkipped("class samples need a conditional model (model.conditional = true): "
                            "this decoder takes no label")
    model, per_class = ctx.model, ctx.class_samples_n
    grid = class_samples_grid(model, ctx.image_shape, per_class, ctx.seed)
    what = (f"{per_class} samples of each class: row y decoded with label y, each image from its own z ~ p(z),"
            f"\np(z) = {prior_text(model)}; decoder mean")
    return image_grid_figure(grid, ctx.headline(what), row_labels=ctx.class_names(range(model.n_labels)))


@torch.no_grad()
def draw_reconstructions(ctx: FigureContext) -> Figure:
    """Test images above their reconstructions E[x | z = mean of q(z|x)]."""
    n = ctx.reconstructions_n
    x, y = ctx.test_batch(n, ctx.reconstructions_random)
    recon = reconstructions_of(ctx.model, x, y)
    grid, pairs = reconstruction_grid(as_images(x, ctx.image_shape), as_images(recon, ctx.image_shape))
    which = f"{n} random test images (seed {ctx.seed})" if ctx.reconstructions_random else f"the first {n} test images"
    what = f"{which} ('input') and their reconstructions from the posterior mean, decoder mean ('recon.')"
    if ctx.conditional:
        what += ";\neach encoded and decoded with its own label"
    what += _mean_note(ctx.model)
    return image_grid_figure(grid, ctx.headline(what), row_labels=("input", "recon.") * pairs)


@torch.no_grad()
def draw_interpolations(ctx: FigureContext) -> Figure:
    """Decoder means along straight lines between the posterior means of pairs of test images."""
    pairs, steps = ctx.interpolation_pairs, ctx.interpolation_steps
    x, y = ctx.test_batch(2 * pairs, ctx.interpolations_random)
    grid = interpolation_grid(ctx.model, x, ctx.image_shape, steps, y)
    which = "random test images" if ctx.interpolations_random else "test images"
    what = f"interpolations between the posterior means of pairs of {which}, {steps} steps, decoder mean"
    if ctx.conditional:
        what += f";\nimages encoded with their own labels, {INTERPOLATION_LABEL_NOTE}"
    what += _mean_note(ctx.model)
    return image_grid_figure(grid, ctx.headline(what),
                             row_labels=interpolation_row_labels(pairs, y, ctx.data.name))


# ---------------------------------------------------------------- the manifold

def manifold_axis_values(n: int, mode: str, values: torch.Tensor | None = None,
                         prior: Distribution | None = None) -> torch.Tensor:
    """(n,) evenly spaced z values: over [min, max] of `values` ("minmax"), or F^-1 of the
    probabilities (i + 0.5) / n ("quantile"), so each value stands for an equal share of `prior`,
    a one-dimensional distribution with an `icdf` (default N(0, 1))."""
    if mode == "quantile":
        prior = Normal(0.0, 1.0) if prior is None else prior
        p = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        return prior.icdf(p).float()
    if mode == "minmax":
        if values is None or values.numel() == 0:
            raise ValueError("a minmax manifold axis needs the values it spans")
        return torch.linspace(values.min().item(), values.max().item(), n)
    raise ValueError(f"manifold range {mode!r} is not one of {', '.join(MANIFOLD_RANGES)}")


def manifold_grid(xs: torch.Tensor, ys: torch.Tensor, latent_dim: int, dims: tuple[int, int] = (0, 1),
                  held: torch.Tensor | None = None) -> torch.Tensor:
    """(len(ys) * len(xs), latent_dim) latent points, row-major as drawn: row r holds y = ys reversed[r]
    (largest y on top, as on a plot), column c holds x = xs[c]; the other dims hold `held`
    ((latent_dim,), default 0)."""
    held = torch.zeros(latent_dim) if held is None else held.float()
    z = held.expand(len(ys), len(xs), latent_dim).clone()
    z[:, :, dims[0]] = xs[None, :]
    z[:, :, dims[1]] = ys.flip(0)[:, None]
    return z.reshape(-1, latent_dim)


def prior_marginal(model: VAE, dim: int) -> Distribution:
    """p(z_dim), one-dimensional with an `icdf`, in float64, for a one-layer continuous latent."""
    prior = model.prior()
    if isinstance(prior, TwoStep):
        raise FigureSkipped("no quantile manifold for a two-layer model: its prior p(z1) = \u222b p(z2) p(z1|z2) "
                            "dz2 has no inverse CDF; use manifold_range='minmax'")
    base = prior.base_dist if isinstance(prior, Independent) else prior
    if not isinstance(base, (Normal, Laplace)):
        raise FigureSkipped(f"no quantile manifold: the prior's {type(base).__name__} has no inverse CDF here; "
                            "use manifold_range='minmax'")
    loc, scale = base.loc[dim].detach().cpu().double(), base.scale[dim].detach().cpu().double()
    return type(base)(loc, scale, validate_args=False)


def _manifold_dims(ctx: FigureContext) -> tuple[int, int]:
    """The two dims of the decoded part of z (z1 for two layers) that the manifold sweeps."""
    if is_categorical(ctx.model):
        raise FigureSkipped("no manifold: a categorical latent has no continuous plane to sweep")
    size = decoded_size(ctx.model)
    if size < 2:
        part = "z1" if is_two_layer(ctx.model) else "latent"
        raise FigureSkipped(f"no manifold for a {size}-D {part}: it needs two latent dimensions "
                            "(latent-scatter shows the 1-D codes)")
    dims = ctx.manifold_dims or (0, 1)
    if len(dims) != 2 or dims[0] == dims[1] or not all(0 <= d < size for d in dims):
        raise ValueError(f"manifold_dims: {dims} are not two different dims in 0..{size - 1}")
    return int(dims[0]), int(dims[1])


def _manifold_label(ctx: FigureContext) -> torch.Tensor | None:
    """The labels (manifold_n**2,) a CVAE's manifold is decoded with; None for an unconditional model."""
    if not ctx.conditional:
        return None
    label, n_labels = ctx.manifold_label, ctx.model.n_labels
    if not 0 <= label < n_labels:
        raise ValueError(f"manifold_label: {label} is not a label in 0..{n_labels - 1}")
    return torch.full((ctx.manifold_n ** 2,), label, device=ctx.model.device)


def _axis_name(ctx: FigureContext, dim: int) -> str:
    return f"z1[{dim}]" if is_two_layer(ctx.model) else f"z{dim}"


def _manifold_subtitle(ctx: FigureContext, dims: tuple[int, int]) -> str:
    n, model, size = ctx.manifold_n, ctx.model, decoded_size(ctx.model)
    if ctx.manifold_range == "minmax":
        over = "from min to max of the test posterior means"
    else:
        symbol, name = ("\u03a6", "N(0, 1)") if model.config.prior == "normal" else ("F", "Laplace(0, 1)")
        over = f"at {name} quantiles {symbol}\u207b\u00b9(p), p = {0.5 / n:.3g} .. {1 - 0.5 / n:.3g}"
    a, b = (_axis_name(ctx, d) for d in dims)
    text = f"decoder mean on a {n} x {n} grid of {a}, {b} {over}"
    if is_two_layer(model):
        text += "; z1 is the layer the decoder reads"
    lines = []
    if size > 2:
        chosen = "" if ctx.manifold_dims else " (dims 0, 1 by default; choose with manifold_dims)"
        where = ("of z1 held at their mean over the test posterior means" if is_two_layer(model)
                 else "held at 0, the prior mean")
        lines.append(f"the other {size - 2} latent dims {where}{chosen}")
    if ctx.conditional:
        label = ctx.class_names([ctx.manifold_label])[0]
        lines.append(f"decoded with label y = {label} (choose with manifold_label)")
    return "\n".join([text, *lines])


def _tick_every(n: int, at_most: int = 10) -> int:
    return math.ceil(n / at_most)


def _manifold_held(ctx: FigureContext) -> torch.Tensor | None:
    """(latent_dim,) values of the dims the manifold does not sweep: None (0, the prior mean) for one
    layer; for two layers, whose p(z1) is not centred at 0, the mean of the test posterior means."""
    return ctx.test_means().mean(0).cpu() if is_two_layer(ctx.model) else None


def _manifold_axes(ctx: FigureContext, dims: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(xs, ys), each (manifold_n,): the values of the two swept dims."""
    n = ctx.manifold_n
    if ctx.manifold_range == "minmax":
        means = ctx.test_means().cpu()
        return tuple(manifold_axis_values(n, "minmax", means[:, d]) for d in dims)
    return tuple(manifold_axis_values(n, "quantile", prior=prior_marginal(ctx.model, d)) for d in dims)


@torch.no_grad()
def draw_manifold(ctx: FigureContext) -> Figure:
    """Decoder means over a 2-D grid of latent values, the grid's z values on the axes."""
    dims = _manifold_dims(ctx)
    n = ctx.manifold_n
    y = _manifold_label(ctx)
    xs, ys = _manifold_axes(ctx, dims)
    z = manifold_grid(xs, ys, ctx.model.latent_dim, dims, _manifold_held(ctx))
    images = as_images(_decode(ctx.model, z.to(ctx.model.device), y), ctx.image_shape)
    grid = tile(images, n, n)
    fig = image_grid_figure(grid, ctx.headline(_manifold_subtitle(ctx, dims)), scale=0.025)
    ax = fig.axes[0]
    cell = ctx.image_shape[1] + 2  # tile's pad
    every = _tick_every(n)
    centers = [2 + cell * i + (cell - 2) / 2 - 0.5 for i in range(0, n, every)]
    ax.set_xticks(centers, labels=[f"{v:.2f}" for v in xs[::every].tolist()], fontsize=8)
    ax.set_yticks(centers, labels=[f"{v:.2f}" for v in ys.flip(0)[::every].tolist()], fontsize=8)
    ax.set_xlabel(_axis_name(ctx, dims[0]))
    ax.set_ylabel(_axis_name(ctx, dims[1]))
    return fig


# ---------------------------------------------------------------- the latent scatter

def pca_2d(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, d) -> ((n, 2) projections on the first two principal axes, (2,) their share of the variance)."""
    centered = points.double() - points.double().mean(0)
    _, s, vh = torch.linalg.svd(centered, full_matrices=False)
    explained = s**2 / (s**2).sum()
    return (centered @ vh[:2].T).float(), explained[:2].float()


def _tsne_2d(points: torch.Tensor, seed: int) -> torch.Tensor:
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise FigureSkipped("t-SNE needs scikit-learn, which is not installed (vaelab does not depend on it); "
                            "use scatter_method='pca', or install scikit-learn") from None
    embedded = TSNE(n_components=2, init="pca", random_state=seed).fit_transform(points.double().numpy())
    return torch.as_tensor(np.asarray(embedded), dtype=torch.float32)


def _label_names(ctx: FigureContext, labels: torch.Tensor) -> dict[int, str]:
    classes = torch.unique(labels).tolist()
    return dict(zip(classes, ctx.class_names(classes)))


def _scatter_by_label(ax: Any, xy: torch.Tensor, labels: torch.Tensor, names: dict[int, str], seed: int) -> None:
    """One scatter in a seeded random order, so no label is painted over all the others."""
    cmap = colormaps["tab10"]
    order = torch.randperm(len(xy), generator=torch.Generator().manual_seed(seed))
    xy, labels = xy[order].numpy(), labels[order].numpy()
    ax.scatter(xy[:, 0], xy[:, 1], c=[cmap(k % 10) for k in labels], s=3, alpha=0.6, linewidths=0, rasterized=True)
    handles = [Line2D([], [], marker="o", linestyle="", color=cmap(k % 10), label=name) for k, name in names.items()]
    ax.legend(handles=handles, title="label", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
              frameon=False)


def _strip_by_label(ax: Any, z: torch.Tensor, labels: torch.Tensor, names: dict[int, str], seed: int,
                    xlabel: str) -> None:
    """A 1-D code per label: a jittered strip of the posterior means, one row per label."""
    cmap = colormaps["tab10"]
    jitter = (torch.rand(len(z), generator=torch.Generator().manual_seed(seed)) - 0.5) * 0.6
    for k in names:
        mask = labels == k
        ax.scatter(z[mask].numpy(), (k + jitter[mask]).numpy(), s=3, alpha=0.5, linewidths=0,
                   color=cmap(k % 10), rasterized=True)
    ax.set_yticks(list(names), labels=list(names.values()))
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("label")


@dataclass
class ScatterPoints:
    """What the latent scatter shows: points (n, d), how to name them, whether to plot d == 2 as is."""

    points: torch.Tensor
    noun: str  # e.g. "posterior means", "class probabilities of q(z|x) (4 variables x 10 classes)"
    axis: str  # the name of a raw axis: "z" or "z1"
    raw_2d: bool = True  # False: always reduce (class probabilities are not coordinates to read)


def scatter_points(ctx: FigureContext) -> ScatterPoints:
    """The test set's codes as the scatter shows them: posterior means, z1's for two layers,
    class probabilities for categorical latents."""
    model, means = ctx.model, ctx.test_means().cpu()
    if is_categorical(model):
        config = model.config
        return ScatterPoints(means, f"class probabilities of q(z|x) ({config.latent_dim} variables x "
                                    f"{config.categories} classes)", "z", raw_2d=False)
    if is_two_layer(model):
        return ScatterPoints(means[:, :decoded_size(model)], "posterior means of z1 (the layer the decoder reads)",
                             "z1")
    return ScatterPoints(means, "posterior means", "z")


def _axis_label(axis: str, dim: int) -> str:
    return f"z1[{dim}]" if axis == "z1" else f"z{dim}"


def _reduce_2d(ctx: FigureContext, shown: ScatterPoints,
               labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str, str, str]:
    """(xy, labels, x label, y label, what), reducing points of more than 2 dims (or any class probabilities) to 2."""
    points, noun = shown.points, shown.noun
    d, n = points.shape[1], len(points)
    if d == 2 and shown.raw_2d:
        return (points, labels, _axis_label(shown.axis, 0), _axis_label(shown.axis, 1),
                f"{noun} of the {n} test images")
    if ctx.scatter_method == "pca":
        xy, explained = pca_2d(points)
        return (xy, labels, f"PC1 ({100 * explained[0]:.0f}% of variance)",
                f"PC2 ({100 * explained[1]:.0f}% of variance)",
                (f"PCA of the {d}-D {noun} of the {n} test images "
                 f"(PC1 + PC2: {100 * explained.sum():.0f}% of the variance)"))
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(ctx.seed))[:ctx.tsne_points]
    xy = _tsne_2d(points[keep], ctx.seed)
    return xy, labels[keep], "t-SNE 1", "t-SNE 2", f"t-SNE of the {d}-D {noun} of {len(keep)} test images"


def draw_latent_scatter(ctx: FigureContext) -> Figure:
    """Test-set posterior means coloured by label: 2-D directly, more dims through PCA or t-SNE."""
    shown = scatter_points(ctx)
    labels = ctx.data.test.labels.cpu()
    fig = Figure(figsize=(7.5, 6.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if shown.points.shape[1] == 1 and shown.raw_2d:
        _strip_by_label(ax, shown.points[:, 0], labels, _label_names(ctx, labels), ctx.seed,
                        f"{_axis_label(shown.axis, 0)} (posterior mean)")
        what = f"1-D {shown.noun} of the {len(labels)} test images, one row per label"
    else:
        xy, labels, xlabel, ylabel, what = _reduce_2d(ctx, shown, labels)
        _scatter_by_label(ax, xy, labels, _label_names(ctx, labels), ctx.seed)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if not xlabel.startswith("t-SNE"):  # z and PCA distances mean something; t-SNE's do not
            ax.set_aspect("equal", adjustable="datalim")
    if ctx.conditional:
        what += ";\neach image encoded with its own label (a CVAE's code need not carry the label)"
    fig.suptitle(ctx.headline(what), fontsize=9)
    return fig


# ---------------------------------------------------------------- curves and KL per dimension

CURVE_PANELS = (
    ("elbo", "ELBO"),
    ("reconstruction", "reconstruction E_q[log p(x|z)]"),
    ("kl", "KL(q(z|x) || p(z))"),
)


def draw_curves(ctx: FigureContext) -> Figure:
    """Train and validation ELBO, reconstruction and KL per epoch, from metrics.jsonl."""
    records = [r for r in ctx.metrics if "epoch" in r]
    if not records:
        raise FigureSkipped("no training curves: the run has no metrics.jsonl records")
    fig = Figure(figsize=(13.0, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    best = max((r for r in records if "val_elbo" in r), key=lambda r: r["val_elbo"], default=None)
    for ax, (key, label) in zip(axes, CURVE_PANELS):
        for split, style in (("train", "-o"), ("val", "--s")):
            points = [(r["epoch"], r[f"{split}_{key}"]) for r in records if f"{split}_{key}" in r]
            if points:
                ax.plot(*zip(*points), style, markersize=3, label=split if split == "train" else "validation")
        if best is not None:
            ax.axvline(best["epoch"], color="0.6", linewidth=0.8, linestyle=":", label="best val. ELBO")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats per image")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(ctx.headline("training curves: train (mean over the epoch's batches, while it trained) "
                              "and validation (at the end of the epoch)"), fontsize=9)
    fig.tight_layout()
    return fig


TWO_LAYER_KL_NOTE = ("no KL per dimension for a two-layer model: KL(q(z1, z2|x) || p(z1, z2)) has no closed form "
                     "and does not split over dimensions (an evaluation's kl_per_dim would be drawn)")


def kl_units(model: VAE) -> int:
    """How many terms the KL splits into: categorical variables, else latent dimensions."""
    return model.config.latent_dim if is_categorical(model) else model.latent_dim


def _kl_terms(q: Distribution, p: Distribution) -> torch.Tensor:
    """(batch, units) KL of each factor of factorized q and p: a dimension, or a categorical variable."""
    if isinstance(q, TwoStep) or isinstance(p, TwoStep):
        raise FigureSkipped(TWO_LAYER_KL_NOTE)
    if not (isinstance(q, Independent) and isinstance(p, Independent)):
        raise FigureSkipped(f"no KL per dimension: {type(q).__name__} and {type(p).__name__} are not factorized")
    try:
        return kl_divergence(q.base_dist, p.base_dist).flatten(1)
    except NotImplementedError:
        raise FigureSkipped(f"no KL per dimension: torch has no closed-form KL of {type(q.base_dist).__name__} "
                            f"from {type(p.base_dist).__name__}") from None


@torch.no_grad()
def kl_per_dim_from_model(ctx: FigureContext) -> torch.Tensor:
    """(units,) mean over test images of KL(q(z_j|x) || p(z_j)), nats: per latent dimension, or per
    categorical variable for categorical latents. Raises FigureSkipped for two-layer models."""
    prior, total = ctx.model.prior(), None
    for x, y in ctx.test_batches():
        kl = _kl_terms(_posterior(ctx.model, x, y), prior).sum(0)
        total = kl if total is None else total + kl
    return (total / len(ctx.data.test)).cpu()


def active_dims(means: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> torch.Tensor:
    """(n, latent_dim) posterior means -> (latent_dim,) bool: does E_q[z_j|x] vary over x?"""
    return means.var(0) > threshold


def active_units(model: VAE, means: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> torch.Tensor:
    """(n, latent_dim) posterior means -> (units,) bool; a categorical variable is active when its
    class probabilities vary over x: their variances, summed over classes, exceed `threshold`."""
    if is_categorical(model):
        config = model.config
        return means.unflatten(1, (config.latent_dim, config.categories)).var(0).sum(-1) > threshold
    return active_dims(means, threshold)


def _kl_axis_text(model: VAE) -> tuple[str, str]:
    """(x-axis label, activity legend title) of the KL bar chart."""
    if is_categorical(model):
        return "categorical variable j", f"Var of class probabilities\n(summed over classes) > {ACTIVE_THRESHOLD}"
    legend = f"Var of posterior mean\n> {ACTIVE_THRESHOLD}"
    if is_two_layer(model):
        d1 = decoded_size(model)
        return f"latent dimension j (z1: 0..{d1 - 1}, z2: {d1}..{model.latent_dim - 1})", legend
    return "latent dimension j", legend


def draw_kl_per_dim(ctx: FigureContext) -> Figure:
    """Bar chart of the mean KL of each latent dimension (categorical variable), active ones coloured."""
    units = kl_units(ctx.model)
    if ctx.kl_per_dim is not None:
        kl = torch.as_tensor(ctx.kl_per_dim, dtype=torch.float32)
        if kl.shape != (units,):
            raise ValueError(f"kl_per_dim has {kl.numel()} values; the model has {units} KL terms "
                             "(latent dims, or categorical variables)")
        source = f"from {ctx.kl_source}" if ctx.kl_source else "as given"
    else:
        kl = kl_per_dim_from_model(ctx)
        source = f"over the {len(ctx.data.test)} test images"
    active = active_units(ctx.model, ctx.test_means().cpu())
    xlabel, legend_title = _kl_axis_text(ctx.model)
    fig = Figure(figsize=(min(max(6.0, 0.25 * units + 2.0), 16.0), 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = ["tab:blue" if a else "0.7" for a in active.tolist()]
    ax.bar(range(units), kl.numpy(), color=colors)
    n_active = int(active.sum())
    ax.legend(handles=[Line2D([], [], marker="s", linestyle="", color="tab:blue", label=f"active ({n_active})"),
                       Line2D([], [], marker="s", linestyle="", color="0.7",
                              label=f"inactive ({units - n_active})")],
              title=legend_title, fontsize=8, title_fontsize=8,
              loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("KL(q(z_j|x) || p(z_j)), nats")
    if units <= 20:
        ax.set_xticks(range(units))
    else:  # a label per bar would overlap
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(-0.7, units - 0.3)
    ax.grid(axis="y", alpha=0.3)
    per = "categorical variable" if is_categorical(ctx.model) else "latent dimension"
    what = f"mean KL per {per} {source}; total {kl.sum().item():.2f} nats"
    if ctx.conditional:
        what += " (q(z|x, y), each image with its label)"
    fig.suptitle(ctx.headline(what), fontsize=9)
    return fig


# ---------------------------------------------------------------- the registry

DRAWERS: dict[str, Callable[[FigureContext], Figure]] = {
    "samples": draw_samples,
    "class-samples": draw_class_samples,
    "reconstructions": draw_reconstructions,
    "interpolations": draw_interpolations,
    "latent-scatter": draw_latent_scatter,
    "manifold": draw_manifold,
    "curves": draw_curves,
    "kl-per-dim": draw_kl_per_dim,
}


def _png_figure(name: str, draw: Callable[[FigureContext], Figure]) -> Callable[[FigureContext], Path]:
    def figure(ctx: FigureContext) -> Path:
        return write_png(draw(ctx), ctx.out_dir / f"{name}.png")

    figure.__name__ = f"{name.replace('-', '_')}_png"
    figure.__doc__ = f"{draw.__doc__} Written to out_dir/{name}.png."
    return figure


FIGURES: dict[str, Callable[[FigureContext], Path]] = {name: _png_figure(name, draw) for name, draw in DRAWERS.items()}

OPTIONS = tuple(f.name for f in dataclasses.fields(FigureContext)
                if f.init and f.name not in ("model", "data", "out_dir", "metrics"))


# ---------------------------------------------------------------- a run folder's figures

def _epoch_text(metrics: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """'epoch 20', or 'best epoch 18 of 20' when the weights drawn are not the last epoch's."""
    last = summary.get("epochs_run") or max((r.get("epoch", 0) for r in metrics), default=0)
    if not last:
        return "no epochs recorded"
    best = summary.get("best_epoch")
    if best is None:
        scored = [r for r in metrics if "val_elbo" in r]
        best = max(scored, key=lambda r: r["val_elbo"])["epoch"] if scored else None
    if best is None or best < 1 or best == last:
        return f"epoch {last}"
    return f"best epoch {best} of {last}"


def run_title(name: str, data: ImageData, latent: int | str, metrics: list[dict[str, Any]],
              summary: dict[str, Any]) -> str:
    """'mnist-lab: mnist (dynamic), 2-D latent, epoch 20'; `latent` is a size or a `latent_text`."""
    latent = f"{latent}-D latent" if isinstance(latent, int) else latent
    return f"{name}: {data.name} ({data.binarization}), {latent}, {_epoch_text(metrics, summary)}"


def current_kl(folder: Any, held: str | None) -> tuple[list[float] | None, str]:
    """(kl_per_dim, file name) of the largest-K test evaluation of the weights `held` that has one."""
    for path, result in folder.evaluations("test"):
        values = result.get("kl_per_dim")
        if held and result.get("weights_sha256") == held and values is not None:
            return [float(v) for v in values], path.name
    return None, ""


def _load_data(config: Any, device: torch.device) -> ImageData:
    from .data import load_dataset
    from .data.views import make_views

    raw = load_dataset(config.data.name, config.data.data_dir, progress=False)
    return make_views(raw, config.data, device)


def figure_context(run_dir: str | Path, *, model: VAE | None = None, data: ImageData | None = None,
                   **options: Any) -> FigureContext:
    """The context for a run folder: its model (load_run unless given), data, metrics, evaluation.

    Options not given come from the run's [figures] config, then from FigureContext's defaults.
    """
    from .runs import RunFolder, load_run

    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown figure option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
    folder = RunFolder(run_dir).check()
    config = folder.config()
    model = load_run(folder.path) if model is None else model
    data = _load_data(config, model.device) if data is None else data
    metrics = folder.metrics()
    kl, kl_source = current_kl(folder, getattr(model, "weights_sha256", None))
    values: dict[str, Any] = {"title": run_title(config.name, data, latent_text(model), metrics, folder.summary()),
                              "kl_per_dim": kl, "kl_source": kl_source, "seed": config.train.seed}
    values |= config.figures.options() | options
    return FigureContext(model=model, data=data, out_dir=folder.figures_dir, metrics=metrics, **values)


@contextlib.contextmanager
def _eval_mode(model: VAE) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def make_figures(run_dir: str | Path, names: Sequence[str] | None = None, *, model: VAE | None = None,
                 data: ImageData | None = None, **options: Any) -> list[tuple[str, Path | None, str]]:
    """Draw figures of a run into RUN_DIR/figures/<name>.png; all of FIGURES when `names` is None.

    Returns (name, path, description) per figure drawn and (name, None, why) per figure skipped.
    `options` override the run's [figures] config for this call (samples_n=..., manifold_range=...).
    The run folder records which weights and options drew each figure.
    """
    from .runs import RunFolder

    names = list(FIGURES) if names is None else list(names)
    unknown = [name for name in names if name not in FIGURES]
    if unknown:
        raise ValueError(f"unknown figure(s) {', '.join(unknown)}; known: {', '.join(FIGURES)}")
    ctx = figure_context(run_dir, model=model, data=data, **options)
    results: list[tuple[str, Path | None, str]] = []
    with _eval_mode(ctx.model):
        for name in names:
            try:
                results.append((name, FIGURES[name](ctx), DRAWERS[name].__doc__.splitlines()[0]))
            except FigureSkipped as skipped:
                results.append((name, None, str(skipped)))
    drawn = {name: {"weights_sha256": getattr(ctx.model, "weights_sha256", None), "options": _options_of(ctx)}
             for name, path, _ in results if path is not None}
    if drawn:
        RunFolder(run_dir).log_figures(drawn)
    return results


def _options_of(ctx: FigureContext) -> dict[str, Any]:
    return {name: getattr(ctx, name) for name in OPTIONS if name not in ("title", "kl_per_dim")}

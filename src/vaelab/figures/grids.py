"""Figures that are grids of images: samples from the prior, a conditional model's samples of each
class, reconstructions and interpolations; and the tiling and drawing that every image grid shares.

Grey images are drawn ink-dark on white; colour images (3 channels) as they are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..contract import Model, device_of, n_labels
from .context import FigureContext, FigureSkipped
from .variants import (class_names, decode, encode, is_categorical, is_conditional, prior_text, require_labels,
                       sample_prior, seeded_generator)

# ---------------------------------------------------------------- tiling and drawing image grids

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


# ---------------------------------------------------------------- the grids each figure shows

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


def sample_row_classes(model: Model, rows: int) -> list[int]:
    """The label each row of a conditional model's samples grid is decoded with: row r gets r mod n_labels."""
    return [r % n_labels(model) for r in range(rows)]


@torch.no_grad()
def samples_grid(model: Model, image_shape: tuple[int, int, int], n: int, seed: int = 0) -> np.ndarray:
    """n x n decoder means of z ~ p(z), tiled: (n*(h+2)+2, n*(w+2)+2[, 3]).

    A conditional model decodes row r with the label `sample_row_classes(model, n)[r]`.
    """
    z = sample_prior(model, n * n, seeded_generator(model, seed))
    y = None
    if is_conditional(model):
        y = torch.tensor(sample_row_classes(model, n), device=device_of(model)).repeat_interleave(n)
    return tile(as_images(decode(model, z, y), image_shape), n, n)


@torch.no_grad()
def class_samples_grid(model: Model, image_shape: tuple[int, int, int], per_class: int, seed: int = 0) -> np.ndarray:
    """A conditional model's (n_labels rows) x (per_class columns) decoder means: row k decoded with y = k,
    every cell from its own z ~ p(z). (n_labels*(h+2)+2, per_class*(w+2)+2[, 3])."""
    if not is_conditional(model):
        raise ValueError("class samples need a conditional model")
    y = torch.arange(n_labels(model), device=device_of(model)).repeat_interleave(per_class)
    z = sample_prior(model, len(y), seeded_generator(model, seed))
    return tile(as_images(decode(model, z, y), image_shape), n_labels(model), per_class)


@torch.no_grad()
def reconstructions_of(model: Model, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """E[x | z = mean of q(z|x(, y))(, y)]: (n, n_pixels) -> (n, n_pixels); y: (n,) labels of a CVAE."""
    require_labels(model, y, "reconstructions")
    return decode(model, encode(model, x, y), y)


@torch.no_grad()
def interpolation_grid(model: Model, x: torch.Tensor, image_shape: tuple[int, int, int], steps: int,
                       y: torch.Tensor | None = None) -> np.ndarray:
    """x: (2m, n_pixels), y: (2m,) labels of a CVAE -> (m rows x steps) grid; row i walks in a straight
    line from the posterior mean of x[2i] to that of x[2i+1], decoded (for a CVAE) with y[2i] throughout."""
    if len(x) % 2:
        raise ValueError("interpolations need an even number of images (pairs)")
    require_labels(model, y, "interpolations")
    means = encode(model, x, y)
    start, end = means[0::2], means[1::2]  # (m, latent)
    t = torch.linspace(0.0, 1.0, steps, device=means.device)[None, :, None]
    rows = len(start)
    z = (start[:, None] * (1 - t) + end[:, None] * t).reshape(rows * steps, -1)  # row-major (m, steps)
    row_y = None if y is None else y[0::2].repeat_interleave(steps)
    return tile(as_images(decode(model, z, row_y), image_shape), rows, steps)


def interpolation_row_labels(pairs: int, y: torch.Tensor | None = None, data_name: str | None = None) -> list[str]:
    """'1→2', '3→4', ...; with ', y=<label of the first image>' for a CVAE."""
    labels = [f"{2 * i + 1}\u2192{2 * i + 2}" for i in range(pairs)]
    if y is None:
        return labels
    names = class_names(data_name, y[0::2].tolist())
    return [f"{label}, y={name}" for label, name in zip(labels, names)]


INTERPOLATION_LABEL_NOTE = ("decoded with the label of each row's first image throughout "
                            "(so the right end is image 2's code under image 1's label)")


# ---------------------------------------------------------------- the figures

def _mean_note(model: Model) -> str:
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
    return image_grid_figure(grid, ctx.headline(what), row_labels=ctx.class_names(range(n_labels(model))))


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

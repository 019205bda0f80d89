"""Figures as PNG. Pixel intensity is the decoder's mean E[x|z], never a binarized sample.

Uses matplotlib's object API (no pyplot), so nothing depends on a display or global state.

Two layers:
- `training_figures` and its three functions: what the trainer and CLI draw after training.
- `FIGURES`, a registry name -> function(FigureContext) -> Path, and `make_figures(run_dir)`,
  which draws any of them for a run folder into RUN_DIR/figures/<name>.png.

Every figure is built by a `draw_*` function that returns a matplotlib `Figure` (so tests can
inspect it) and is written as PNG by `write_png`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
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
from torch.distributions import Normal, kl_divergence

from .data.views import ImageData
from .io import atomic_write_bytes, read_json, read_jsonl
from .model import VAE

# ---------------------------------------------------------------- image grids


def tile(images: np.ndarray, rows: int, cols: int, pad: int = 2, gutter: float = 0.12) -> np.ndarray:
    """(rows*cols, h, w) in [0,1] -> one (rows*(h+pad)+pad, cols*(w+pad)+pad) image.

    Gutters get intensity `gutter`: faint, so cells stay apart without a heavy frame.
    """
    n, h, w = images.shape
    if n != rows * cols:
        raise ValueError(f"tile: {n} images do not fill {rows}x{cols}")
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), gutter, dtype=np.float32)
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
    """A figure showing `grid` (2-D, intensity in [0,1]) with ink (1) dark on white (0); axes in grid pixels."""
    height, width = grid.shape
    fig = Figure(figsize=(width * scale, height * scale + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, height * scale / (height * scale + 0.6)))
    ax.imshow(1.0 - grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    if row_labels:
        step = height / len(row_labels)
        ax.set_yticks([step * (i + 0.5) for i in range(len(row_labels))], labels=list(row_labels), fontsize=8)
    else:
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9, y=0.995, va="top")
    return fig


def save_image_grid(path: str | Path, grid: np.ndarray, title: str,
                    row_labels: Sequence[str] = (), scale: float = 0.04) -> Path:
    """Write `grid` (2-D, intensity in [0,1]) as a PNG with a title; ink (1) drawn dark on white (0)."""
    return write_png(image_grid_figure(grid, title, row_labels, scale), path)


def _images(pixels: torch.Tensor, image_shape: tuple[int, int, int]) -> np.ndarray:
    """(n, n_pixels) -> (n, h, w) numpy, first channel (grey-level data)."""
    _, h, w = image_shape
    return pixels.detach().float().cpu().reshape(-1, image_shape[0], h, w)[:, 0].numpy()


@torch.no_grad()
def samples_grid(model: VAE, image_shape: tuple[int, int, int], n: int, seed: int = 0) -> np.ndarray:
    """n x n decoder means of z ~ p(z), tiled: (n*(h+2)+2, n*(w+2)+2)."""
    generator = torch.Generator(model.device).manual_seed(seed)
    z = torch.randn(n * n, model.latent_dim, generator=generator, device=model.device)
    return tile(_images(model.decode_mean(z), image_shape), n, n)


def reconstruction_grid(originals: np.ndarray, reconstructions: np.ndarray,
                        per_row: int = 10) -> tuple[np.ndarray, int]:
    """(n, h, w) twice -> (grid, pairs): rows of up to `per_row` originals, each above its reconstructions.

    A short last row is padded with cells of gutter intensity, so it reads as empty.
    """
    n, h, w = originals.shape
    cols = min(n, per_row)
    pairs = math.ceil(n / cols)
    blank = np.full((pairs * cols - n, h, w), 0.12, dtype=np.float32)
    top = np.concatenate([originals, blank]).reshape(pairs, 1, cols, h, w)
    bottom = np.concatenate([reconstructions, blank]).reshape(pairs, 1, cols, h, w)
    cells = np.concatenate([top, bottom], axis=1).reshape(-1, h, w)
    return tile(cells, 2 * pairs, cols), pairs


@torch.no_grad()
def samples_figure(model: VAE, path: str | Path, image_shape: tuple[int, int, int], title: str,
                   n: int = 5, seed: int = 0) -> Path:
    """n x n images decoded from z ~ p(z)."""
    grid = samples_grid(model, image_shape, n, seed)
    return save_image_grid(path, grid, f"{title}\n{n * n} samples from the prior, decoder mean")


@torch.no_grad()
def reconstructions_figure(model: VAE, x: torch.Tensor, path: str | Path, image_shape: tuple[int, int, int],
                           title: str, per_row: int = 10, what: str = "test images") -> Path:
    """x: (n, n_pixels), the images the model sees; shown above their reconstructions E[x | z = mean of q]."""
    recon = model.decode_mean(model.encode_mean(x))
    grid, pairs = reconstruction_grid(_images(x, image_shape), _images(recon, image_shape), per_row)
    return save_image_grid(path, grid, f"{title}\n{what} (rows 'input') and reconstructions (rows 'recon.')",
                           row_labels=("input", "recon.") * pairs)


@torch.no_grad()
def interpolations_figure(model: VAE, x: torch.Tensor, path: str | Path, image_shape: tuple[int, int, int],
                          title: str, steps: int = 25) -> Path:
    """x: (2m, n_pixels); row i walks from the posterior mean of x[2i] to that of x[2i+1]."""
    if len(x) % 2:
        raise ValueError("interpolations need an even number of images (pairs)")
    means = model.encode_mean(x)
    start, end = means[0::2], means[1::2]  # (m, latent)
    t = torch.linspace(0.0, 1.0, steps, device=means.device)[None, :, None]
    z = start[:, None] * (1 - t) + end[:, None] * t  # (m, steps, latent)
    rows = len(start)
    grid = tile(_images(model.decode_mean(z).reshape(rows * steps, -1), image_shape), rows, steps)
    labels = [f"{2 * i + 1}\u2192{2 * i + 2}" for i in range(rows)]
    return save_image_grid(path, grid, f"{title}\ninterpolations between posterior means, {steps} steps",
                           row_labels=labels)


def training_figures(model: VAE, test_images: torch.Tensor, out_dir: str | Path,
                     image_shape: tuple[int, int, int], title: str, seed: int = 0) -> list[Path]:
    """The lab's three pictures: samples.png (5x5), reconstructions.png (10), interpolations.png (5x25)."""
    out_dir = Path(out_dir)
    first_ten = test_images[:10]
    return [
        samples_figure(model, out_dir / "samples.png", image_shape, title, n=5, seed=seed),
        reconstructions_figure(model, first_ten, out_dir / "reconstructions.png", image_shape, title),
        interpolations_figure(model, first_ten, out_dir / "interpolations.png", image_shape, title),
    ]


# ---------------------------------------------------------------- the context every figure gets

class FigureSkipped(Exception):
    """Raised by a figure that does not apply to this model or run; the message says why."""


MANIFOLD_RANGES = ("minmax", "quantile")
SCATTER_METHODS = ("pca", "tsne")
ACTIVE_THRESHOLD = 0.01  # a dimension is active when Var_x[E_q[z_j|x]] exceeds this (Burda et al., 2016)
LABEL_NAMES = {
    "fashion-mnist": ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                      "bag", "ankle boot"),
}


@dataclass
class FigureContext:
    """What a figure may draw from; the fields after `title` have defaults, and `make_figures`
    takes any of them but model, data, out_dir and metrics as keyword options."""

    model: VAE  # in eval mode
    data: ImageData  # the run's data in its view; figures use the test split
    out_dir: Path  # RUN_DIR/figures
    title: str  # first title line: model, data and epoch
    metrics: list[dict[str, Any]] = field(default_factory=list)  # records of RUN_DIR/metrics.jsonl
    kl_per_dim: list[float] | None = None  # (latent_dim,) mean KL per dimension, from an evaluation
    seed: int = 0
    kl_source: str = ""  # where kl_per_dim came from, for the figure's title
    samples_n: int = 10
    reconstructions_n: int = 10
    reconstructions_random: bool = False
    interpolation_pairs: int = 5
    interpolation_steps: int = 25
    interpolations_random: bool = False
    manifold_n: int = 20
    manifold_range: str = "minmax"  # minmax of the test posterior means | quantile of N(0, 1)
    manifold_dims: tuple[int, int] | None = None  # None: (0, 1), the other dims held at 0
    scatter_method: str = "pca"  # for latents of more than 2 dims: pca | tsne (needs scikit-learn)
    tsne_points: int = 2000  # t-SNE is quadratic-ish; it embeds a seeded subset of the test set
    batch_size: int = 1000  # test images per forward pass
    _posterior: Normal | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.manifold_range not in MANIFOLD_RANGES:
            raise ValueError(f"manifold_range: {self.manifold_range!r} is not one of {', '.join(MANIFOLD_RANGES)}")
        if self.scatter_method not in SCATTER_METHODS:
            raise ValueError(f"scatter_method: {self.scatter_method!r} is not one of {', '.join(SCATTER_METHODS)}")
        for name in ("samples_n", "reconstructions_n", "interpolation_pairs", "interpolation_steps",
                     "manifold_n", "tsne_points", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.manifold_dims is not None:
            self.manifold_dims = tuple(self.manifold_dims)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.data.image_shape

    @torch.no_grad()
    def test_posterior(self) -> Normal:
        """q(z|x) of every test image: a Normal with loc and scale (n_test, latent_dim), computed once."""
        if self._posterior is None:
            locs, scales = [], []
            for x in self.data.test.batches(self.batch_size):
                q = self.model.posterior(x.to(self.model.device)).base_dist
                locs.append(q.loc)
                scales.append(q.scale)
            self._posterior = Normal(torch.cat(locs), torch.cat(scales), validate_args=False)
        return self._posterior

    def test_images(self, n: int, random: bool) -> torch.Tensor:
        """(n, n_pixels) test images on the model's device: the first n, or n drawn with `seed`."""
        n_test = len(self.data.test)
        if n > n_test:
            raise ValueError(f"asked for {n} test images, the test set has {n_test}")
        if random:
            index = torch.randperm(n_test, generator=torch.Generator().manual_seed(self.seed))[:n]
        else:
            index = torch.arange(n)
        return self.data.test.batch(index.to(self.data.test.pixels.device)).to(self.model.device)

    def headline(self, what: str) -> str:
        return f"{self.title}\n{what}"


# ---------------------------------------------------------------- grid figures

def draw_samples(ctx: FigureContext) -> Figure:
    """n x n images decoded from z ~ p(z), decoder mean."""
    n = ctx.samples_n
    grid = samples_grid(ctx.model, ctx.image_shape, n, ctx.seed)
    return image_grid_figure(grid, ctx.headline(f"{n} x {n} samples from the prior N(0, I), decoder mean"))


@torch.no_grad()
def draw_reconstructions(ctx: FigureContext) -> Figure:
    """Test images above their reconstructions E[x | z = mean of q(z|x)]."""
    n = ctx.reconstructions_n
    x = ctx.test_images(n, ctx.reconstructions_random)
    recon = ctx.model.decode_mean(ctx.model.encode_mean(x))
    grid, pairs = reconstruction_grid(_images(x, ctx.image_shape), _images(recon, ctx.image_shape))
    which = f"{n} random test images (seed {ctx.seed})" if ctx.reconstructions_random else f"the first {n} test images"
    return image_grid_figure(grid, ctx.headline(f"{which} ('input') and their reconstructions from the "
                                                 "posterior mean, decoder mean ('recon.')"),
                             row_labels=("input", "recon.") * pairs)


@torch.no_grad()
def draw_interpolations(ctx: FigureContext) -> Figure:
    """Decoder means along straight lines between the posterior means of pairs of test images."""
    pairs, steps = ctx.interpolation_pairs, ctx.interpolation_steps
    means = ctx.model.encode_mean(ctx.test_images(2 * pairs, ctx.interpolations_random))
    start, end = means[0::2], means[1::2]  # (pairs, latent)
    t = torch.linspace(0.0, 1.0, steps, device=means.device)[None, :, None]
    z = start[:, None] * (1 - t) + end[:, None] * t  # (pairs, steps, latent)
    images = _images(ctx.model.decode_mean(z).reshape(pairs * steps, -1), ctx.image_shape)
    which = "random test images" if ctx.interpolations_random else "test images"
    labels = [f"{2 * i + 1}\u2192{2 * i + 2}" for i in range(pairs)]
    return image_grid_figure(tile(images, pairs, steps),
                             ctx.headline(f"interpolations between the posterior means of pairs of {which}, "
                                          f"{steps} steps, decoder mean"), row_labels=labels)


# ---------------------------------------------------------------- the manifold

def manifold_axis_values(n: int, mode: str, values: torch.Tensor | None = None) -> torch.Tensor:
    """(n,) evenly spaced z values: over [min, max] of `values` ("minmax"), or Phi^-1 of the
    probabilities (i + 0.5) / n ("quantile"), so each value stands for an equal share of N(0, 1)."""
    if mode == "quantile":
        p = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        return Normal(0.0, 1.0).icdf(p).float()
    if mode == "minmax":
        if values is None or values.numel() == 0:
            raise ValueError("a minmax manifold axis needs the values it spans")
        return torch.linspace(values.min().item(), values.max().item(), n)
    raise ValueError(f"manifold range {mode!r} is not one of {', '.join(MANIFOLD_RANGES)}")


def manifold_grid(xs: torch.Tensor, ys: torch.Tensor, latent_dim: int, dims: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """(len(ys) * len(xs), latent_dim) latent points, row-major as drawn: row r holds y = ys reversed[r]
    (largest y on top, as on a plot), column c holds x = xs[c]; the other dims are 0, the prior mean."""
    z = torch.zeros(len(ys), len(xs), latent_dim)
    z[:, :, dims[0]] = xs[None, :]
    z[:, :, dims[1]] = ys.flip(0)[:, None]
    return z.reshape(-1, latent_dim)


def _manifold_dims(ctx: FigureContext) -> tuple[int, int]:
    latent_dim = ctx.model.latent_dim
    if latent_dim < 2:
        raise FigureSkipped(f"no manifold for a {latent_dim}-D latent: it needs two latent dimensions "
                            "(latent-scatter shows the 1-D codes)")
    dims = ctx.manifold_dims or (0, 1)
    if len(dims) != 2 or dims[0] == dims[1] or not all(0 <= d < latent_dim for d in dims):
        raise ValueError(f"manifold_dims: {dims} are not two different dims in 0..{latent_dim - 1}")
    return int(dims[0]), int(dims[1])


def _manifold_subtitle(ctx: FigureContext, dims: tuple[int, int]) -> str:
    n, latent_dim = ctx.manifold_n, ctx.model.latent_dim
    over = ("from min to max of the test posterior means" if ctx.manifold_range == "minmax"
            else f"at N(0, 1) quantiles \u03a6\u207b\u00b9(p), p = {0.5 / n:.3g} .. {1 - 0.5 / n:.3g}")
    text = f"decoder mean on a {n} x {n} grid of z{dims[0]}, z{dims[1]} {over}"
    if latent_dim > 2:
        chosen = "" if ctx.manifold_dims else " (dims 0, 1 by default; choose with manifold_dims)"
        text += f"\nthe other {latent_dim - 2} latent dims held at 0, the prior mean{chosen}"
    return text


def _tick_every(n: int, at_most: int = 10) -> int:
    return math.ceil(n / at_most)


@torch.no_grad()
def draw_manifold(ctx: FigureContext) -> Figure:
    """Decoder means over a 2-D grid of latent values, the grid's z values on the axes."""
    dims = _manifold_dims(ctx)
    n = ctx.manifold_n
    means = ctx.test_posterior().loc.cpu() if ctx.manifold_range == "minmax" else None
    xs, ys = (manifold_axis_values(n, ctx.manifold_range, None if means is None else means[:, d]) for d in dims)
    z = manifold_grid(xs, ys, ctx.model.latent_dim, dims)
    images = _images(ctx.model.decode_mean(z.to(ctx.model.device)), ctx.image_shape)
    grid = tile(images, n, n)
    fig = image_grid_figure(grid, ctx.headline(_manifold_subtitle(ctx, dims)), scale=0.025)
    ax = fig.axes[0]
    cell = ctx.image_shape[1] + 2  # tile's pad
    every = _tick_every(n)
    centers = [2 + cell * i + (cell - 2) / 2 - 0.5 for i in range(0, n, every)]
    ax.set_xticks(centers, labels=[f"{v:.2f}" for v in xs[::every].tolist()], fontsize=8)
    ax.set_yticks(centers, labels=[f"{v:.2f}" for v in ys.flip(0)[::every].tolist()], fontsize=8)
    ax.set_xlabel(f"z{dims[0]}")
    ax.set_ylabel(f"z{dims[1]}")
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
    names = LABEL_NAMES.get(ctx.data.name)
    return {k: (names[k] if names and k < len(names) else str(k)) for k in torch.unique(labels).tolist()}


def _scatter_by_label(ax: Any, xy: torch.Tensor, labels: torch.Tensor, names: dict[int, str], seed: int) -> None:
    """One scatter in a seeded random order, so no label is painted over all the others."""
    cmap = colormaps["tab10"]
    order = torch.randperm(len(xy), generator=torch.Generator().manual_seed(seed))
    xy, labels = xy[order].numpy(), labels[order].numpy()
    ax.scatter(xy[:, 0], xy[:, 1], c=[cmap(k % 10) for k in labels], s=3, alpha=0.6, linewidths=0, rasterized=True)
    handles = [Line2D([], [], marker="o", linestyle="", color=cmap(k % 10), label=name) for k, name in names.items()]
    ax.legend(handles=handles, title="label", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
              frameon=False)


def _strip_by_label(ax: Any, z: torch.Tensor, labels: torch.Tensor, names: dict[int, str], seed: int) -> None:
    """A 1-D code per label: a jittered strip of the posterior means, one row per label."""
    cmap = colormaps["tab10"]
    jitter = (torch.rand(len(z), generator=torch.Generator().manual_seed(seed)) - 0.5) * 0.6
    for k in names:
        mask = labels == k
        ax.scatter(z[mask].numpy(), (k + jitter[mask]).numpy(), s=3, alpha=0.5, linewidths=0,
                   color=cmap(k % 10), rasterized=True)
    ax.set_yticks(list(names), labels=list(names.values()))
    ax.invert_yaxis()
    ax.set_xlabel("z0 (posterior mean)")
    ax.set_ylabel("label")


def _scatter_points(ctx: FigureContext, means: torch.Tensor,
                    labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str, str, str]:
    """(xy, labels, x label, y label, what), reducing a latent of more than 2 dims to 2."""
    d, n = means.shape[1], len(means)
    if d == 2:
        return means, labels, "z0", "z1", f"posterior means of the {n} test images"
    if ctx.scatter_method == "pca":
        xy, explained = pca_2d(means)
        return (xy, labels, f"PC1 ({100 * explained[0]:.0f}% of variance)",
                f"PC2 ({100 * explained[1]:.0f}% of variance)",
                (f"PCA of the {d}-D posterior means of the {n} test images "
                 f"(PC1 + PC2: {100 * explained.sum():.0f}% of the variance)"))
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(ctx.seed))[:ctx.tsne_points]
    xy = _tsne_2d(means[keep], ctx.seed)
    return xy, labels[keep], "t-SNE 1", "t-SNE 2", f"t-SNE of the {d}-D posterior means of {len(keep)} test images"


def draw_latent_scatter(ctx: FigureContext) -> Figure:
    """Test-set posterior means coloured by label: 2-D directly, more dims through PCA or t-SNE."""
    means = ctx.test_posterior().loc.cpu()
    labels = ctx.data.test.labels.cpu()
    fig = Figure(figsize=(7.5, 6.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if means.shape[1] == 1:
        _strip_by_label(ax, means[:, 0], labels, _label_names(ctx, labels), ctx.seed)
        what = f"1-D posterior means of the {len(means)} test images, one row per label"
    else:
        xy, labels, xlabel, ylabel, what = _scatter_points(ctx, means, labels)
        _scatter_by_label(ax, xy, labels, _label_names(ctx, labels), ctx.seed)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if not xlabel.startswith("t-SNE"):  # z and PCA distances mean something; t-SNE's do not
            ax.set_aspect("equal", adjustable="datalim")
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


@torch.no_grad()
def kl_per_dim_from_model(ctx: FigureContext) -> torch.Tensor:
    """(latent_dim,) mean over test images of KL(q(z_j|x) || p(z_j)), nats."""
    q = ctx.test_posterior()
    return kl_divergence(q, ctx.model.prior().base_dist).mean(0).cpu()


def active_dims(means: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> torch.Tensor:
    """(n, latent_dim) posterior means -> (latent_dim,) bool: does E_q[z_j|x] vary over x?"""
    return means.var(0) > threshold


def draw_kl_per_dim(ctx: FigureContext) -> Figure:
    """Bar chart of the mean KL of each latent dimension, active dimensions coloured."""
    latent_dim = ctx.model.latent_dim
    if ctx.kl_per_dim is not None:
        kl = torch.as_tensor(ctx.kl_per_dim, dtype=torch.float32)
        if kl.shape != (latent_dim,):
            raise ValueError(f"kl_per_dim has {kl.numel()} values; the model has {latent_dim} latent dims")
        source = f"from {ctx.kl_source}" if ctx.kl_source else "as given"
    else:
        kl = kl_per_dim_from_model(ctx)
        source = f"over the {len(ctx.data.test)} test images"
    active = active_dims(ctx.test_posterior().loc.cpu())
    fig = Figure(figsize=(min(max(6.0, 0.25 * latent_dim + 2.0), 16.0), 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = ["tab:blue" if a else "0.7" for a in active.tolist()]
    ax.bar(range(latent_dim), kl.numpy(), color=colors)
    n_active = int(active.sum())
    ax.legend(handles=[Line2D([], [], marker="s", linestyle="", color="tab:blue", label=f"active ({n_active})"),
                       Line2D([], [], marker="s", linestyle="", color="0.7",
                              label=f"inactive ({latent_dim - n_active})")],
              title=f"Var of posterior mean\n> {ACTIVE_THRESHOLD}", fontsize=8, title_fontsize=8,
              loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_xlabel("latent dimension j")
    ax.set_ylabel("KL(q(z_j|x) || p(z_j)), nats")
    if latent_dim <= 20:
        ax.set_xticks(range(latent_dim))
    else:  # a label per bar would overlap
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(-0.7, latent_dim - 0.3)
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(ctx.headline(f"mean KL per latent dimension {source}; total {kl.sum().item():.2f} nats"),
                 fontsize=9)
    return fig


# ---------------------------------------------------------------- the registry

DRAWERS: dict[str, Callable[[FigureContext], Figure]] = {
    "samples": draw_samples,
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


def run_title(name: str, data: ImageData, latent_dim: int, metrics: list[dict[str, Any]],
              summary: dict[str, Any]) -> str:
    """'mnist-lab: mnist (dynamic), 2-D latent, epoch 20'."""
    return f"{name}: {data.name} ({data.binarization}), {latent_dim}-D latent, {_epoch_text(metrics, summary)}"


def newest_eval_kl(run_dir: Path) -> tuple[list[float] | None, str]:
    """(kl_per_dim, file name) of the newest RUN_DIR/eval-test-k*.json that has one, else (None, "")."""
    files = sorted(run_dir.glob("eval-test-k*.json"), key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
    for path in files:
        try:
            values = read_json(path).get("kl_per_dim")
        except (ValueError, AttributeError) as err:
            warnings.warn(f"{path}: skipped ({err})", stacklevel=2)
            continue
        if values is not None:
            return [float(v) for v in values], path.name
    return None, ""


def _load_data(config: Any, device: torch.device) -> ImageData:
    from .data import load_dataset
    from .data.views import make_views

    raw = load_dataset(config.data.name, config.data.data_dir, progress=False)
    return make_views(raw, config.data, device)


def figure_context(run_dir: str | Path, *, model: VAE | None = None, data: ImageData | None = None,
                   **options: Any) -> FigureContext:
    """The context for a run folder: its model (load_run unless given), data, metrics, evaluation."""
    from .runs import load_run
    from .train import read_run_config

    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown figure option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    model = load_run(run_dir) if model is None else model
    data = _load_data(config, model.device) if data is None else data
    metrics_path, summary_path = run_dir / "metrics.jsonl", run_dir / "summary.json"
    metrics = read_jsonl(metrics_path) if metrics_path.exists() else []
    summary = read_json(summary_path) if summary_path.exists() else {}
    kl, kl_source = newest_eval_kl(run_dir)
    values: dict[str, Any] = {"title": run_title(config.name, data, model.latent_dim, metrics, summary),
                              "kl_per_dim": kl, "kl_source": kl_source, "seed": config.train.seed}
    values.update(options)
    return FigureContext(model=model, data=data, out_dir=run_dir / "figures", metrics=metrics, **values)


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
    `options` set FigureContext options (samples_n=..., manifold_range=..., ...).
    """
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
    return results

"""Figures of the latent space: the manifold (decoder means over a plane of latent values) and the
scatter of the test set's codes (2-D as they are, more dimensions through PCA or t-SNE).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from torch.distributions import Distribution, Independent, Laplace, Normal

from ..distributions import TwoStep
from ..contract import Model, device_of, n_labels
from .context import MANIFOLD_RANGES, FigureContext, FigureError, FigureSkipped
from .grids import as_images, image_grid_figure, tile
from .variants import decode, decoded_size, is_categorical, is_two_layer, latent_dim, reads_z2


def _axis_label(axis: str, dim: int) -> str:
    """'z3', or 'z1[3]' for a dimension of a two-layer model's z1 (the layer the decoder reads)."""
    return f"z1[{dim}]" if axis == "z1" else f"z{dim}"


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


def prior_marginal(model: Model, dim: int) -> Distribution:
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
        raise FigureError(f"manifold_dims: {dims} are not two different dims in 0..{size - 1}")
    return int(dims[0]), int(dims[1])


def _manifold_label(ctx: FigureContext) -> torch.Tensor | None:
    """The labels (manifold_n**2,) a CVAE's manifold is decoded with; None for an unconditional model."""
    if not ctx.conditional:
        return None
    label, classes = ctx.manifold_label, n_labels(ctx.model)
    if not 0 <= label < classes:
        raise FigureError(f"manifold_label: {label} is not a label in 0..{classes - 1}")
    return torch.full((ctx.manifold_n ** 2,), label, device=device_of(ctx.model))


def _axis_name(ctx: FigureContext, dim: int) -> str:
    return _axis_label("z1" if is_two_layer(ctx.model) else "z", dim)


def _manifold_subtitle(ctx: FigureContext, dims: tuple[int, int]) -> str:
    n, model, size = ctx.manifold_n, ctx.model, decoded_size(ctx.model)
    if ctx.manifold_range == "minmax":
        over = "from min to max of the test posterior means"
    else:
        marginal = prior_marginal(model, dims[0])  # named by its own parameters: a plugin's prior is no N(0, 1)
        symbol = "\u03a6" if isinstance(marginal, Normal) else "F"
        name = f"{'N' if isinstance(marginal, Normal) else 'Laplace'}({marginal.loc.item():g}, " \
               f"{marginal.scale.item() ** (2 if isinstance(marginal, Normal) else 1):g})"
        over = f"at {name} quantiles {symbol}\u207b\u00b9(p), p = {0.5 / n:.3g} .. {1 - 0.5 / n:.3g}"
    a, b = (_axis_name(ctx, d) for d in dims)
    text = f"decoder mean on a {n} x {n} grid of {a}, {b} {over}"
    if reads_z2(model):
        text += "; the decoder reads z1 and z2, z2 held at its mean over the test posterior means"
    elif is_two_layer(model):
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
    z = manifold_grid(xs, ys, latent_dim(ctx.model), dims, _manifold_held(ctx))
    images = as_images(decode(ctx.model, z.to(device_of(ctx.model)), y), ctx.image_shape)
    grid = tile(images, n, n, inverted=ctx.inverted)
    fig = image_grid_figure(grid, ctx.headline(_manifold_subtitle(ctx, dims)), scale=0.025, inverted=ctx.inverted)
    _mark_manifold_axes(fig.axes[0], ctx, dims, xs, ys)
    return fig


def _mark_manifold_axes(ax: Any, ctx: FigureContext, dims: tuple[int, int], xs: torch.Tensor,
                        ys: torch.Tensor) -> None:
    """Ticks at the centres of every few cells, labelled with the z values decoded there (largest y on top)."""
    n, cell = ctx.manifold_n, ctx.image_shape[1] + 2  # tile's pad
    every = _tick_every(n)
    centers = [2 + cell * i + (cell - 2) / 2 - 0.5 for i in range(0, n, every)]
    ax.set_xticks(centers, labels=[f"{v:.2f}" for v in xs[::every].tolist()], fontsize=8)
    ax.set_yticks(centers, labels=[f"{v:.2f}" for v in ys.flip(0)[::every].tolist()], fontsize=8)
    ax.set_xlabel(_axis_name(ctx, dims[0]))
    ax.set_ylabel(_axis_name(ctx, dims[1]))


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
    """{label: name} of the labels present; {} for images that came without labels."""
    if not getattr(ctx.data, "labelled", True):
        return {}
    classes = torch.unique(labels).tolist()
    return dict(zip(classes, ctx.class_names(classes)))


def _scatter_by_label(ax: Any, xy: torch.Tensor, labels: torch.Tensor, names: dict[int, str], seed: int) -> None:
    """One scatter in a seeded random order, so no label is painted over all the others."""
    cmap = colormaps["tab10"]
    order = torch.randperm(len(xy), generator=torch.Generator().manual_seed(seed))
    xy, labels = xy[order].numpy(), labels[order].numpy()
    if not names:  # unlabelled images: one colour, no legend
        ax.scatter(xy[:, 0], xy[:, 1], color=cmap(0), s=3, alpha=0.6, linewidths=0, rasterized=True)
        return
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
        read = "the decoder reads z2 too" if reads_z2(model) else "the layer the decoder reads"
        return ScatterPoints(means[:, :decoded_size(model)], f"posterior means of z1 ({read})", "z1")
    return ScatterPoints(means, "posterior means", "z")


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
    """Test-set posterior means coloured by label (if the images have labels): 2-D directly, more dims
    through PCA or t-SNE."""
    shown = scatter_points(ctx)
    labels = ctx.data.test.labels.cpu()
    fig = Figure(figsize=(7.5, 6.0), dpi=100)
    FigureCanvasAgg(fig)
    what = _plot_codes(fig.add_subplot(), ctx, shown, labels)
    if ctx.conditional:
        what += ";\neach image encoded with its own label (a CVAE's code need not carry the label)"
    fig.suptitle(ctx.headline(what), fontsize=9)
    return fig


def _plot_codes(ax: Any, ctx: FigureContext, shown: ScatterPoints, labels: torch.Tensor) -> str:
    """Plot the codes coloured by label: a strip per label for 1-D codes, else a 2-D scatter; returns what it shows."""
    if shown.points.shape[1] == 1 and shown.raw_2d:
        _strip_by_label(ax, shown.points[:, 0], labels, _label_names(ctx, labels) or {0: "all images"}, ctx.seed,
                        f"{_axis_label(shown.axis, 0)} (posterior mean)")
        return f"1-D {shown.noun} of the {len(labels)} test images, one row per label"
    xy, labels, xlabel, ylabel, what = _reduce_2d(ctx, shown, labels)
    _scatter_by_label(ax, xy, labels, _label_names(ctx, labels), ctx.seed)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if not xlabel.startswith("t-SNE"):  # z and PCA distances mean something; t-SNE's do not
        ax.set_aspect("equal", adjustable="datalim")
    return what

"""Figures of a latent against the factors that made the images (a run on a factor data set such as
dsprites, whose `ImageData.factors` is a FactorGrid): latent traversals with each dimension's most
informative factor named, and the mutual-information matrix (latent x factor) as a heat map.

Both draw from `factor_samples` factor tuples drawn uniformly from the grid with the figure seed,
their images encoded to posterior means; the mutual information is
`vaelab.disentanglement.mutual_information` (histogram estimate over 20 bins, nats), normalized by
each factor's entropy over the same samples, so 1 means the dimension determines the factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..contract import device_of
from .context import FigureContext, FigureSkipped
from .grids import as_images, image_grid_figure, tile
from .latent import manifold_axis_values, prior_marginal
from .variants import decode, is_categorical, is_conditional, is_two_layer, latent_dim


@dataclass
class FactorInformation:
    """What both figures show, from one set of factor samples."""

    names: tuple[str, ...]  # the factors' names
    factors: np.ndarray  # (n, k) int64 factor levels sampled
    codes: np.ndarray  # (n, d) posterior means of their images
    mi: np.ndarray  # (d, k) mutual information, nats
    entropy: np.ndarray  # (k,) entropy of each factor over the samples, nats

    @property
    def normalized(self) -> np.ndarray:
        """(d, k) MI / H(factor), in [0, 1]; 0 for a factor that takes one value (no entropy to explain)."""
        return np.divide(self.mi, self.entropy[None, :], out=np.zeros_like(self.mi), where=self.entropy[None, :] > 0)

    def best(self, dim: int) -> tuple[str, float, float]:
        """(name, normalized MI, MI in nats) of the factor dimension `dim` says most about."""
        k = int(np.argmax(self.normalized[dim]))
        return self.names[k], float(self.normalized[dim, k]), float(self.mi[dim, k])


def factor_grid(ctx: FigureContext) -> object:
    """The run's FactorGrid; FigureSkipped where its data has none (MNIST, a folder of images)."""
    grid = getattr(ctx.data, "factors", None)
    if grid is None:
        raise FigureSkipped(f"its data ({ctx.data.name}) has no factors")
    if is_conditional(ctx.model):
        raise FigureSkipped("a conditional model's codes depend on labels a factor grid does not give")
    return grid


@torch.no_grad()
def factor_information(ctx: FigureContext) -> FactorInformation:
    """Codes and mutual information of `factor_samples` factor samples drawn with `seed`; computed once."""
    from ..disentanglement import entropy, mutual_information
    from ..evaluate import BatchedEncoder

    if ctx._factors is None:
        grid = factor_grid(ctx)
        factors = np.asarray(grid.sample(ctx.factor_samples, np.random.default_rng(ctx.seed)), dtype=np.int64)
        codes = np.concatenate([BatchedEncoder(ctx.model, ctx.batch_size)(grid.batch(factors[i:i + ctx.batch_size])).numpy()
                                for i in range(0, len(factors), ctx.batch_size)])
        mi = np.asarray(mutual_information(codes, factors), dtype=np.float64)
        ctx._factors = FactorInformation(tuple(grid.names), factors, codes, mi, np.asarray(entropy(factors), dtype=np.float64))
    return ctx._factors


def traversal_values(ctx: FigureContext, dim: int, codes: np.ndarray) -> torch.Tensor:
    """(traversal_steps,) values of z_dim: equal shares of its prior (Normal, Laplace), else the codes' range."""
    try:
        prior = prior_marginal(ctx.model, dim)
    except (FigureSkipped, AttributeError, IndexError):
        return manifold_axis_values(ctx.traversal_steps, "minmax", torch.as_tensor(codes[:, dim]))
    return manifold_axis_values(ctx.traversal_steps, "quantile", prior=prior)


def draw_traversals_factors(ctx: FigureContext) -> Figure:
    """Latent traversals: a row per latent dimension, the others held at one factor sample's code, each row
    named by the factor it is most informative about (normalized mutual information, MI / H(factor)).

    Needs a run on a factor data set (dsprites): its factor samples give the codes and the MI."""
    factor_grid(ctx)
    if is_categorical(ctx.model) or is_two_layer(ctx.model):
        raise FigureSkipped("traversals sweep one continuous latent layer; this latent is categorical or two-layer")
    info = factor_information(ctx)
    d, steps = latent_dim(ctx.model), ctx.traversal_steps
    held = torch.as_tensor(info.codes[0], dtype=torch.float32)  # the first factor sample's code
    z = held.repeat(d * steps, 1)
    for j in range(d):
        z[j * steps:(j + 1) * steps, j] = traversal_values(ctx, j, info.codes)
    images = as_images(decode(ctx.model, z.to(device_of(ctx.model))), ctx.image_shape)
    labels = [f"z{j}: {name} {nmi:.2f}" for j in range(d) for name, nmi, _ in [info.best(j)]]
    what = (f"latent traversals; row z_j names the factor z_j has the highest normalized MI (MI / H(factor)) "
            f"with, and that MI, over {len(info.factors)} factor samples, seed {ctx.seed}")
    return image_grid_figure(tile(images, d, steps, inverted=ctx.inverted), ctx.headline(what), labels,
                             scale=min(0.04, 0.9 / ctx.image_shape[2]), inverted=ctx.inverted)  # ~0.9 in an image


def draw_mi_matrix(ctx: FigureContext) -> Figure:
    """Heat map of the mutual information between each latent dimension and each factor, normalized by the
    factor's entropy (1: the dimension determines the factor); a disentangled latent has one bright cell
    per factor, in a row of its own.

    Needs a run on a factor data set (dsprites)."""
    info = factor_information(ctx)
    nmi = info.normalized
    d, k = nmi.shape
    fig = Figure(figsize=(max(6.0, 2.5 + 0.8 * k), 2.2 + 0.3 * d), dpi=100, layout="constrained")  # room for the title
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(nmi, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(k), labels=list(info.names), fontsize=8)
    ax.set_yticks(range(d), labels=[f"z{j}" for j in range(d)], fontsize=8)
    ax.set_xlabel("factor")
    ax.set_ylabel("latent dimension")
    if d * k <= 200:  # a number in each cell while they stay legible
        for (j, f), value in np.ndenumerate(nmi):
            ax.text(f, j, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if value > 0.6 else "white")
    fig.colorbar(image, ax=ax, label="MI / H(factor)")
    fig.suptitle(ctx.headline(f"mutual information of latent and factors, normalized; {len(info.factors)} factor "
                              f"samples, seed {ctx.seed}"), fontsize=9)
    return fig

"""The KL of each latent dimension (each categorical variable), the ones the encoder uses marked active."""

from __future__ import annotations

from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from torch.distributions import Distribution, Independent, kl_divergence

from ..distributions import TwoStep
from ..latents import ACTIVE_THRESHOLD, unit_activity
from ..contract import Model, device_of, n_labels
from .context import FigureContext, FigureError, FigureSkipped
from .variants import decoded_size, is_categorical, is_two_layer, latent_dim, posterior_of

TWO_LAYER_KL_NOTE = ("no KL per dimension for a two-layer model: KL(q(z1, z2|x) || p(z1, z2)) has no closed form "
                     "and does not split over dimensions (an evaluation's kl_per_dim would be drawn)")


def kl_units(model: Model) -> int:
    """How many terms the KL splits into: categorical variables, else latent dimensions."""
    return model.config.latent_dim if is_categorical(model) else latent_dim(model)


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
        kl = _kl_terms(posterior_of(ctx.model, x, y), prior).sum(0)
        total = kl if total is None else total + kl
    return (total / len(ctx.data.test)).cpu()


def active_units(model: Model, means: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> torch.Tensor:
    """(n, latent_dim) posterior means -> (units,) bool: is the unit's activity (`latents.unit_activity`,
    as the evaluation measures it) above `threshold`? A categorical variable's activity is that of its
    class probabilities, summed over classes."""
    activity = unit_activity(means)
    if is_categorical(model):
        activity = activity.unflatten(0, (model.config.latent_dim, model.config.categories)).sum(-1)
    return activity > threshold


def _kl_axis_text(model: Model) -> tuple[str, str]:
    """(x-axis label, activity legend title) of the KL bar chart."""
    if is_categorical(model):
        return "categorical variable j", f"Var of class probabilities\n(summed over classes) > {ACTIVE_THRESHOLD}"
    legend = f"Var of posterior mean\n> {ACTIVE_THRESHOLD}"
    if is_two_layer(model):
        d1 = decoded_size(model)
        return f"latent dimension j (z1: 0..{d1 - 1}, z2: {d1}..{latent_dim(model) - 1})", legend
    return "latent dimension j", legend


def draw_kl_per_dim(ctx: FigureContext) -> Figure:
    """Bar chart of the mean KL of each latent dimension (categorical variable), active ones coloured."""
    units = kl_units(ctx.model)
    kl, source = _kl_values(ctx, units)
    active = active_units(ctx.model, ctx.test_means().cpu())
    xlabel, legend_title = _kl_axis_text(ctx.model)
    fig = Figure(figsize=(min(max(6.0, 0.25 * units + 2.0), 16.0), 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = ["tab:blue" if a else "0.7" for a in active.tolist()]
    ax.bar(range(units), kl.numpy(), color=colors)
    _activity_legend(ax, int(active.sum()), units, legend_title)
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


def _kl_values(ctx: FigureContext, units: int) -> tuple[torch.Tensor, str]:
    """((units,) KL per unit, where it came from): the run's evaluation when there is one, else the model's."""
    if ctx.kl_per_dim is None:
        return kl_per_dim_from_model(ctx), f"over the {len(ctx.data.test)} test images"
    kl = torch.as_tensor(ctx.kl_per_dim, dtype=torch.float32)
    if kl.shape != (units,):
        raise FigureError(f"kl_per_dim has {kl.numel()} values; the model has {units} KL terms "
                         "(latent dims, or categorical variables)")
    return kl, f"from {ctx.kl_source}" if ctx.kl_source else "as given"


def _activity_legend(ax: Any, n_active: int, units: int, title: str) -> None:
    ax.legend(handles=[Line2D([], [], marker="s", linestyle="", color="tab:blue", label=f"active ({n_active})"),
                       Line2D([], [], marker="s", linestyle="", color="0.7",
                              label=f"inactive ({units - n_active})")],
              title=title, fontsize=8, title_fontsize=8,
              loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)

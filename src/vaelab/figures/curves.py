"""The training curves: train and validation ELBO, reconstruction and KL per epoch, from metrics.jsonl."""

from __future__ import annotations

from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..runs import SELECTED_BY, kept_record, selection_key
from .context import FigureContext, FigureSkipped

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
    best, kept_by = kept_record(records), SELECTED_BY[selection_key(records)]
    for ax, (key, label) in zip(axes, CURVE_PANELS):
        _plot_panel(ax, records, key, label, best, kept_by)
    # under the panel, not in it: a fine-tune's curves run flat across the whole panel, where any corner
    # would hide one of them
    axes[0].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.suptitle(ctx.headline("training curves: train (mean over the epoch's batches, while it trained) "
                              "and validation (at the end of the epoch)"), fontsize=9)
    fig.tight_layout()
    return fig


def later_epochs_range(points: list[tuple[int, float]], share: float = 0.1,
                       spread: float = 4.0) -> tuple[float, float] | None:
    """y-limits fitted to the epochs after the first `share` of the run, or None to show every point.

    `points`: (epoch, value) pairs. A long run's first epochs lie tens of nats from where it ends, and an
    axis that holds them flattens the last hundreds of epochs, the part a reader looks at, into a line;
    so when all points spread over more than `spread` times the later ones, the axis holds the later.
    """
    last = max((epoch for epoch, _ in points), default=0)
    later = [value for epoch, value in points if epoch > share * last]
    if last < 20 or not later:  # a short run: every epoch is worth seeing
        return None
    low, high = min(later), max(later)
    everything = max(value for _, value in points) - min(value for _, value in points)
    if everything <= spread * (high - low):
        return None
    margin = max(0.1 * (high - low), 1e-3 * max(abs(low), abs(high)), 1e-6)
    return low - margin, high + margin


def _plot_panel(ax: Any, records: list[dict[str, Any]], key: str, label: str, best: dict[str, Any] | None,
                kept_by: str) -> None:
    """One term's train and validation curves, with the kept epoch (best validation `kept_by`) marked;
    an IWAE run's ELBO panel shows its validation bound too."""
    curves = [(f"train_{key}", "-o", "train"), (f"val_{key}", "--s", "validation")]
    if key == "elbo":
        curves.append(("val_bound", ":^", "validation IWAE bound"))
    plotted: list[tuple[int, float]] = []
    for field, style, legend in curves:
        points = [(r["epoch"], r[field]) for r in records if field in r]
        if points:
            ax.plot(*zip(*points), style, markersize=3, label=legend)
            plotted += points
    limits = later_epochs_range(plotted)
    if limits is not None:
        ax.set_ylim(*limits)
        label += "\n(the first epochs run off the scale)"
    if best is not None:
        ax.axvline(best["epoch"], color="0.6", linewidth=0.8, linestyle=":", label=f"kept: best val. {kept_by}")
    ax.set_title(label, fontsize=9)
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per image")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)

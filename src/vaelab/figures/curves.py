"""The training curves: train and validation ELBO, reconstruction and KL per epoch, from metrics.jsonl."""

from __future__ import annotations

from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

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
    best = max((r for r in records if "val_elbo" in r), key=lambda r: r["val_elbo"], default=None)
    for ax, (key, label) in zip(axes, CURVE_PANELS):
        _plot_panel(ax, records, key, label, best)
    axes[0].legend(fontsize=8)
    fig.suptitle(ctx.headline("training curves: train (mean over the epoch's batches, while it trained) "
                              "and validation (at the end of the epoch)"), fontsize=9)
    fig.tight_layout()
    return fig


def _plot_panel(ax: Any, records: list[dict[str, Any]], key: str, label: str, best: dict[str, Any] | None) -> None:
    """One term's train and validation curves, with the epoch of the best validation ELBO marked."""
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

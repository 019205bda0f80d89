"""Figures as PNG. Pixel intensity is the decoder's mean E[x|z], never a binarized sample.

Uses matplotlib's object API (no pyplot), so nothing depends on a display or global state.

`FIGURES`, a registry name -> function(FigureContext) -> Path, and `make_figures(run_dir)`,
which draws any of them for a run folder into RUN_DIR/figures/<name>.png.

Every figure is built by a `draw_*` function that returns a matplotlib `Figure` (so tests can
inspect it) and is written as PNG by `write_png`. The drawers live by what they show: `grids`
(samples, class samples, reconstructions, interpolations), `latent` (manifold, latent scatter),
`curves` (training curves), `kl` (KL per dimension) and `factors` (traversals and the mutual
information against the factors of a factor data set); `context` holds what they draw from and
`variants` what each model variant means for a figure.

Every model variant is drawn. A figure that means nothing for a variant raises `FigureSkipped`
with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..data.views import ImageData
from ..storage import atomic_write_bytes
from ..contract import Model
from ..errors import VaelabError
from .context import OPTIONS, FigureContext, FigureError, FigureSkipped, current_kl, figure_context, run_title
from .curves import draw_curves
from .factors import draw_mi_matrix, draw_traversals_factors
from .grids import draw_class_samples, draw_interpolations, draw_reconstructions, draw_samples, tile
from .kl import draw_kl_per_dim
from .latent import draw_latent_scatter, draw_manifold
from .variants import latent_text

__all__ = ["DRAWERS", "FACTOR_FIGURES", "FIGURES", "OPTIONS", "FigureContext", "FigureError", "FigureSkipped", "current_kl", "describe",
           "figure_context", "latent_text", "make_figures", "run_title", "tile", "write_png"]


def write_png(fig: Figure, path: str | Path) -> Path:
    """Render `fig` to PNG bytes and write them atomically (a killed process leaves no torn file)."""
    path = Path(path)
    buffer = BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.1)
    atomic_write_bytes(path, buffer.getvalue())
    return path


DRAWERS: dict[str, Callable[[FigureContext], Figure]] = {
    "samples": draw_samples,
    "class-samples": draw_class_samples,
    "reconstructions": draw_reconstructions,
    "interpolations": draw_interpolations,
    "latent-scatter": draw_latent_scatter,
    "manifold": draw_manifold,
    "curves": draw_curves,
    "kl-per-dim": draw_kl_per_dim,
    "traversals-factors": draw_traversals_factors,
    "mi-matrix": draw_mi_matrix,
}
FACTOR_FIGURES = ("traversals-factors", "mi-matrix")  # they need the run's factors (a factor data set)


def _png_figure(name: str, draw: Callable[[FigureContext], Figure]) -> Callable[[FigureContext], Path]:
    def figure(ctx: FigureContext) -> Path:
        return write_png(draw(ctx), ctx.out_dir / f"{name}.png")

    figure.__name__ = f"{name.replace('-', '_')}_png"
    figure.__doc__ = f"{draw.__doc__} Written to out_dir/{name}.png."
    return figure


FIGURES: dict[str, Callable[[FigureContext], Path]] = {name: _png_figure(name, draw) for name, draw in DRAWERS.items()}


def describe(name: str) -> str:
    """What figure `name` shows, in one line: its drawer's first paragraph, whole (not its first line)."""
    paragraph = (DRAWERS[name].__doc__ or "").strip().split("\n\n")[0]
    return " ".join(paragraph.split())


@contextlib.contextmanager
def _eval_mode(model: Model) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def make_figures(run_dir: str | Path, names: Sequence[str] | None = None, *, model: Model | None = None,
                 data: ImageData | None = None, out_dir: str | Path | None = None,
                 **options: Any) -> list[tuple[str, Path | None, str]]:
    """Draw figures of a run into RUN_DIR/figures/<name>.png; all of FIGURES when `names` is None.

    Returns (name, path, description) per figure drawn and (name, None, why) per figure skipped.
    `options` override the run's [figures] config for this call (samples_n=..., manifold_range=...).
    The run folder records which weights and options drew each figure. With `out_dir` the figures
    go there instead and the run folder is left as it is (the trackers' figures during training).
    """
    from ..runs import RunFolder

    explicit = names is not None
    names = list(FIGURES) if names is None else list(names)
    unknown = [name for name in names if name not in FIGURES]
    if unknown:
        raise FigureError(f"unknown figure(s) {', '.join(unknown)}; known: {', '.join(FIGURES)}")
    ctx = figure_context(run_dir, model=model, data=data, **options)
    _check_factors(names, explicit, ctx, run_dir)
    if out_dir is not None:
        ctx = dataclasses.replace(ctx, out_dir=Path(out_dir))
    results: list[tuple[str, Path | None, str]] = []
    with _eval_mode(ctx.model):
        for name in names:
            try:
                results.append((name, FIGURES[name](ctx), describe(name)))
            except FigureSkipped as skipped:
                results.append((name, None, str(skipped)))
    drawn = {name: {"weights_sha256": getattr(ctx.model, "weights_sha256", None), "options": _options_of(ctx)}
             for name, path, _ in results if path is not None}
    if drawn and out_dir is None:
        RunFolder(run_dir).log_figures(drawn)
    return results


def _check_factors(names: list[str], explicit: bool, ctx: FigureContext, run_dir: str | Path) -> None:
    """A factor figure named for a run whose data has no factors is an error before anything is drawn;
    among all figures (a report) it is skipped."""
    from ..evaluate import run_factors

    if explicit and any(name in FACTOR_FIGURES for name in names):
        try:
            run_factors(ctx.data, run_dir)
        except VaelabError as err:
            raise FigureError(f"{', '.join(n for n in names if n in FACTOR_FIGURES)}: {err}") from None


def _options_of(ctx: FigureContext) -> dict[str, Any]:
    return {name: getattr(ctx, name) for name in OPTIONS if name not in ("title", "kl_per_dim")}

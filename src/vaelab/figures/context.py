"""The context every figure draws from (`FigureContext`), and how a run folder fills it in.

The run is read only through `runs.RunFolder`: its config, metrics, summary and evaluations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.views import ImageData
from ..contract import Model, device_of
from ..errors import VaelabError
from ..runs import kept_record
from .variants import class_names, encode, is_conditional, latent_text


class FigureError(VaelabError, ValueError):
    """A figure option or name that cannot be drawn for this run; the message names the option."""


class FigureSkipped(Exception):
    """Raised by a figure that does not apply to this model or run; the message says why."""


MANIFOLD_RANGES = ("minmax", "quantile")
SCATTER_METHODS = ("pca", "tsne")


@dataclass
class FigureContext:
    """What a figure may draw from; the fields after `title` have defaults, and `make_figures`
    takes any of them but model, data, out_dir and metrics as keyword options."""

    model: Model  # in eval mode
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
    factor_samples: int = 10_000  # traversals-factors, mi-matrix: factor tuples the MI is estimated from
    traversal_steps: int = 9  # traversals-factors: images along each latent dimension
    _means: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    _factors: Any = field(default=None, init=False, repr=False, compare=False)  # factors.FactorInformation, once

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.manifold_range not in MANIFOLD_RANGES:
            raise FigureError(f"manifold_range: {self.manifold_range!r} is not one of {', '.join(MANIFOLD_RANGES)}")
        if self.scatter_method not in SCATTER_METHODS:
            raise FigureError(f"scatter_method: {self.scatter_method!r} is not one of {', '.join(SCATTER_METHODS)}")
        for name in ("samples_n", "class_samples_n", "reconstructions_n", "interpolation_pairs",
                     "interpolation_steps", "manifold_n", "tsne_points", "batch_size", "factor_samples",
                     "traversal_steps"):
            if getattr(self, name) < 1:
                raise FigureError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.manifold_dims is not None:
            self.manifold_dims = tuple(self.manifold_dims)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.data.image_shape

    @property
    def inverted(self) -> bool:
        """Whether grey images are drawn dark on white (MNIST-like data), not in their own levels."""
        return self.data.drawn_inverted

    @property
    def conditional(self) -> bool:
        return is_conditional(self.model)

    def test_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """All test images in order, (x (batch, n_pixels), y (batch,) or None for an unconditional model)."""
        test, device = self.data.test, device_of(self.model)
        for start in range(0, len(test), self.batch_size):
            index = slice(start, start + self.batch_size)
            y = test.labels[index].to(device) if self.conditional else None
            yield test.batch(index).to(device), y

    @torch.no_grad()
    def test_means(self) -> torch.Tensor:
        """(n_test, latent_dim) posterior means of the test images (flattened class probabilities for
        categorical latents; [z1, z2] for two layers), each encoded with its label for a CVAE; computed once."""
        if self._means is None:
            self._means = torch.cat([encode(self.model, x, y) for x, y in self.test_batches()])
        return self._means

    def _test_index(self, n: int, random: bool) -> torch.Tensor:
        n_test = len(self.data.test)
        if n > n_test:
            raise FigureError(f"asked for {n} test images, the test set has {n_test}")
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
        y = test.labels[index].to(device_of(self.model)) if self.conditional else None
        return test.batch(index).to(device_of(self.model)), y

    def class_names(self, classes: Sequence[int]) -> list[str]:
        """Display names of labels: the data's own (a user's folder names), else the data set's."""
        names = getattr(self.data, "label_names", ())
        return [names[k] if k < len(names) else str(k) for k in classes] if names else class_names(self.data.name,
                                                                                                   classes)

    def headline(self, what: str) -> str:
        return f"{self.title}\n{what}"


OPTIONS = tuple(f.name for f in dataclasses.fields(FigureContext)
                if f.init and f.name not in ("model", "data", "out_dir", "metrics"))


def _epoch_text(metrics: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """'epoch 20', or 'best epoch 18 of 20' when the weights drawn are not the last epoch's."""
    last = summary.get("epochs_run") or max((r.get("epoch", 0) for r in metrics), default=0)
    if not last:
        return "no epochs recorded"
    best = summary.get("best_epoch")
    if best is None:
        kept = kept_record(metrics)
        best = kept["epoch"] if kept else None
    if best is None or best < 1 or best == last:
        return f"epoch {last}"
    return f"best epoch {best} of {last}"


def run_title(name: str, data: ImageData, latent: int | str, metrics: list[dict[str, Any]],
              summary: dict[str, Any]) -> str:
    """'mnist-lab: mnist (dynamic), 2-D latent, epoch 20'; `latent` is a size or a `latent_text`."""
    latent = f"{latent}-D latent" if isinstance(latent, int) else latent
    # The "grey" view is the pixels' own levels: for colour images, say colour.
    view = "colour" if data.binarization == "grey" and data.image_shape[0] == 3 else data.binarization
    return f"{name}: {data.name} ({view}), {latent}, {_epoch_text(metrics, summary)}"


def current_kl(folder: Any, held: str | None) -> tuple[list[float] | None, str]:
    """(kl_per_dim, file name) of the largest-K test evaluation of the weights `held` that has one."""
    for path, result in folder.evaluations("test"):
        values = result.get("kl_per_dim")
        if held and result.get("weights_sha256") == held and values is not None:
            return [float(v) for v in values], path.name
    return None, ""


def _load_data(config: Any, device: torch.device) -> ImageData:
    from ..evaluate import load_run_data

    return load_run_data(config, device)


def figure_context(run_dir: str | Path, *, model: Model | None = None, data: ImageData | None = None,
                   **options: Any) -> FigureContext:
    """The context for a run folder: its model (load_run unless given), data, metrics, evaluation.

    Options not given come from the run's [figures] config, then from FigureContext's defaults.
    """
    from ..runs import RunFolder, load_run

    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise FigureError(f"unknown figure option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
    folder = RunFolder(run_dir).check()
    config = folder.config()
    model = load_run(folder.path) if model is None else model
    data = _load_data(config, device_of(model)) if data is None else data
    metrics = folder.metrics()
    kl, kl_source = current_kl(folder, getattr(model, "weights_sha256", None))
    values: dict[str, Any] = {"title": run_title(config.name, data, latent_text(model), metrics, folder.summary()),
                              "kl_per_dim": kl, "kl_source": kl_source, "seed": config.train.seed}
    values |= config.figures.options() | options
    return FigureContext(model=model, data=data, out_dir=folder.figures_dir, metrics=metrics, **values)

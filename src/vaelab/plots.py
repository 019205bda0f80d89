"""Figures as PNG. Pixel intensity is the decoder's mean E[x|z], never a binarized sample.

Uses matplotlib's object API (no pyplot), so nothing depends on a display or global state.
"""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .io import atomic_write_bytes
from .model import VAE


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


def save_image_grid(path: str | Path, grid: np.ndarray, title: str,
                    row_labels: Sequence[str] = (), scale: float = 0.04) -> Path:
    """Write `grid` (2-D, intensity in [0,1]) as a PNG with a title; ink (1) drawn dark on white (0)."""
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
    path = Path(path)
    buffer = BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.1)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _images(pixels: torch.Tensor, image_shape: tuple[int, int, int]) -> np.ndarray:
    """(n, n_pixels) -> (n, h, w) numpy, first channel (grey-level data)."""
    _, h, w = image_shape
    return pixels.detach().float().cpu().reshape(-1, image_shape[0], h, w)[:, 0].numpy()


@torch.no_grad()
def samples_figure(model: VAE, path: str | Path, image_shape: tuple[int, int, int], title: str,
                   n: int = 5, seed: int = 0) -> Path:
    """n x n images decoded from z ~ p(z)."""
    generator = torch.Generator(model.device).manual_seed(seed)
    z = torch.randn(n * n, model.latent_dim, generator=generator, device=model.device)
    grid = tile(_images(model.decode_mean(z), image_shape), n, n)
    return save_image_grid(path, grid, f"{title}\n{n * n} samples from the prior, decoder mean")


@torch.no_grad()
def reconstructions_figure(model: VAE, x: torch.Tensor, path: str | Path, image_shape: tuple[int, int, int],
                           title: str) -> Path:
    """x: (n, n_pixels), the images the model sees; shown above their reconstructions E[x | z = mean of q]."""
    recon = model.decode_mean(model.encode_mean(x))
    n = len(x)
    grid = tile(np.concatenate([_images(x, image_shape), _images(recon, image_shape)]), 2, n)
    return save_image_grid(path, grid, f"{title}\ntest images (top) and reconstructions (bottom)",
                           row_labels=("input", "recon."))


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

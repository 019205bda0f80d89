"""Generated colour images for tests and benchmarks: circles, squares and triangles drawn with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")


def draw_shapes(n: int, size: tuple[int, int] = (64, 64), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, H, W, 3) uint8, labels (n,) int64): one shape of a random colour, place and size each,
    on a random light background, so the pixels take many of the 256 levels as photographs do."""
    rng = np.random.default_rng(seed)
    h, w = size
    images = np.empty((n, h, w, 3), dtype=np.uint8)
    labels = rng.integers(0, len(SHAPES), n)
    for i, label in enumerate(labels):
        image = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(170, 256, 3)))
        radius = rng.uniform(0.15, 0.35) * min(h, w)
        cx, cy = rng.uniform(radius, w - radius), rng.uniform(radius, h - radius)
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        colour = tuple(int(v) for v in rng.integers(0, 160, 3))
        draw = ImageDraw.Draw(image)
        if SHAPES[label] == "circle":
            draw.ellipse(box, fill=colour)
        elif SHAPES[label] == "square":
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=colour)
        images[i] = np.asarray(image)
    return images, labels


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray, names: tuple[str, ...] = SHAPES,
                 suffix: str = ".png") -> Path:
    """root/<class name>/<i>.png for each image: a folder of images as a user would have one."""
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.squeeze()).save(folder / f"{i:05d}{suffix}")
    return root

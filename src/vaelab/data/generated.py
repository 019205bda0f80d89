"""Factor data sets vaelab draws itself, offline and deterministically: `dsprites` and `shapes3d-like`.

Each is rendered once into the image cache as an .npy of uint8 (N, C, H, W) in grid order (the last
factor fastest), written to a temp file, checked, renamed, and then memory-mapped: the 3 GB of
dSprites are never held in memory. `levels` renders a sub-grid (a few evenly spaced levels of
each factor, keeping their exact values), for tests and quick looks.

How the drawings differ from the published files is written in docs/design.md.
"""

from __future__ import annotations

import colorsys
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..storage import atomic_path
from .catalog import DATASETS
from .errors import DataError
from .factors import FactorDataset, FactorGrid, write_blocks

VERSION = 1  # of the drawings: a change to a renderer bumps it, so an old cache file is not reused


@dataclass(frozen=True)
class Generator:
    """A generated data set: its full grid, and a renderer of any sub-grid in blocks."""

    name: str
    names: tuple[str, ...]
    values: tuple[np.ndarray, ...]
    image_shape: tuple[int, int, int]
    binary: bool
    label_factor: int
    label_names: tuple[str, ...]
    # (levels of each factor as indices into `values`) -> blocks of consecutive images in grid order
    render: Callable[[tuple[np.ndarray, ...]], Iterator[np.ndarray]]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.values)


# ---------------------------------------------------------------- dSprites

SIDE = 64
DSPRITES_SHAPES = DATASETS["dsprites"].label_names  # square, ellipse, heart: the shape factor's levels
_HALF = 10.0  # half the side of a scale-1 square, in pixels
_REACH = 16  # the canvas of one sprite spans centre +- _REACH pixels; every shape at scale 1 fits
_FIRST = 16  # the pixel of the sprite's centre at position 0; position 1 is _FIRST + 31


def _in_shape(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether points (u, v) in the shape's own frame (units of _HALF * scale, v up) are inside it."""
    if shape == 0:
        return (np.abs(u) <= 1) & (np.abs(v) <= 1)
    # products, not powers: libm's pow may differ between machines in the last bit, + and * do not
    if shape == 1:
        return u * u + (v * 2) * (v * 2) <= 1  # an ellipse twice as wide as tall
    # the heart curve (x^2 + y^2 - 1)^3 = x^2 y^3, spanning x +-1.14, y -1..1.25, centred and scaled to +-1.1
    x, y = u * 1.1, v * 1.1 + 0.12
    r = x * x + y * y - 1
    return r * r * r - x * x * (y * y * y) <= 0


def _sprite(shape: int, scale: float, angle: float) -> np.ndarray:
    """(2*_REACH+1, 2*_REACH+1) uint8 {0,1}: the shape at `scale`, turned by `angle` (radians,
    anticlockwise on screen), centred on the middle pixel; a pixel is on when its centre is inside."""
    offset = np.arange(-_REACH, _REACH + 1, dtype=np.float64)
    dx, dy = offset[None, :], -offset[:, None]  # rows go down the screen, v goes up
    # rounded: libm's sin and cos may differ in the last bit between machines, and a pixel centre
    # on a shape's edge (a square at 0 and 2 pi) would then be drawn differently; the same reason
    # makes 2 pi draw exactly as 0 (sin 2 pi is -2e-16)
    c, s = round(math.cos(angle), 12) + 0.0, round(math.sin(angle), 12) + 0.0
    radius = _HALF * scale
    u, v = (c * dx + s * dy) / radius, (-s * dx + c * dy) / radius
    return _in_shape(shape, u, v).astype(np.uint8)


def _render_dsprites(levels: tuple[np.ndarray, ...]) -> Iterator[np.ndarray]:
    """Blocks of (len(x) * len(y), 1, 64, 64) images, one block per (shape, scale, orientation).

    Positions move the sprite by whole pixels (31 steps of one pixel from _FIRST), so each image
    of a block is the sprite's canvas shifted: a strided view of one padded canvas, no drawing."""
    shapes, scales, angles, xs, ys = levels
    scale_values, angle_values = DSPRITES.values[1], DSPRITES.values[2]
    canvas = np.zeros((SIDE + 31, SIDE + 31), np.uint8)
    corner = _FIRST - _REACH + 31  # canvas[corner + r, corner + c] lands on pixel (r, c) at position 0
    windows = np.lib.stride_tricks.sliding_window_view(canvas, (SIDE, SIDE))  # (32, 32, 64, 64)
    for shape in shapes:
        for scale in scales:
            for angle in angles:
                canvas[corner:corner + 2 * _REACH + 1, corner:corner + 2 * _REACH + 1] = _sprite(
                    int(shape), scale_values[scale], angle_values[angle])
                # the window at (31 - ky, 31 - kx) shows the sprite moved ky down and kx right
                block = windows[31 - ys][:, 31 - xs].transpose(1, 0, 2, 3)  # (x, y, 64, 64)
                yield block.reshape(-1, 1, SIDE, SIDE)


DSPRITES = Generator(
    "dsprites", ("shape", "scale", "orientation", "x", "y"),
    (np.array([1.0, 2.0, 3.0]), np.linspace(0.5, 1.0, 6), np.linspace(0.0, 2 * np.pi, 40),
     np.linspace(0.0, 1.0, 32), np.linspace(0.0, 1.0, 32)),
    (1, SIDE, SIDE), True, 0, DSPRITES_SHAPES, _render_dsprites)
"""The original's grid and values (its latents_values, less the colour factor of one level):
shape 1..3 (square, ellipse, heart), scale 0.5..1 (6), orientation 0..2 pi (40, both ends
included, as the original), x and y 0..1 (32 each; y goes down the image)."""


# ---------------------------------------------------------------- shapes3d-like

SHAPES3D_SHAPES = DATASETS["shapes3d-like"].label_names  # cube, cylinder, sphere, capsule
_HORIZON = 40  # the first row of floor; above it, wall
_GROUND = 54  # the row objects stand on
_HEIGHT = 24.0  # an object's height at scale 1, in pixels


def _object_mask(shape: int, scale: float, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """((64, 64) bool, (64, 64) float32 shade in [0.6, 1]): where the object is, and its light,
    turned by `degrees` in the image plane about its centre (anticlockwise), standing on _GROUND."""
    h = _HEIGHT * scale
    angle = math.radians(degrees)
    c, s = round(math.cos(angle), 12) + 0.0, round(math.sin(angle), 12) + 0.0  # as in _sprite
    centre = np.arange(SIDE, dtype=np.float64) + 0.5
    dx, dy = centre[None, :] - SIDE / 2, (_GROUND - h / 2) - centre[:, None]  # dy: up the image
    u, v = c * dx + s * dy, -s * dx + c * dy  # in the object's own frame
    half = h / 2
    if shape == 0:  # cube: a square
        inside = (np.abs(u) <= half) & (np.abs(v) <= half)
    elif shape == 1:  # cylinder: a narrower box with an elliptic top
        top = v - half
        inside = ((np.abs(u) <= 0.4 * h) & (np.abs(v) <= half)) | (
            (u * u) / (0.16 * h * h) + (top * top) / (0.0144 * h * h) <= 1)
    elif shape == 2:  # sphere: a disc
        inside = u * u + v * v <= half * half
    else:  # capsule: a stadium, a segment of half-length 0.2 h thickened by 0.3 h
        along = np.clip(v, -0.2 * h, 0.2 * h)
        inside = u * u + (v - along) * (v - along) <= 0.09 * h * h
    # lit from the object's own left: the light turns with it, so every shape shows its orientation
    shade = 0.6 + 0.4 * np.clip(0.5 - u / (2 * h), 0.0, 1.0)
    return inside, shade.astype(np.float32)


def _to_bytes(rgb: np.ndarray) -> np.ndarray:
    return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def _background(floor: float, wall: float) -> np.ndarray:
    """(3, 64, 64) uint8: a wall of hue `wall` above the horizon, a floor of hue `floor` below,
    the floor darker towards the horizon (the far side)."""
    rows = np.arange(SIDE, dtype=np.float64)[:, None]
    depth = np.clip((rows - _HORIZON) / (SIDE - 1 - _HORIZON), 0.0, 1.0)
    light = np.where(rows < _HORIZON, 0.85, 0.6 + 0.35 * depth)  # (64, 1)
    colour = np.where(rows[None] < _HORIZON, hue_rgb(wall)[:, None, None], hue_rgb(floor)[:, None, None])
    return _to_bytes(colour * light[None] * np.ones((1, 1, SIDE)))


def _render_shapes3d(levels: tuple[np.ndarray, ...]) -> Iterator[np.ndarray]:
    """Blocks of (len(scale) * len(shape) * len(orientation), 3, 64, 64) images, one block per
    (floor hue, wall hue, object hue): the objects are drawn once, each block only composes them."""
    floors, walls, objects, scales, shapes, angles = levels
    values = SHAPES3D.values
    drawn = [_object_mask(int(shape), values[3][scale], values[5][angle])
             for scale in scales for shape in shapes for angle in angles]
    masks = np.stack([mask for mask, _ in drawn])[:, None]  # (m, 1, 64, 64)
    shades = np.stack([shade for _, shade in drawn])[:, None]
    layers = {hue: _to_bytes(hue_rgb(values[2][hue])[None, :, None, None] * shades) for hue in objects}
    for floor in floors:
        for wall in walls:
            background = _background(values[0][floor], values[1][wall])
            for hue in objects:
                yield np.where(masks, layers[hue], background[None])


SHAPES3D = Generator(
    "shapes3d-like", ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"),
    (np.linspace(0.0, 0.9, 10), np.linspace(0.0, 0.9, 10), np.linspace(0.0, 0.9, 10),
     np.linspace(0.75, 1.25, 8), np.arange(4.0), np.linspace(-30.0, 30.0, 15)),
    (3, SIDE, SIDE), False, 4, SHAPES3D_SHAPES, _render_shapes3d)
"""3D Shapes' factors, levels and values (floor, wall and object hue 0..0.9 (10 each), scale
0.75..1.25 (8), shape 0..3 (cube, cylinder, sphere, capsule), orientation -30..30 degrees (15):
480,000 images), drawn flat in 2-D: a wall and a floor, and the object as a shaded silhouette."""


# ---------------------------------------------------------------- the registry

GENERATORS: dict[str, Generator] = {generator.name: generator for generator in (DSPRITES, SHAPES3D)}


def subgrid(generator: Generator, levels: Sequence[int] = ()) -> tuple[np.ndarray, ...]:
    """The level indices of each factor: all of them, or `levels[j]` evenly spaced ones of factor j
    (the first and the last included). [] keeps the full grid."""
    if not levels:
        return tuple(np.arange(size) for size in generator.sizes)
    if len(levels) != len(generator.sizes) or any(not 1 <= n <= size for n, size in zip(levels, generator.sizes)):
        raise DataError(f"data.factor_levels: {generator.name} needs one count per factor "
                        f"({', '.join(generator.names)}), each in 1..its levels {list(generator.sizes)}; "
                        f"got {list(levels)}")
    return tuple(np.unique(np.round(np.linspace(0, size - 1, n)).astype(np.int64)) if n > 1
                 else np.array([0], np.int64) for n, size in zip(levels, generator.sizes))


def cache_path(generator: Generator, chosen: tuple[np.ndarray, ...], cache_dir: Path) -> Path:
    sizes = [len(levels) for levels in chosen]
    suffix = "" if sizes == list(generator.sizes) else "-" + "x".join(map(str, sizes))
    return cache_dir / "generated" / f"{generator.name}-v{VERSION}{suffix}.npy"


def load_generated(name: str, cache_dir: str | os.PathLike | None = None, levels: Sequence[int] = (),
                   seed: int = 0, progress: bool = True) -> FactorDataset:
    """A generated data set (a name in GENERATORS) from the cache, drawn there first if it is not yet."""
    from .sources import default_cache_dir

    generator = GENERATORS[name]
    chosen = subgrid(generator, levels)
    path = cache_path(generator, chosen, Path(cache_dir or default_cache_dir()))
    shape = (math.prod(len(c) for c in chosen), *generator.image_shape)
    if not _usable(path, shape):
        _generate(generator, chosen, path, shape, progress)
    images = np.load(path, mmap_mode="r")
    grid = FactorGrid(generator.names, tuple(len(c) for c in chosen),
                      tuple(v[c] for v, c in zip(generator.values, chosen)), images, generator.binary)
    where = f"generated by vaelab, {path}; validation and test are seeded subsets of the training grid"
    # a sub-grid keeps the full set's labels (and their names): a label is the level's index in the full grid
    return FactorDataset(name, grid, where, generator.label_factor, generator.label_names, seed=seed,
                         label_levels=chosen[generator.label_factor])


def _usable(path: Path, shape: tuple[int, ...]) -> bool:
    """A cache file of the right shape and dtype (its bytes were checked when it was written)."""
    if not path.is_file():
        return False
    try:
        images = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return images.shape == shape and images.dtype == np.uint8


def _generate(generator: Generator, chosen: tuple[np.ndarray, ...], path: Path, shape: tuple[int, ...],
              progress: bool) -> None:
    """Render into a temp .npy beside `path`, re-read and check it, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        done = write_blocks(tmp, shape, generator.render(chosen), f"drawing {generator.name} (once, into the cache)",
                            progress)
        if done != shape[0]:
            raise DataError(f"{path}: drew {done} images for a grid of {shape[0]}")
        _check_written(generator, chosen, tmp, shape)


def _check_written(generator: Generator, chosen: tuple[np.ndarray, ...], tmp: Path, shape: tuple[int, ...]) -> None:
    """The temp file reads back with its shape, and the first images of each block as drawn."""
    written = np.load(tmp, mmap_mode="r")
    if written.shape != shape or written.dtype != np.uint8:
        raise DataError(f"{tmp}: reads back as {written.shape} {written.dtype}, not {shape} uint8")
    first = next(generator.render(chosen))
    if not np.array_equal(written[:len(first)], first):
        raise DataError(f"{tmp}: reads back different from what was drawn")


def hue_rgb(hue: float, saturation: float = 0.8, value: float = 0.9) -> np.ndarray:
    """(3,) float in [0, 1]: the RGB of a hue in [0, 1)."""
    return np.array(colorsys.hsv_to_rgb(hue, saturation, value))

"""Decoding one image file (or one in-memory image) into a uint8 (C, H, W) array with Pillow.

Every image goes through the same steps, in this order:

1. open: only the formats in :data:`FORMATS` are tried, so a file that merely looks like
   something else (EPS, which Pillow would hand to Ghostscript) is refused as "not an image";
   the pixel count in the header is checked against ``max_pixels`` before anything is
   decoded, so a 100,000 x 100,000 header costs nothing;
2. JPEG only: when the image will be shrunk at least 4x, it is decoded at a reduced DCT
   scale (``Image.draft``) that is still at least twice the size it is resized to;
3. decode, then rotate or flip by its EXIF orientation (``ImageOps.exif_transpose``);
4. flatten to 'L' (grey) or 'RGB': 16-bit grey ('I;16*', 'I') is scaled by 255/65535
   (Pillow's own conversion would clip it at 255), float grey ('F') must lie in [0, 1], a
   palette is expanded, and anything with alpha (RGBA, LA, PA, or a transparency key) is
   composited on ``background``;
5. resize to ``image_size`` (H, W) by ``resize_mode``: "resize" stretches, "crop" scales the
   shorter side to fit and centre-crops, "pad" scales the longer side to fit and centres
   the image on ``background``. Shrinking uses Pillow's BOX filter, the exact area average
   (no ringing halos around strokes and edges, the mean brightness kept, and several times
   faster than LANCZOS on large photos); enlarging uses LANCZOS, where BOX would only
   repeat pixels ("resize" that shrinks one side and enlarges the other: each side its own).

An animated GIF, WebP or multi-page TIFF gives its first frame. Every fault raises a
one-line :class:`DataError` that starts with the file's path.
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError

# JPEG covers MPO too (multi-picture JPEGs from cameras, whose format then reads "MPO").
FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "DIB", "GIF", "WEBP", "TIFF", "PPM")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif",
                            ".webp", ".tif", ".tiff", ".pbm", ".pgm", ".ppm", ".pnm"})
RESIZE_MODES: tuple[str, ...] = ("resize", "crop", "pad")
WHITE: tuple[int, int, int] = (255, 255, 255)
DEFAULT_MAX_PIXELS: int = Image.MAX_IMAGE_PIXELS or 89_478_485  # Pillow's own warning threshold
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
INTEGER_GREY_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
ORIENTATION_TAG = 0x0112
IMAGE_WIDTH_TAG, IMAGE_LENGTH_TAG = 256, 257  # a TIFF's stored size
ORIENTATIONS = range(1, 9)  # 1: as stored
TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # the ones that swap width and height
DRAFT_GAP = 2  # a JPEG is decoded at no less than twice the size it is then resized to
SMALL_READ = 2**16  # reads this small are not worth capping at the bytes left in the file
# What Pillow raises on a malformed file, besides its own UnidentifiedImageError.
PILLOW_FAULTS: tuple[type[BaseException], ...] = (
    OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, MemoryError,
    Image.DecompressionBombError)


@dataclass(frozen=True)
class DecodeOptions:
    """What every image is turned into.

    image_size: (H, W), or None to keep each image's size; resize_mode: one of
    :data:`RESIZE_MODES`; channels: 1 or 3 (the folder loader resolves None before
    decoding); background: the RGB colour that transparency is composited on and "pad"
    fills with; max_pixels: the most pixels an image header may claim.
    """

    image_size: tuple[int, int] | None = None
    resize_mode: str = "resize"
    channels: int | None = None
    background: tuple[int, int, int] = WHITE
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        size = self.image_size
        if size is not None and (len(size) != 2 or not all(_positive_int(n) for n in size)):
            raise ValueError(f"image_size must be [H, W] with two positive integers, got {size!r}")
        if size is not None:
            object.__setattr__(self, "image_size", (int(size[0]), int(size[1])))
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {', '.join(RESIZE_MODES)}, "
                             f"got {self.resize_mode!r}")
        if self.channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels!r}")
        bg = self.background
        if len(bg) != 3 or not all(isinstance(v, int | np.integer) and 0 <= v <= 255 for v in bg):
            raise ValueError(f"background must be an RGB triple of ints in 0..255, got {bg!r}")
        object.__setattr__(self, "background", tuple(int(v) for v in bg))
        if not _positive_int(self.max_pixels):
            raise ValueError(f"max_pixels must be a positive integer, got {self.max_pixels!r}")


@dataclass(frozen=True)
class ImageInfo:
    """An image's size after EXIF orientation, and whether it is grey (decides channels)."""

    width: int
    height: int
    grey: bool


def probe_image(path: str | os.PathLike, options: DecodeOptions) -> ImageInfo:
    """Size and greyness of the image at ``path``, from its header (palettes are decoded).

    A PNG whose EXIF block comes after its pixel data reports its stored size here; if
    that block rotates it, :func:`decode_image` then finds a size that differs.
    """
    with open_image(path, options.max_pixels) as im:
        width, height = _stored_size(im)
        if _header_orientation(im) in TRANSPOSING_ORIENTATIONS:
            width, height = height, width
        try:
            grey = _is_grey(im, options.background)
        except PILLOW_FAULTS as exc:
            raise DataError(f"{path}: cannot decode {im.format} palette: {one_line(exc)}") from exc
        return ImageInfo(width, height, grey)


def decode_image(path: str | os.PathLike, options: DecodeOptions) -> np.ndarray:
    """The image at ``path`` as uint8 (C, H, W), C = ``options.channels`` (which must be set)."""
    with open_image(path, options.max_pixels) as im:
        try:
            _draft(im, options)
            im.load()
            ImageOps.exif_transpose(im, in_place=True)
        except PILLOW_FAULTS as exc:
            raise DataError(f"{path}: cannot decode {im.format} data: {one_line(exc)}") from exc
        return convert_image(im, options, str(path))


def convert_image(im: Image.Image, options: DecodeOptions, where: str) -> np.ndarray:
    """A decoded image flattened, resized and returned as uint8 (C, H, W).

    ``where`` names the image in errors (a path, or "array x[12]").
    """
    if options.channels is None:
        raise ValueError("convert_image needs options.channels set to 1 or 3")
    flat = _flatten(im, options.channels == 1, options.background, where)
    pixels = np.asarray(_fit(flat, options))
    return pixels[np.newaxis] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


@contextmanager
def open_image(path: str | os.PathLike, max_pixels: int) -> Iterator[Image.Image]:
    """Open an image (header only), refusing empty files, other formats and oversize headers."""
    try:
        handle = open(path, "rb")  # closed by the with below
    except OSError as exc:  # gone since the folder was listed, or not readable
        raise DataError(f"{path}: cannot read the file: {exc.strerror or exc}") from exc
    with handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            raise DataError(f"{path}: empty file (0 bytes)")
        with _opened(_ReadsWhatIsThere(handle, size), path, max_pixels) as im:
            yield im


class _ReadsWhatIsThere:
    """A binary file whose read(n) asks for no more than the bytes left in it.

    A buffered file allocates all n bytes before it reads: Pillow skipping the rest of a PNG
    chunk whose length field says 4 GB, with one read(length), cost 4 GB for a 100-byte file.
    Everything else goes to the file itself.
    """

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self._handle, self._size = handle, size

    def read(self, n: int | None = -1) -> bytes:
        if n is not None and n > SMALL_READ:  # PPM headers are read a byte at a time: keep those quick
            n = min(n, max(self._size - self._handle.tell(), 0))
        return self._handle.read(n)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


@contextmanager
def _opened(handle: BinaryIO | _ReadsWhatIsThere, path: str | os.PathLike,
            max_pixels: int) -> Iterator[Image.Image]:
    """Pillow's image on an open file, after the header checks of :func:`open_image`."""
    try:
        im = Image.open(handle, formats=FORMATS)
    except UnidentifiedImageError as exc:
        raise DataError(f"{path}: not an image Pillow can read as {', '.join(FORMATS)}") from exc
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: {_bomb_text(exc, max_pixels)}") from exc
    except PILLOW_FAULTS as exc:
        raise DataError(f"{path}: unreadable image header: {one_line(exc)}") from exc
    with im:
        width, height = im.size
        if width * height > max_pixels:
            raise DataError(f"{path}: {width}x{height} is {width * height:,} pixels, over the limit "
                            f"of {max_pixels:,} (max_pixels); refused before decoding")
        yield im


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _bomb_text(exc: BaseException, max_pixels: int) -> str:
    """What Pillow's own decompression-bomb refusal says, in this module's words."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    claimed = f"{int(found.group(1)):,} pixels" if found else "a pixel count"
    return (f"header claims {claimed}, over Pillow's limit of {2 * (Image.MAX_IMAGE_PIXELS or 0):,} "
            f"(and max_pixels {max_pixels:,}); refused before decoding")


def _positive_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and value > 0


def _stored_size(im: Image.Image) -> tuple[int, int]:
    """(W, H) as stored, before the EXIF orientation turns it.

    Pillow 11 and later report a TIFF's size already turned by its Orientation tag (and turn
    its pixels on load); earlier ones, like every other format, the size as stored. The TIFF's
    own ImageWidth and ImageLength tags are the stored size either way.
    """
    if im.format == "TIFF":
        return im.tag_v2.get(IMAGE_WIDTH_TAG, im.width), im.tag_v2.get(IMAGE_LENGTH_TAG, im.height)
    return im.size


def _header_orientation(im: Image.Image) -> int:
    """The EXIF orientation (1..8; 1 = as stored) as far as the header tells, without decoding.

    A PNG keeps EXIF in a chunk that may follow the pixels: such a PNG reads as 1 here
    rather than being decoded just to find out.
    """
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        orientation = im.getexif().get(ORIENTATION_TAG, 1)
    except PILLOW_FAULTS:  # corrupt EXIF: the pixels are still good, take them as stored
        return 1
    # As ImageOps.exif_transpose takes it, looking the value up as it is: 6, 6.0 and the rational
    # 6/1 turn the image, the string "6" does not (int() would take it, and the header pass then
    # expected a turned image that decoding never turned).
    return int(orientation) if orientation in ORIENTATIONS else 1


def _is_grey(im: Image.Image, background: tuple[int, int, int]) -> bool:
    """True for grey modes and for palettes of greys; alpha on a coloured background is colour."""
    if (im.mode in ALPHA_MODES or "transparency" in im.info) and len(set(background)) > 1:
        return False
    if im.mode in GREY_MODES:
        return True
    if im.mode not in ("P", "PA"):
        return False
    im.load()  # the palette as Pillow expands it; raw palettes come in several layouts
    rgb = np.asarray(im.getpalette("RGB") or [], dtype=np.uint8).reshape(-1, 3)
    return bool((rgb[:, 0] == rgb[:, 1]).all() and (rgb[:, 1] == rgb[:, 2]).all())


def _flatten(im: Image.Image, grey: bool, background: tuple[int, int, int], where: str) -> Image.Image:
    """The image as 'L' (``grey``) or 'RGB', alpha composited on ``background``."""
    if im.mode in INTEGER_GREY_MODES:
        im = _rescale_integer(im, where)
    elif im.mode == "F":
        im = _rescale_float(im, where)
    if im.mode in ALPHA_MODES or "transparency" in im.info:
        im = _composite(im, background)
    elif im.mode not in ("L", "RGB"):  # 1, P, CMYK, YCbCr, LAB, HSV
        im = im.convert("RGB")
    target = "L" if grey else "RGB"
    return im if im.mode == target else im.convert(target)


def _rescale_integer(im: Image.Image, where: str) -> Image.Image:
    """16-bit grey to 'L': v * 255 / 65535, rounded ('I' is read as 16-bit too)."""
    values = np.asarray(im)
    low, high = int(values.min(initial=0)), int(values.max(initial=0))
    if low < 0 or high > 65535:
        raise DataError(f"{where}: {im.mode} image with values {low}..{high}, outside the "
                        f"16-bit range 0..65535 it is read as")
    scaled = (values.astype(np.uint32) * 255 + 32767) // 65535
    return Image.fromarray(scaled.astype(np.uint8), "L")


def _rescale_float(im: Image.Image, where: str) -> Image.Image:
    """Float grey ('F', e.g. a float TIFF) in [0, 1] to 'L'."""
    values = np.asarray(im)
    check_unit_range(values, where)
    return Image.fromarray(np.rint(values * 255).astype(np.uint8), "L")


def check_unit_range(values: np.ndarray, where: str) -> None:
    """Raise DataError unless the float ``values`` all lie in [0, 1] (NaN does not)."""
    if values.size == 0:
        return
    low, high = float(np.min(values)), float(np.max(values))
    if not (0.0 <= low and high <= 1.0):  # written so that NaN fails
        raise DataError(f"{where}: float images must lie in [0, 1]; found values from "
                        f"{low:g} to {high:g}")


def _composite(im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """RGB of the image laid over an opaque ``background``."""
    canvas = Image.new("RGBA", im.size, (*background, 255))
    return Image.alpha_composite(canvas, im.convert("RGBA")).convert("RGB")


def _fit(im: Image.Image, options: DecodeOptions) -> Image.Image:
    """Resize to ``options.image_size`` by ``options.resize_mode`` (see the module docstring)."""
    if options.image_size is None:
        return im
    height, width = options.image_size
    if im.size == (width, height):
        return im
    if options.resize_mode == "resize":
        return _stretch(im, width, height)
    if options.resize_mode == "crop":
        return _scale_and_crop(im, width, height)
    return _scale_and_pad(im, width, height, options.background)


def _filter(source: tuple[int, int], target: tuple[int, int]) -> Image.Resampling:
    """BOX when no side grows (an exact area average), LANCZOS when one does."""
    shrinking = target[0] <= source[0] and target[1] <= source[1]
    return Image.Resampling.BOX if shrinking else Image.Resampling.LANCZOS


def _stretch(im: Image.Image, width: int, height: int) -> Image.Image:
    """Resize to width x height; when one side grows and the other shrinks, each by its own filter.

    One filter for both, LANCZOS as soon as either side grows, would lay a LANCZOS kernel along
    a side shrunk many times over, and Pillow holds its weights for every source row:
    stretching a 1 x 10,000,000 strip (a 20 kB PNG) to 48 x 48 took 500 MB and 3.5 s. The
    shrinking side goes first, so that no step is larger than the image.
    """
    grows_w, grows_h = width > im.width, height > im.height
    if grows_w == grows_h:
        return im.resize((width, height), _filter(im.size, (width, height)))
    box, lanczos = Image.Resampling.BOX, Image.Resampling.LANCZOS
    if grows_w:
        return im.resize((im.width, height), box).resize((width, height), lanczos)
    return im.resize((width, im.height), box).resize((width, height), lanczos)


def _scale_and_crop(im: Image.Image, width: int, height: int) -> Image.Image:
    """Scale so that the image covers width x height, keep the centre."""
    scale = max(width / im.width, height / im.height)
    # The kept region, in source pixels. The side that fits exactly can come out a hair over the
    # image's own (17 / (17 / 7) is 7.000000000000001), a box Pillow refuses: hence the min.
    crop_w, crop_h = min(width / scale, im.width), min(height / scale, im.height)
    left, top = (im.width - crop_w) / 2, (im.height - crop_h) / 2
    box = (left, top, left + crop_w, top + crop_h)
    return im.resize((width, height), _filter((round(crop_w), round(crop_h)), (width, height)), box=box)


def _scale_and_pad(im: Image.Image, width: int, height: int,
                   background: tuple[int, int, int]) -> Image.Image:
    """Scale so that the image fits in width x height, centre it on ``background``."""
    scale = min(width / im.width, height / im.height)
    inner = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    canvas = Image.new("RGB", (width, height), background).convert(im.mode)
    canvas.paste(im.resize(inner, _filter(im.size, inner)),
                 ((width - inner[0]) // 2, (height - inner[1]) // 2))
    return canvas


def _draft(im: Image.Image, options: DecodeOptions) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale when it is to be shrunk that much anyway."""
    if options.image_size is None or im.format not in ("JPEG", "MPO"):
        return
    stored_w, stored_h = im.size
    swapped = _header_orientation(im) in TRANSPOSING_ORIENTATIONS
    upright_w, upright_h = (stored_h, stored_w) if swapped else (stored_w, stored_h)
    need_w, need_h = _resized_size(upright_w, upright_h, options)
    if swapped:
        need_w, need_h = need_h, need_w
    request = (math.ceil(need_w * DRAFT_GAP), math.ceil(need_h * DRAFT_GAP))
    if 2 * request[0] <= stored_w and 2 * request[1] <= stored_h:
        im.draft(im.mode, request)


def _resized_size(width: int, height: int, options: DecodeOptions) -> tuple[float, float]:
    """The size an upright width x height image is scaled to before any crop or pad."""
    target_h, target_w = options.image_size
    if options.resize_mode == "resize":
        return target_w, target_h
    pick = max if options.resize_mode == "crop" else min
    scale = pick(target_w / width, target_h / height)
    return width * scale, height * scale

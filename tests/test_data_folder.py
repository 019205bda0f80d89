"""Tests for your own images: folders (every format, conversions, sizes, splits, labels, bad
files, the cache) and arrays (three layouts, uint8 and float, .npy, .npz, tensors).

Images are generated with Pillow into tmp_path; real data are Fashion-MNIST (through
vaelab's own loader) written out as a folder of PNGs, and scikit-learn's 8x8 digits.
"""

from __future__ import annotations

import hashlib
import re
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaelab.progress
from vaelab.data import (
    DataError,
    DataWarning,
    load_dataset,
    load_image_arrays,
    load_image_file,
    load_image_folder,
    load_images,
)
from vaelab.data.own import cache as imagecache
from vaelab.data.own import decode as imagefile
from vaelab.data.own import folder as folder_module
from vaelab.data.arrays import sha256_array

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- helpers

def save(path: Path, pixels: np.ndarray, mode: str | None = None, **kwargs) -> Path:
    """Write an (H, W) or (H, W, C) array as an image file (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, *([mode] if mode else [])).save(path, **kwargs)
    return path


def grey(h: int = 8, w: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def rgb(h: int = 8, w: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def smooth_rgb(h: int = 32, w: int = 32) -> np.ndarray:
    """Gradients: what JPEG keeps well, so a round trip can be checked as close."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + yy) * 255 // (h + w - 2)],
                    axis=-1).astype(np.uint8)


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def load(root: Path, cache: Path, **options):
    """load_image_folder with the test's own cache, quiet, everything in train by default."""
    options.setdefault("val_fraction", 0.0)
    options.setdefault("test_fraction", 0.0)
    return load_image_folder(root, cache_dir=cache, progress=False, **options)


def only_image(data) -> np.ndarray:
    """The single image of a one-image data set, (C, H, W)."""
    assert len(data.x_train) == 1
    return np.asarray(data.x_train[0])


def chw(pixels: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) as (C, H, W)."""
    return pixels[np.newaxis] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def error_text(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text, f"not one line: {text!r}"
    return text


# ---------------------------------------------------------------- formats and conversions

LOSSLESS = {".png": {}, ".bmp": {}, ".tif": {}, ".webp": {"lossless": True}, ".ppm": {}}


@pytest.mark.parametrize("suffix", sorted(LOSSLESS))
def test_lossless_formats_round_trip_exactly(tmp_path, cache, suffix):
    colour = rgb(9, 7)
    save(tmp_path / "colour" / f"a{suffix}", colour, **LOSSLESS[suffix])
    assert np.array_equal(only_image(load(tmp_path / "colour", cache)), chw(colour))
    grey_pixels = grey(9, 7)
    save(tmp_path / "grey" / f"a{suffix}", grey_pixels, **LOSSLESS[suffix])
    # WebP stores grey as RGB, which channels=1 turns back exactly (R = G = B)
    assert np.array_equal(only_image(load(tmp_path / "grey", cache, channels=1)), chw(grey_pixels))


def test_gif_round_trips_grey_and_palette_colour(tmp_path, cache):
    pixels = grey(10, 12)
    save(tmp_path / "g" / "a.gif", pixels)
    assert np.array_equal(only_image(load(tmp_path / "g", cache)), chw(pixels))
    palette = RNG.integers(0, 256, (16, 3), dtype=np.uint8)
    index = RNG.integers(0, 16, (10, 12), dtype=np.uint8)
    image = Image.fromarray(index, "P")
    image.putpalette(palette.ravel().tolist())
    (tmp_path / "c").mkdir()
    image.save(tmp_path / "c" / "a.gif")
    assert np.array_equal(only_image(load(tmp_path / "c", cache)), chw(palette[index]))


def test_jpeg_round_trips_close(tmp_path, cache):
    pixels = smooth_rgb()
    save(tmp_path / "a.jpg", pixels, quality=95)
    decoded = only_image(load(tmp_path, cache)).astype(int)
    assert decoded.shape == (3, 32, 32)
    assert np.abs(decoded - chw(pixels)).mean() < 2.0


def test_rgba_is_composited_on_the_background(tmp_path, cache):
    pixels = np.zeros((1, 3, 4), np.uint8)
    pixels[0, 0] = (200, 10, 20, 0)      # transparent: the background
    pixels[0, 1] = (200, 10, 20, 255)    # opaque: itself
    pixels[0, 2] = (200, 10, 20, 128)    # half: between
    save(tmp_path / "a.png", pixels)
    white = only_image(load(tmp_path, cache))
    assert white[:, 0, 0].tolist() == [255, 255, 255]
    assert white[:, 0, 1].tolist() == [200, 10, 20]
    assert np.allclose(white[:, 0, 2], [228, 133, 138], atol=1)
    black = only_image(load(tmp_path, cache, background=(0, 0, 0)))
    assert black[:, 0, 0].tolist() == [0, 0, 0]
    assert np.allclose(black[:, 0, 2], [100, 5, 10], atol=1)


def test_grey_alpha_on_white_stays_grey(tmp_path, cache):
    pixels = np.stack([grey(4, 4), np.full((4, 4), 255, np.uint8)], axis=-1)
    save(tmp_path / "a.png", pixels, "LA")
    data = load(tmp_path, cache)
    assert data.image_shape == (1, 4, 4)
    assert np.array_equal(only_image(data), chw(pixels[..., 0]))


def test_palette_images(tmp_path, cache):
    grey_palette = Image.fromarray(grey(5, 5), "L").convert("P")
    (tmp_path / "g").mkdir()
    grey_palette.save(tmp_path / "g" / "a.png")
    data = load(tmp_path / "g", cache)
    assert data.image_shape == (1, 5, 5), "a palette of greys is grey"
    assert np.array_equal(only_image(data)[0], np.asarray(grey_palette.convert("L")))
    palette = RNG.integers(0, 256, (8, 3), dtype=np.uint8)
    index = RNG.integers(0, 8, (5, 5), dtype=np.uint8)
    colour = Image.fromarray(index, "P")
    colour.putpalette(palette.ravel().tolist())
    (tmp_path / "c").mkdir()
    colour.save(tmp_path / "c" / "a.png")
    assert np.array_equal(only_image(load(tmp_path / "c", cache)), chw(palette[index]))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grey_is_scaled_not_clipped(tmp_path, cache, suffix):
    pixels = np.array([[0, 257, 32896, 65535]], np.uint16)
    save(tmp_path / f"a{suffix}", pixels)
    assert Image.open(tmp_path / f"a{suffix}").mode.startswith("I;16")
    assert only_image(load(tmp_path, cache))[0].tolist() == [[0, 1, 128, 255]]


def test_32_bit_grey_outside_16_bits_is_an_error(tmp_path, cache):
    save(tmp_path / "a.tif", np.array([[0, 70000]], np.int32))
    with pytest.raises(DataError) as excinfo:
        load(tmp_path, cache)
    assert re.search(r"a\.tif: I image with values 0\.\.70000, outside the 16-bit range", error_text(excinfo))


def test_float_tiff_in_unit_range(tmp_path, cache):
    save(tmp_path / "ok" / "a.tif", np.array([[0.0, 0.5, 1.0]], np.float32))
    assert only_image(load(tmp_path / "ok", cache))[0].tolist() == [[0, 128, 255]]
    save(tmp_path / "bad" / "a.tif", np.array([[0.0, 2.5]], np.float32))
    with pytest.raises(DataError) as excinfo:
        load(tmp_path / "bad", cache)
    assert error_text(excinfo).endswith("a.tif: float images must lie in [0, 1]; found values from 0 to 2.5")


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
def test_exif_orientation_is_applied(tmp_path, cache, suffix):
    pixels = np.kron(RNG.integers(0, 2, (4, 6), dtype=np.uint8) * 255, np.ones((8, 8), np.uint8))
    exif = Image.Exif()
    exif[imagefile.ORIENTATION_TAG] = 6  # stored rotated: shown after 90 degrees clockwise
    lossless = {"lossless": True} if suffix == ".webp" else {}
    save(tmp_path / f"a{suffix}", pixels, exif=exif.tobytes(), **lossless)
    decoded = only_image(load(tmp_path, cache))[0]
    upright = np.rot90(pixels, k=-1)
    assert decoded.shape == upright.shape == (48, 32)
    assert np.abs(decoded.astype(int) - upright).mean() < (1 if suffix != ".jpg" else 8)
    # beside an image stored upright, the header pass must find the same size for both
    save(tmp_path / "b.png", upright)
    both = load(tmp_path, cache).x_train
    assert len(both) == 2 and both.shape[2:] == (48, 32)


@pytest.mark.parametrize("entry_type, count, value, turned", [
    (2, 2, b"6\0", False),  # ASCII "6": Pillow's exif_transpose leaves it as stored
    (11, 1, struct.pack(">f", 6.0), True),  # FLOAT 6.0: turned
    (7, 1, b"\x06", False),  # UNDEFINED b"\x06": as stored
])
def test_an_oddly_typed_exif_orientation_is_read_as_decoding_reads_it(tmp_path, cache, entry_type, count, value,
                                                                      turned):
    # big-endian EXIF with one entry, Orientation, of the type given; the header pass took int("6")
    # for a quarter turn that decoding never made, and refused the folder for it
    ifd = struct.pack(">HHHI", 1, imagefile.ORIENTATION_TAG, entry_type, count) + value.ljust(4, b"\0")
    exif = b"Exif\0\0MM\0*" + struct.pack(">I", 8) + ifd + struct.pack(">I", 0)
    save(tmp_path / "a.jpg", grey(4, 6), exif=exif)
    save(tmp_path / "b.png", grey(6, 4) if turned else grey(4, 6))
    assert load(tmp_path, cache).x_train.shape == ((2, 1, 6, 4) if turned else (2, 1, 4, 6))


def test_no_channels_given_all_grey_is_one_any_colour_is_three(tmp_path, cache):
    save(tmp_path / "g" / "a.png", grey(seed=1))
    save(tmp_path / "g" / "b.bmp", grey(seed=2))
    assert load(tmp_path / "g", cache).image_shape == (1, 8, 6)
    save(tmp_path / "g" / "c.png", rgb(seed=3))
    data = load(tmp_path / "g", cache)
    assert data.image_shape == (3, 8, 6)
    by_name = dict(zip(data.files["train"], data.x_train, strict=True))
    assert np.array_equal(by_name["a.png"], np.repeat(chw(grey(seed=1)), 3, axis=0))


def test_channels_one_turns_colour_into_luma(tmp_path, cache):
    pixels = rgb(seed=4)
    save(tmp_path / "a.png", pixels)
    expected = np.asarray(Image.fromarray(pixels).convert("L"))
    assert np.array_equal(only_image(load(tmp_path, cache, channels=1))[0], expected)


# ---------------------------------------------------------------- sizes

def stripes(h: int, w: int) -> np.ndarray:
    """Left third red, middle third green, right third blue."""
    pixels = np.zeros((h, w, 3), np.uint8)
    third = w // 3
    pixels[:, :third, 0] = pixels[:, third:2 * third, 1] = pixels[:, 2 * third:, 2] = 255
    return pixels


def test_resize_crop_and_pad(tmp_path, cache):
    save(tmp_path / "a.png", stripes(20, 60))
    stretched = only_image(load(tmp_path, cache, image_size=(10, 12)))
    assert stretched.shape == (3, 10, 12)
    assert stretched[:, :, 0].tolist() == [[255] * 10, [0] * 10, [0] * 10]
    cropped = only_image(load(tmp_path, cache, image_size=(10, 10), resize_mode="crop"))
    assert cropped.shape == (3, 10, 10)
    assert (cropped[1] == 255).all() and (cropped[0] == 0).all() and (cropped[2] == 0).all()
    padded = only_image(load(tmp_path, cache, image_size=(30, 30), resize_mode="pad",
                             background=(7, 8, 9)))
    assert padded.shape == (3, 30, 30)
    assert (padded[:, :10] == np.array([7, 8, 9])[:, None, None]).all(), "bands above"
    assert (padded[:, 20:] == np.array([7, 8, 9])[:, None, None]).all(), "and below"
    assert padded[:, 10:20, 15].tolist() == [[0] * 10, [255] * 10, [0] * 10]


def test_crop_whose_kept_region_rounds_past_the_image(tmp_path, cache):
    # A 1 x 7 (W x H) image scaled by 17/7 to cover 1 x 17 keeps 17 / (17/7) rows, which is
    # 7.000000000000001 in floats: a crop box a hair outside the image, which Pillow refuses.
    save(tmp_path / "a.png", grey(7, 1))
    cropped = only_image(load(tmp_path, cache, image_size=(17, 1), resize_mode="crop"))
    assert cropped.shape == (1, 17, 1)
    assert np.array_equal(cropped, only_image(load(tmp_path, cache, image_size=(17, 1))))  # nothing cut


def peak_rss_growth(call) -> int:
    """How far call() raised this process's peak RSS, in bytes (Linux: /proc/self/clear_refs):
    what Pillow allocates is C's malloc, which tracemalloc does not see."""
    def status(key: str) -> int:
        return int(re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)[1]) * 1024
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pytest.skip("no /proc/self/clear_refs to reset the peak RSS with")
    base = status("VmRSS")
    call()
    return status("VmHWM") - base


def test_stretching_a_tall_strip_wide_filters_each_side_by_its_own_change(tmp_path, cache):
    # LANCZOS on both sides, since the width grows, put a 250,000-row kernel along the height
    # shrunk 1 / 41,667 times, weights Pillow holds per source row: 109 MB for a 4 kB PNG.
    Image.new("L", (1, 2_000_000), 128).save(tmp_path / "strip.png")
    images = []
    grown = peak_rss_growth(lambda: images.append(load(tmp_path, cache, image_size=(48, 48), use_cache=False)))
    assert (np.abs(only_image(images[0]).astype(int) - 128) <= 1).all()  # 41,667 weights, rounded
    assert grown < 60 * 2**20, f"{grown / 2**20:.0f} MB"  # the decoded strip alone is 34 MB
    small = grey(6, 30)  # widened 30 -> 40 (LANCZOS), shortened 6 -> 2 (BOX: the mean of 3 rows)
    save(tmp_path / "small" / "a.png", small)
    expected = Image.fromarray(small).resize((30, 2), Image.Resampling.BOX).resize((40, 2), Image.Resampling.LANCZOS)
    assert np.array_equal(only_image(load(tmp_path / "small", cache, image_size=(2, 40)))[0], np.asarray(expected))


def test_shrinking_averages_areas_and_enlarging_uses_lanczos(tmp_path, cache):
    blocks = np.kron(np.array([[0, 100], [200, 40]], np.uint8), np.ones((4, 4), np.uint8))
    blocks[0, 0] = 16  # one odd pixel: its block's mean becomes 1
    save(tmp_path / "a.png", blocks)
    assert only_image(load(tmp_path, cache, image_size=(2, 2)))[0].tolist() == [[1, 100], [200, 40]]
    small = grey(5, 5)
    save(tmp_path / "up" / "a.png", small)
    expected = np.asarray(Image.fromarray(small).resize((9, 9), Image.Resampling.LANCZOS))
    assert np.array_equal(only_image(load(tmp_path / "up", cache, image_size=(9, 9)))[0], expected)


def test_a_large_jpeg_shrunk_a_lot_decodes_at_reduced_scale(tmp_path, cache):
    save(tmp_path / "a.jpg", np.kron(smooth_rgb(), np.ones((16, 16, 1), np.uint8)), quality=95)
    full = np.asarray(Image.open(tmp_path / "a.jpg").resize((16, 16), Image.Resampling.BOX))
    decoded = only_image(load(tmp_path, cache, image_size=(16, 16)))
    assert np.abs(decoded.astype(int) - chw(full)).mean() < 2.0


def test_mixed_sizes_are_an_error_listing_the_sizes_and_the_fix(tmp_path, cache):
    for i in range(3):
        save(tmp_path / f"a{i}.png", grey(28, 28, seed=i))
    for i in range(2):
        save(tmp_path / f"b{i}.png", grey(32, 32, seed=i))
    save(tmp_path / "c.png", grey(10, 12))
    save(tmp_path / "d.png", grey(5, 5))
    with pytest.raises(DataError) as excinfo:
        load(tmp_path, cache)
    text = error_text(excinfo)
    assert "images of different sizes (H x W): 28x28 (3 images), 32x32 (2 images)" in text
    assert "and 1 other sizes" in text
    assert "set data.image_size = [H, W] (e.g. [28, 28])" in text
    assert load(tmp_path, cache, image_size=(16, 16)).x_train.shape == (7, 1, 16, 16)


def test_bad_options_are_refused_by_name(tmp_path, cache):
    save(tmp_path / "a.png", grey())
    for options, name in [({"image_size": (0, 4)}, "image_size"), ({"resize_mode": "fit"}, "resize_mode"),
                          ({"channels": 2}, "channels"), ({"background": (0, 0)}, "background"),
                          ({"val_fraction": 0.6, "test_fraction": 0.5}, "val_fraction")]:
        with pytest.raises(ValueError, match=name):
            load(tmp_path, cache, **options)


# ---------------------------------------------------------------- splits and labels

def test_split_and_class_sub_folders(tmp_path, cache):
    for rel, seed in [("train/cat/1.png", 1), ("train/cat/0.png", 0), ("train/dog/2.png", 2),
                      ("val/dog/3.png", 3), ("test/ant/4.png", 4), ("test/cat/5.png", 5)]:
        save(tmp_path / rel, grey(seed=seed))
    data = load(tmp_path, cache, val_fraction=0.5, test_fraction=0.3)  # split folders win
    assert data.label_names == ("ant", "cat", "dog")
    assert [len(data.x_train), len(data.x_val), len(data.x_test)] == [3, 1, 2]
    assert data.files["train"].tolist() == ["train/cat/0.png", "train/cat/1.png", "train/dog/2.png"]
    assert data.y_train.tolist() == [1, 1, 2] and data.y_val.tolist() == [2]
    assert data.y_test.tolist() == [0, 1]
    assert np.array_equal(data.x_test[1], chw(grey(seed=5)))
    assert data.y_train.dtype == np.int64


def test_split_folders_without_classes_and_a_missing_split(tmp_path, cache):
    save(tmp_path / "train" / "a.png", grey(seed=1))
    save(tmp_path / "test" / "b.png", grey(seed=2))
    data = load(tmp_path, cache)
    assert not data.labelled and data.y_train is None and data.label_names == ()
    assert data.x_val.shape == (0, 1, 8, 6) and len(data.x_test) == 1


def test_files_outside_split_folders_are_an_error(tmp_path, cache):
    save(tmp_path / "train" / "a.png", grey())
    save(tmp_path / "stray.png", grey())
    with pytest.raises(DataError) as excinfo:
        load(tmp_path, cache)
    assert f"{tmp_path / 'stray.png'}: lies outside the split folders" in error_text(excinfo)


def test_images_beside_class_folders_are_an_error(tmp_path, cache):
    save(tmp_path / "cat" / "a.png", grey())
    save(tmp_path / "loose.png", grey())
    with pytest.raises(DataError) as excinfo:
        load(tmp_path, cache)
    assert f"{tmp_path / 'loose.png'}: lies beside the class sub-folders (cat/)" in error_text(excinfo)


def test_seeded_split_by_fractions(tmp_path, cache):
    for i in range(100):
        save(tmp_path / ("odd" if i % 2 else "even") / f"{i:03d}.png", grey(4, 4, seed=i))
    first = load(tmp_path, cache, val_fraction=0.2, test_fraction=0.1, seed=7)
    assert [len(first.x_train), len(first.x_val), len(first.x_test)] == [70, 20, 10]
    names = [set(first.files[s].tolist()) for s in ("train", "val", "test")]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert len(names[0] | names[1] | names[2]) == 100
    for split in ("train", "val", "test"):  # sorted within each split, labels follow the files
        files = getattr(first, "files")[split].tolist()
        assert files == sorted(files)
        assert getattr(first, f"y_{split}").tolist() == [int(f.startswith("odd")) for f in files]
    again = load(tmp_path, cache, val_fraction=0.2, test_fraction=0.1, seed=7, use_cache=False)
    assert again.files["test"].tolist() == first.files["test"].tolist()
    other = load(tmp_path, cache, val_fraction=0.2, test_fraction=0.1, seed=8)
    assert other.files["test"].tolist() != first.files["test"].tolist()


def test_a_new_file_leaves_the_other_files_test_split_mostly_alone(tmp_path, cache):
    for i in range(200):
        save(tmp_path / f"{i:03d}.png", grey(2, 2, seed=i))
    before = set(load(tmp_path, cache, test_fraction=0.1).files["test"].tolist())
    save(tmp_path / "new.png", grey(2, 2))
    after = set(load(tmp_path, cache, test_fraction=0.1).files["test"].tolist())
    assert len(before & after) >= 19


def test_file_order_is_sorted_relative_paths(tmp_path, cache):
    for name in ["b.png", "a10.png", "a2.png", "a-c.png"]:
        save(tmp_path / name, grey(seed=len(name)))
    save(tmp_path / "a" / "z.png", grey())
    with pytest.raises(DataError, match="lies beside the class sub-folders"):
        load(tmp_path, cache)
    (tmp_path / "a" / "z.png").unlink()
    assert load(tmp_path, cache).files["train"].tolist() == ["a-c.png", "a10.png", "a2.png", "b.png"]


# ---------------------------------------------------------------- bad input

def png_header_only(path: Path, width: int, height: int) -> Path:
    """A valid PNG signature and IHDR claiming width x height, with almost no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))
    return path


def cut(path: Path, pixels: np.ndarray, keep: int, **options) -> Path:
    """An image file of ``pixels`` with only its first ``keep`` bytes (negative: all but)."""
    save(path, pixels, **options)
    path.write_bytes(path.read_bytes()[:keep])
    return path


BAD_FILES = {
    "text.png": (lambda p: p.write_text("hello, not an image"), r"not an image Pillow can read"),
    "notes.xyz": (lambda p: p.write_text("an unknown suffix is tried, and refused"), r"not an image"),
    "empty.png": (lambda p: p.write_bytes(b""), r"empty file \(0 bytes\)"),
    # the same size and mode as the good images, so that the header pass finds nothing
    "cut.jpg": (lambda p: cut(p, grey(), -60, quality=100),
                r"cannot decode JPEG data: image file is truncated"),
    "cut-header.jpg": (lambda p: cut(p, grey(), 120), r"unreadable image header: Truncated File Read"),
    "cut.png": (lambda p: cut(p, grey(), 64), r"cannot decode PNG data: image file is truncated"),
    "bomb.png": (lambda p: png_header_only(p, 100_000, 100_000),
                 r"header claims 10,000,000,000 pixels, over Pillow's limit"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_each_bad_file_is_a_one_line_error_naming_it(tmp_path, cache, name):
    make, pattern = BAD_FILES[name]
    save(tmp_path / "good.png", grey())
    make(tmp_path / name)
    with pytest.raises(DataError) as excinfo:
        load(tmp_path, cache)
    text = error_text(excinfo)
    assert text.startswith(f"{tmp_path / name}: "), text
    assert re.search(pattern, text), text


@pytest.mark.parametrize("given", [{}, {"image_size": (8, 6), "channels": 1}])
def test_skip_bad_leaves_them_out_and_counts_them(tmp_path, cache, given):
    goods = {f"good{i}.png": grey(seed=i) for i in range(5)}
    for name, pixels in goods.items():
        save(tmp_path / name, pixels)
    for name, (make, _) in BAD_FILES.items():
        make(tmp_path / name)
    with pytest.warns(DataWarning, match=rf"skipped {len(BAD_FILES)} unreadable image files: .*bomb\.png"):
        data = load(tmp_path, cache, skip_bad=True, **given)
    assert data.files["train"].tolist() == sorted(goods)
    assert np.array_equal(data.x_train, np.stack([chw(goods[n]) for n in sorted(goods)]))
    assert len(data.skipped) == len(BAD_FILES)
    assert all(line.startswith(str(tmp_path)) and "\n" not in line for line in data.skipped)
    assert data.digests["x_train"] == sha256_array(data.x_train)
    with pytest.warns(DataWarning, match="skipped"):  # the cached entry says so again
        assert load(tmp_path, cache, skip_bad=True, **given).source.startswith("cache ")


def test_only_bad_files_with_skip_bad_is_still_an_error(tmp_path, cache):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.png").write_text("text")
    with pytest.raises(DataError, match=r"none of the 2 image files could be read; first: .*a\.png: empty"):
        load(tmp_path, cache, skip_bad=True)
    # with size and channels given, no header pass: both fail where they are decoded
    with pytest.raises(DataError, match=r"none of the 2 image files could be decoded; first: .*a\.png: empty"):
        load(tmp_path, cache, skip_bad=True, image_size=(4, 4), channels=1)


def test_a_file_gone_since_the_listing_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"gone\.png: cannot read the file: No such file or directory"):
        imagefile.decode_image(tmp_path / "gone.png", imagefile.DecodeOptions(channels=1))


def test_the_bomb_header_costs_no_allocation(tmp_path, cache):
    png_header_only(tmp_path / "bomb.png", 100_000, 100_000)
    tracemalloc.start()
    with pytest.raises(DataError):
        load(tmp_path, cache)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2**20


@pytest.mark.parametrize("length", [2**28, 2**32 - 1])
def test_a_png_chunk_length_past_the_end_costs_no_allocation(tmp_path, cache, length):
    # The pixels end before the IDAT chunk its length field claims does; Pillow skips the rest
    # with one read(length), which a buffered file allocates in full before reading: 4 GB here.
    save(tmp_path / "a.png", grey())
    data = bytearray((tmp_path / "a.png").read_bytes())
    at = data.index(b"IDAT") - 4
    data[at:at + 4] = struct.pack(">I", length)
    (tmp_path / "a.png").write_bytes(bytes(data))
    tracemalloc.start()
    try:
        pixels = only_image(load(tmp_path, cache, use_cache=False))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(pixels, chw(grey()))
    assert peak < 16 * 2**20


def test_max_pixels_refuses_large_images_before_decoding(tmp_path, cache):
    save(tmp_path / "big.png", grey(100, 100))
    with pytest.raises(DataError) as excinfo:
        load(tmp_path, cache, max_pixels=1000)
    assert error_text(excinfo) == (f"{tmp_path / 'big.png'}: 100x100 is 10,000 pixels, over the "
                                   f"limit of 1,000 (max_pixels); refused before decoding")


def test_empty_folders(tmp_path, cache):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no image files in the folder or its sub-folders"):
        load(tmp_path / "empty", cache)
    (tmp_path / "only-notes").mkdir()
    (tmp_path / "only-notes" / "README.txt").write_text("x")
    with pytest.raises(DataError, match="no image files"):
        load(tmp_path / "only-notes", cache)
    with pytest.raises(DataError, match="no such folder"):
        load(tmp_path / "missing", cache)


def test_files_not_meant_as_images_are_ignored_and_reported(tmp_path, cache, capsys):
    save(tmp_path / "cat" / "a.png", grey())
    for name in ["cat/.DS_Store", "notes.txt", "labels.json", "cat/Thumbs.db", ".hidden.png"]:
        (tmp_path / name).write_text("x")
    save(tmp_path / ".git" / "b.png", grey())  # hidden folders are not entered
    data = load_image_folder(tmp_path, cache_dir=cache, progress=True)
    assert data.ignored == (".hidden.png", "cat/.DS_Store", "cat/Thumbs.db", "labels.json", "notes.txt")
    assert data.label_names == ("cat",) and len(data.x_train) == 1
    err = capsys.readouterr().err
    listed = ".hidden.png, cat/.DS_Store, cat/Thumbs.db, ..."
    assert f"{tmp_path}: ignored 5 files that are not images ({listed})" in err


def test_progress_lines_when_not_on_a_terminal(tmp_path, cache, capsys, monkeypatch):
    monkeypatch.setattr(vaelab.progress, "LINE_EVERY", 0.0)
    for i in range(3):
        save(tmp_path / f"{i}.png", grey(seed=i))
    load_image_folder(tmp_path, cache_dir=cache, progress=True)
    err = capsys.readouterr().err
    assert "reading image headers: 1/3" not in err  # a chunk at a time
    assert re.search(r"decoding images: 3/3 images \([\d.]+/s, about 0 s left\)", err)


# ---------------------------------------------------------------- cache

@pytest.fixture
def decode_calls(monkeypatch) -> list[str]:
    """Records every decode_image call (the folder code calls it through the module)."""
    calls: list[str] = []
    real = imagefile.decode_image

    def counting(path, options):
        calls.append(str(path))
        return real(path, options)

    monkeypatch.setattr(imagefile, "decode_image", counting)
    return calls


def small_folder(root: Path, n: int = 6) -> Path:
    for i in range(n):
        save(root / ("a" if i % 2 else "b") / f"{i}.png", grey(seed=i))
    return root


def test_a_second_load_is_served_by_the_cache(tmp_path, cache, decode_calls):
    small_folder(tmp_path / "f")
    first = load(tmp_path / "f", cache)
    assert len(decode_calls) == 6 and first.source == f"folder {tmp_path / 'f'} (decoded)"
    second = load(tmp_path / "f", cache)
    assert len(decode_calls) == 6, "nothing decoded again"
    assert second.source.startswith(f"cache {cache / 'images'}")
    for key in ("x_train", "y_train", "x_val", "x_test"):
        assert np.array_equal(getattr(first, key), getattr(second, key))
    assert first.digests == second.digests and first.label_names == second.label_names
    assert isinstance(second.x_train, np.memmap) and not second.x_train.flags.writeable
    assert second.digests["x_train"] == sha256_array(second.x_train)
    assert second.digests["y_train"] == sha256_array(second.y_train)


def test_a_changed_file_or_option_decodes_again(tmp_path, cache, decode_calls):
    root = small_folder(tmp_path / "f")
    load(tmp_path / "f", cache)
    save(root / "a" / "1.png", np.full((8, 6), 77, np.uint8))
    changed = load(root, cache)
    assert len(decode_calls) == 12
    assert (changed.x_train[changed.files["train"].tolist().index("a/1.png")] == 77).all()
    load(root, cache, channels=3)
    assert len(decode_calls) == 18
    (root / "b" / "0.png").unlink()
    assert len(load(root, cache).x_train) == 5 and len(decode_calls) == 23
    entries = sorted(p.name for p in (cache / "images").iterdir())
    assert len([e for e in entries if e.endswith(".npz")]) == 2, entries  # per option set, not per edit
    assert len([e for e in entries if e.endswith(".npy")]) == 2, entries


def test_no_partial_cache_when_decoding_fails_midway(tmp_path, cache, monkeypatch):
    root = small_folder(tmp_path / "f")
    real = imagefile.decode_image
    calls = []

    def failing(path, options):
        calls.append(path)
        if len(calls) == 4:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-folder
        return real(path, options)

    monkeypatch.setattr(imagefile, "decode_image", failing)
    with pytest.raises(KeyboardInterrupt):
        load(root, cache)
    assert list((cache / "images").iterdir()) == []
    monkeypatch.setattr(imagefile, "decode_image", real)
    assert load(root, cache).source.startswith("folder ")


def test_a_failed_index_write_leaves_no_pixel_file(tmp_path, cache, monkeypatch):
    root = small_folder(tmp_path / "f")

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(imagecache, "write_npz_atomic", no_space)
    with pytest.warns(DataWarning, match="could not write the image cache entry"):
        data = load(root, cache)
    assert len(data.x_train) == 6
    assert list((cache / "images").iterdir()) == []


def test_a_damaged_cache_is_reported_and_decoded_again(tmp_path, cache, decode_calls):
    root = small_folder(tmp_path / "f")
    load(root, cache)
    pixel_file = next((cache / "images").glob("*.npy"))
    raw = bytearray(pixel_file.read_bytes())
    raw[-1] ^= 0xFF
    pixel_file.write_bytes(bytes(raw))
    with pytest.warns(DataWarning, match=r"damaged image cache entry: .*does not match its SHA-256"):
        again = load(root, cache)
    assert again.source.startswith("folder ") and len(decode_calls) == 12
    assert load(root, cache).source.startswith("cache ")


def test_large_cached_pixels_are_mapped_without_reading_them(tmp_path, cache, monkeypatch):
    root = small_folder(tmp_path / "f")
    load(root, cache)
    monkeypatch.setattr(imagecache, "MMAP_THRESHOLD_BYTES", 10)
    monkeypatch.setattr(imagecache, "split_digests", lambda *a: pytest.fail("hashed a large file"))
    data = load(root, cache)
    assert isinstance(data.x_train, np.memmap) and data.source.startswith("cache ")


def test_use_cache_false_writes_nothing(tmp_path, cache):
    root = small_folder(tmp_path / "f")
    data = load(root, cache, use_cache=False)
    assert len(data.x_train) == 6 and not cache.exists()
    assert data.x_train.flags.writeable


def test_two_processes_decode_the_same_as_one(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(folder_module, "CHUNK_FILES", 7)  # many chunks, some straddling splits
    for i in range(60):
        save(tmp_path / "f" / str(i % 3) / f"{i:02d}.png", grey(5, 5, seed=i))
    one = load(tmp_path / "f", cache, val_fraction=0.2, test_fraction=0.2, workers=1, use_cache=False)
    two = load(tmp_path / "f", cache, val_fraction=0.2, test_fraction=0.2, workers=2)
    for key in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert np.array_equal(getattr(one, key), getattr(two, key)), key
    assert one.digests == two.digests


# ---------------------------------------------------------------- arrays

def split_none(**options):
    return {"val_fraction": 0.0, "test_fraction": 0.0, **options}


@pytest.mark.parametrize("layout, shape, to_chw", [
    ("NHW", (5, 8, 6), lambda a: a[:, None]),
    ("NHWC", (5, 8, 6, 3), lambda a: a.transpose(0, 3, 1, 2)),
    ("NCHW", (5, 3, 8, 6), lambda a: a),
])
def test_arrays_in_each_layout_uint8_and_float(layout, shape, to_chw):
    pixels = RNG.integers(0, 256, shape, dtype=np.uint8)
    expected = to_chw(pixels)
    assert np.array_equal(load_image_arrays(pixels, **split_none()).x_train, expected)
    floats = pixels.astype(np.float32) / 255
    assert np.array_equal(load_image_arrays(floats, **split_none()).x_train, expected)
    tensor = torch.from_numpy(floats)
    assert np.array_equal(load_image_arrays(tensor, **split_none()).x_train, expected)


def test_the_ambiguous_channel_axis_rule_and_its_override():
    pixels = RNG.integers(0, 256, (2, 3, 4, 4), dtype=np.uint8)  # C=3 first, or C=4 last?
    assert load_image_arrays(torch.from_numpy(pixels), **split_none()).image_shape == (3, 4, 4)
    assert load_image_arrays(pixels, **split_none()).image_shape == (3, 3, 4)  # RGBA -> RGB
    assert load_image_arrays(pixels, layout="NCHW", **split_none()).image_shape == (3, 4, 4)


def test_array_faults_name_what_is_wrong():
    with pytest.raises(DataError, match=r"arrays x_train: float images must lie in \[0, 1\]; "
                                        r"found values from -0\.5 to 2"):
        load_image_arrays(np.array([[[-0.5, 2.0]]]))
    with pytest.raises(DataError, match=r"found values from nan"):
        load_image_arrays(np.array([[[np.nan, 0.5]]]))
    with pytest.raises(DataError, match=r"dtype int64; images must be uint8 \(0\.\.255\) or float"):
        load_image_arrays(np.zeros((2, 4, 4), np.int64))
    with pytest.raises(DataError, match=r"shape \(2, 8, 6, 5\) has no channel axis of length 1, 3 or 4"):
        load_image_arrays(np.zeros((2, 8, 6, 5), np.uint8))
    with pytest.raises(DataError, match="10 images but 9 labels"):
        load_image_arrays(np.zeros((10, 4, 4), np.uint8), np.zeros(9, int))


@pytest.mark.parametrize("shape", [(2, 0, 4), (2, 4, 0, 3), (2, 3, 0, 0)])
@pytest.mark.parametrize("options", [{}, {"image_size": (4, 4), "resize_mode": "crop"}])
def test_arrays_of_images_without_pixels_are_refused(shape, options):
    # kept as they were, they made a data set of 0-pixel images; resized, a ZeroDivisionError
    with pytest.raises(DataError, match=r"arrays x_train: images of \d x \d pixels \(H x W\)"):
        load_image_arrays(np.zeros(shape, np.uint8), **split_none(**options))


@pytest.mark.parametrize("labels", [np.array([0, 2**40]), np.array([0, 2**64 - 1], np.uint64)])
def test_labels_too_large_for_a_class_each_are_refused(labels):
    # 2**40 made load_image_arrays build 10^12 default label names; a uint64 2**64 - 1 came out as -1
    with pytest.raises(DataError, match=r"arrays y_train: labels must be below 65,536 \(a class each\), found"):
        load_image_arrays(np.zeros((2, 4, 4), np.uint8), labels, label_names=["a", "b"], **split_none())
    with pytest.raises(DataError, match=r"labels must be below 65,536"):
        load_image_arrays(np.zeros((2, 4, 4), np.uint8), labels, **split_none())


def test_arrays_with_labels_split_by_fractions():
    x = RNG.integers(0, 256, (50, 4, 4), dtype=np.uint8)
    y = np.arange(50) % 4
    data = load_image_arrays(x, y, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert [len(data.x_train), len(data.x_val), len(data.x_test)] == [30, 10, 10]
    assert data.label_names == ("0", "1", "2", "3")
    rows = {x[i].tobytes(): y[i] for i in range(50)}
    for split in ("train", "val", "test"):
        xs, ys = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        assert [rows[image[0].tobytes()] for image in xs] == ys.tolist()


def test_arrays_resized_and_converted_like_files(tmp_path, cache):
    pixels = stripes(20, 60)[None]
    data = load_image_arrays(pixels, image_size=(10, 10), resize_mode="crop", channels=1, **split_none())
    save(tmp_path / "a.png", pixels[0])
    from_file = load(tmp_path, cache, image_size=(10, 10), resize_mode="crop", channels=1)
    assert np.array_equal(data.x_train, from_file.x_train)


def test_npy_and_npz_files(tmp_path):
    x = RNG.integers(0, 256, (12, 8, 6, 3), dtype=np.uint8)
    y = np.arange(12) % 3
    np.save(tmp_path / "x.npy", x)
    from_npy = load_image_file(tmp_path / "x.npy", **split_none())
    assert np.array_equal(from_npy.x_train, x.transpose(0, 3, 1, 2))
    np.savez(tmp_path / "xy.npz", images=x, labels=y, label_names=np.array(["a", "b", "c"]))
    data = load_images(tmp_path / "xy.npz", **split_none())
    assert data.label_names == ("a", "b", "c") and data.y_train.tolist() == y.tolist()
    assert data.name == "xy" and data.source == f"file {tmp_path / 'xy.npz'}"
    np.savez(tmp_path / "splits.npz", x_train=x[:8], y_train=y[:8], x_test=x[8:], y_test=y[8:])
    splits = load_image_file(tmp_path / "splits.npz")
    assert [len(splits.x_train), len(splits.x_val), len(splits.x_test)] == [8, 0, 4]
    assert splits.y_test.tolist() == y[8:].tolist()


def test_array_files_never_unpickle(tmp_path):
    np.savez(tmp_path / "objects.npz", x=np.array([object(), object()], dtype=object))
    with pytest.raises(DataError, match="holds Python objects"):
        load_image_file(tmp_path / "objects.npz")
    np.save(tmp_path / "objects.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"objects\.npy: unreadable \.npy"):
        load_image_file(tmp_path / "objects.npy")
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(DataError, match=r"no images: expected a member named x or images"):
        load_image_file(tmp_path / "other.npz")


@pytest.mark.parametrize("header, fault", [
    ("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3,", "malformed .npy header"),  # numpy: TokenError
    ("{'descr': '|u1', 'fortran_order': False, 'shape': (-1, 28, 28), }", "bad shape"),  # numpy: OverflowError
])
def test_npy_headers_numpy_fails_on_with_other_errors(tmp_path, header, fault):
    text = header + " " * (-(len(header) + 11) % 64) + "\n"
    path = tmp_path / "x.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode() + bytes(64))
    with pytest.raises(DataError, match=rf"x\.npy: unreadable \.npy: .*{fault}"):
        load_image_file(path)


# ---------------------------------------------------------------- real data

@pytest.fixture(scope="module")
def fashion_mnist():
    """Fashion-MNIST from vaelab's own loader: the user's cache (read as a data folder, so
    nothing is written there), else the chain into the tests' cache: system copy, mirror."""
    from conftest import USER_CACHE

    errors = []
    attempts = [{"timeout": 3.0}]
    if USER_CACHE is not None and (USER_CACHE / "fashion-mnist.npz").is_file():
        attempts.insert(0, {"data_dir": USER_CACHE})
    for options in attempts:
        try:
            return load_dataset("fashion-mnist", progress=False, **options)
        except DataError as exc:
            errors.append(str(exc))
    pytest.skip("no source could serve Fashion-MNIST:\n" + "\n".join(errors))


FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                   "bag", "boot")  # label i of the built-in set is FASHION_CLASSES[i]


def write_fashion_folder(root: Path, raw, n_train: int, n_test: int) -> None:
    """PNGs as train/<class name>/<index>.png and test/<class name>/<index>.png."""
    for split, n in (("train", n_train), ("test", n_test)):
        x, y = getattr(raw, f"x_{split}"), getattr(raw, f"y_{split}")
        for index in range(n):
            save(root / split / FASHION_CLASSES[y[index]] / f"{index:05d}.png", x[index])


def check_against_builtin(data, raw) -> None:
    """Every row equals the built-in image its file name indexes, bit for bit, with its label."""
    assert data.label_names == tuple(sorted(FASHION_CLASSES))
    for split in ("train", "test"):
        x, y = getattr(raw, f"x_{split}"), getattr(raw, f"y_{split}")
        index = np.array([int(Path(f).stem) for f in data.files[split]])
        assert sorted(index) == list(range(len(index)))
        assert np.array_equal(getattr(data, f"x_{split}")[:, 0], x[index])
        names = [data.label_names[label] for label in getattr(data, f"y_{split}")]
        assert names == [FASHION_CLASSES[label] for label in y[index]]


def test_fashion_mnist_as_a_folder_reads_back_bit_for_bit(tmp_path, cache, fashion_mnist):
    write_fashion_folder(tmp_path / "fashion", fashion_mnist, n_train=1500, n_test=500)
    data = load(tmp_path / "fashion", cache)
    assert data.image_shape == (1, 28, 28) and len(data.x_val) == 0
    check_against_builtin(data, fashion_mnist)
    check_against_builtin(load(tmp_path / "fashion", cache), fashion_mnist)  # from the cache


@pytest.mark.slow
def test_all_of_fashion_mnist_as_a_folder(tmp_path, cache, fashion_mnist):
    write_fashion_folder(tmp_path / "fashion", fashion_mnist, n_train=60_000, n_test=10_000)
    data = load(tmp_path / "fashion", cache)
    assert (len(data.x_train), len(data.x_test)) == (60_000, 10_000)
    check_against_builtin(data, fashion_mnist)


@pytest.fixture(scope="module")
def digits():
    datasets = pytest.importorskip("sklearn.datasets",
                                   reason="scikit-learn (in the test extra) is not installed")
    return datasets.load_digits()


def test_sklearn_digits_as_arrays_and_as_a_folder(tmp_path, cache, digits):
    expected = np.rint(digits.images / 16 * 255).astype(np.uint8)  # 0..16 -> 0..255
    arrays = load_image_arrays(digits.images / 16, digits.target, val_fraction=0.1, test_fraction=0.2)
    assert arrays.image_shape == (1, 8, 8) and arrays.label_names == tuple("0123456789")
    assert sum(len(getattr(arrays, f"x_{s}")) for s in ("train", "val", "test")) == len(expected)
    assert len(arrays.x_test) == round(0.2 * len(expected))
    for i in range(len(expected)):
        save(tmp_path / "digits" / str(digits.target[i]) / f"{i:04d}.png", expected[i])
    folder = load(tmp_path / "digits", cache, val_fraction=0.1, test_fraction=0.2)
    for split in ("train", "val", "test"):
        index = [int(Path(f).stem) for f in folder.files[split]]
        assert np.array_equal(getattr(folder, f"x_{split}")[:, 0], expected[index])
        assert getattr(folder, f"y_{split}").tolist() == digits.target[index].tolist()
    assert hashlib.sha256(folder.x_test.tobytes()).hexdigest() == folder.digests["x_test"]

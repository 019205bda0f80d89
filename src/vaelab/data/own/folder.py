"""A folder of your own images as uint8 arrays with labels and splits, decoded once and cached.

Layout (every rule below is checked, and a folder that breaks one is refused with a message
naming a file that breaks it):

- ``train/``, ``val/``, ``test/`` at the top are the splits, as they are (a missing one is
  empty); every image must then lie in one of them. Without them the images are split by
  ``val_fraction`` and ``test_fraction``, seeded (see :func:`.dataset.split_by_rank`).
- Within the folder (or within each split folder), images in sub-folders take the
  sub-folder's name as their class: label i is the i-th of the sorted names, over all
  splits. Images directly in the folder are unlabelled; both at once is refused.
- Files are taken in the order of their sorted relative paths ('/'-separated), so rows,
  labels and splits never depend on the file system's listing order.
- Files with a suffix in :data:`IGNORED_SUFFIXES`, hidden files (".DS_Store") and
  Thumbs.db / desktop.ini are ignored and counted; hidden folders and ``__MACOSX`` are not
  entered. Every other file must be an image (see :mod:`.decode` for the formats).

Decoding happens once: the result is cached (see :mod:`.cache`) and read back from
the cache until a file is added, removed or changed, or an option changes.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...progress import progress as progress_bar
from ..errors import DataError, DataWarning
from ..sources import default_cache_dir
from . import decode as imagefile
from .arrays import load_image_arrays, load_image_file
from .cache import (
    CachedImages,
    FileStamp,
    PixelWriter,
    entry_stem,
    fingerprint,
    label_digests,
    meta_arrays,
    read_cache,
)
from .dataset import SPLITS, ImageDataset, assemble, check_fractions, split_by_rank
from .decode import DEFAULT_MAX_PIXELS, WHITE, DecodeOptions, ImageInfo

IGNORED_SUFFIXES = frozenset({
    ".txt", ".md", ".rst", ".json", ".jsonl", ".csv", ".tsv", ".yaml", ".yml", ".toml", ".xml",
    ".html", ".htm", ".pdf", ".py", ".ipynb", ".log", ".ini", ".cfg", ".npy", ".npz", ".pkl",
    ".zip", ".tar", ".gz", ".db", ".xmp", ".aae"})
IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})
SKIPPED_DIRS = frozenset({"__MACOSX"})
CHUNK_FILES = 256  # files per task handed to a worker process, at most
CHUNK_BYTES = 16 * 2**20  # and at most this many decoded bytes, so large images come in fewer
PARALLEL_MIN_FILES = 4096  # fewer are decoded in this process: starting workers costs more
SHOWN = 3  # how many file names a warning lists


@dataclass(frozen=True)
class FolderPlan:
    """The image files (relative paths) in row order (train, val, test; sorted within each)
    and their labels."""

    files: tuple[str, ...]
    split_sizes: tuple[int, int, int]
    labels: np.ndarray | None  # (N,) int64
    label_names: tuple[str, ...]

    def without(self, drop: Iterable[int]) -> FolderPlan:
        """The plan less the rows ``drop`` (files skipped as bad)."""
        keep = np.ones(len(self.files), dtype=bool)
        keep[list(drop)] = False
        bounds = np.cumsum([0, *self.split_sizes])
        sizes = tuple(int(keep[bounds[i]:bounds[i + 1]].sum()) for i in range(3))
        return FolderPlan(tuple(f for f, k in zip(self.files, keep, strict=True) if k), sizes,
                          None if self.labels is None else self.labels[keep], self.label_names)


def load_image_folder(
    folder: str | os.PathLike, *, image_size: Sequence[int] | None = None,
    resize_mode: str = "resize", channels: int | None = None,
    background: Sequence[int] = WHITE, val_fraction: float = 0.1, test_fraction: float = 0.1,
    seed: int = 0, skip_bad: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
    cache_dir: str | os.PathLike | None = None, use_cache: bool = True, progress: bool = True,
    workers: int | None = None,
) -> ImageDataset:
    """Read every image under ``folder`` into an :class:`ImageDataset` (see it for the fields).

    image_size (H, W): resize every image (resize_mode "resize", "crop" or "pad"); None keeps
    the size, which must then be the same for all. channels 1 or 3; None: 1 if every image
    is grey, else 3. background: RGB that transparency is composited on and "pad" fills
    with. val_fraction, test_fraction, seed: the split when there are no split folders.
    skip_bad: leave out (and count, with a warning) files that cannot be read, instead of
    raising. max_pixels: the largest image accepted. cache_dir: None for the vaelab cache;
    use_cache False decodes without reading or writing it. workers: decoding processes
    (None: 2 for large folders where the system has them, else 1).
    Raises :class:`DataError` (one line, naming the file) on any fault in the data.
    """
    root = Path(folder).expanduser().resolve()
    options = DecodeOptions(None if image_size is None else tuple(image_size), resize_mode,
                            channels, tuple(background), max_pixels)
    check_fractions(val_fraction, test_fraction)
    stamps, ignored = list_folder(root)
    _report_ignored(root, ignored, progress)
    settings = {"image_size": options.image_size, "resize_mode": resize_mode, "channels": channels,
                "background": options.background, "max_pixels": max_pixels, "skip_bad": skip_bad,
                "val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed}
    stem = entry_stem(Path(cache_dir or default_cache_dir()), root, settings)
    key = fingerprint(stamps, settings)
    cached = _cached(stem, key) if use_cache else None
    if cached is not None:  # the listing is the one planned and decoded then: no new plan
        source = f"cache {stem.with_suffix('.npz')}"
    else:
        plan = plan_folder(root, stamps, val_fraction, test_fraction, seed)
        cached = _decode_folder(root, plan, options, skip_bad, ignored, progress, workers,
                                stem if use_cache else None, key)
        source = f"folder {root} (decoded)"
    _warn_skipped(root, cached.skipped)
    # ignored files are not in the fingerprint, so the list is today's, not the cached one
    return assemble(root.name, source, cached.images, cached.labels, cached.split_sizes,
                    cached.label_names, files=cached.files, skipped=cached.skipped,
                    ignored=ignored, digests=cached.digests)


def load_images(source: Any, **options: Any) -> ImageDataset:
    """Your own images from wherever they are, as an :class:`ImageDataset`.

    ``source``: a folder (:func:`load_image_folder`), an .npy or .npz file
    (:func:`.arrays.load_image_file`), an array or tensor of images, or a pair
    (images, labels) of them (:func:`.arrays.load_image_arrays`). ``options`` go to
    the function that reads it.
    """
    if isinstance(source, str | os.PathLike):
        path = Path(source).expanduser()
        if path.is_dir():
            return load_image_folder(path, **options)
        if path.suffix.lower() in (".npy", ".npz"):
            return load_image_file(path, **options)
        raise DataError(f"{path}: neither a folder nor an .npy / .npz file")
    if isinstance(source, tuple) and len(source) == 2:
        return load_image_arrays(*source, **options)
    return load_image_arrays(source, **options)


# ---------------------------------------------------------------- listing and layout

def list_folder(root: Path) -> tuple[tuple[FileStamp, ...], tuple[str, ...]]:
    """(image candidates, ignored files), both by sorted relative path.

    Symbolic links are followed, to files and to folders, but no folder is entered twice.
    """
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    stamps: list[FileStamp] = []
    ignored: list[str] = []
    _walk(root, "", stamps, ignored, set())
    return tuple(sorted(stamps)), tuple(sorted(ignored))  # paths are unique: sorted by path


def _walk(root: Path, prefix: str, stamps: list[FileStamp], ignored: list[str],
          seen: set[tuple[int, int]]) -> None:
    """Add the files under ``root/prefix`` to ``stamps`` or ``ignored``."""
    folder = root / prefix if prefix else root
    info = folder.stat()
    if (info.st_dev, info.st_ino) in seen:  # a link back to a folder already walked
        return
    seen.add((info.st_dev, info.st_ino))
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise DataError(f"{folder}: cannot list folder: {exc.strerror or exc}") from exc
    for entry in entries:
        name = entry.name
        if entry.is_dir():
            if name[0] != "." and name not in SKIPPED_DIRS:
                _walk(root, f"{prefix}{name}/", stamps, ignored, seen)
        elif _is_ignored(name):
            ignored.append(prefix + name)
        elif entry.is_file():
            stat = entry.stat()
            stamps.append((prefix + name, stat.st_size, stat.st_mtime_ns))


def _is_ignored(name: str) -> bool:
    """Files nobody means as images: hidden ones, known other suffixes, Windows' extras."""
    dot = name.rfind(".")
    return (name[0] == "." or (dot > 0 and name[dot:].lower() in IGNORED_SUFFIXES)
            or name.lower() in IGNORED_NAMES)


def plan_folder(root: Path, stamps: Sequence[FileStamp], val_fraction: float,
                test_fraction: float, seed: int) -> FolderPlan:
    """Splits (split folders, else seeded fractions) and labels (class sub-folders)."""
    if not stamps:
        raise DataError(f"{root}: no image files in the folder or its sub-folders")
    rels = [rel for rel, _, _ in stamps]
    split_ids, inner = _split_folders(root, rels)
    if split_ids is None:
        split_ids = split_by_rank(rels, val_fraction, test_fraction, seed)
    labels, label_names = _class_labels(root, rels, inner)
    order = np.argsort(split_ids, kind="stable")  # train, val, test; sorted paths within
    sizes = tuple(int((split_ids == i).sum()) for i in range(3))
    return FolderPlan(tuple(rels[i] for i in order), sizes,
                      None if labels is None else labels[order], label_names)


def _split_folders(root: Path, rels: Sequence[str]) -> tuple[np.ndarray | None, list[str]]:
    """Split ids from train/, val/, test/ (None without them) and paths within the split."""
    parts = [rel.partition("/") for rel in rels]  # (top folder, "/" or "", the rest)
    if not {top for top, slash, _ in parts if slash} & set(SPLITS):
        return None, list(rels)
    split_index = {split: i for i, split in enumerate(SPLITS)}
    outside = [rel for rel, (top, slash, _) in zip(rels, parts) if not slash or top not in split_index]
    if outside:
        raise DataError(f"{root / outside[0]}: lies outside the split folders train/, val/, test/ "
                        f"({len(outside)} files do); move them into one, or drop the split folders")
    split_ids = np.array([split_index[top] for top, _, _ in parts], dtype=np.int8)
    return split_ids, [rest for _, _, rest in parts]


def _class_labels(root: Path, rels: Sequence[str],
                  inner: Sequence[str]) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """Labels from the first folder of each path within its split, or None if none has one."""
    parts = [path.partition("/") for path in inner]  # (class folder, "/" or "", the rest)
    in_class = [bool(slash) for _, slash, _ in parts]
    if not any(in_class):
        return None, ()
    if not all(in_class):
        classes = sorted({top for top, slash, _ in parts if slash})
        listed = ", ".join(f"{name}/" for name in classes[:SHOWN]) + (", ..." if len(classes) > SHOWN else "")
        raise DataError(f"{root / rels[in_class.index(False)]}: lies beside the class sub-folders "
                        f"({listed}); put every image in a class sub-folder, or none in any")
    names = tuple(sorted({top for top, _, _ in parts}))
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[top] for top, _, _ in parts], dtype=np.int64), names


# ---------------------------------------------------------------- decoding

def _cached(stem: Path, key: str) -> CachedImages | None:
    """The cache entry if it matches the folder; a damaged one is reported and ignored."""
    try:
        return read_cache(stem, key)
    except DataError as exc:
        warnings.warn(f"ignoring a damaged image cache entry: {exc}", DataWarning, stacklevel=3)
        return None


def _decode_folder(root: Path, plan: FolderPlan, options: DecodeOptions, skip_bad: bool,
                   ignored: Sequence[str], progress: bool, workers: int | None,
                   stem: Path | None, key: str) -> CachedImages:
    """Probe (when size or channels must be found), decode, and cache when ``stem`` is given."""
    with _ChunkRunner(_worker_count(workers, len(plan.files))) as runner:
        plan, options, expected_hw, skipped = _probe_if_needed(root, plan, options, skip_bad,
                                                               progress, runner)
        shape = (len(plan.files), options.channels, *expected_hw)
        writer = _open_writer(stem, shape)
        with writer or nullcontext():
            pixels = writer.pixels if writer else np.empty(shape, np.uint8)
            failures, digests = _decode_rows(root, plan, options, expected_hw, pixels, skip_bad,
                                             progress, runner)
            plan = plan.without(i for i, _ in failures)
            if writer and failures:
                writer.shrink(len(plan.files))
            decoded = CachedImages(
                writer.pixels if writer else pixels[:len(plan.files)], plan.labels,
                plan.split_sizes, plan.label_names, np.array(plan.files, dtype=str),
                (*skipped, *(message for _, message in failures)), tuple(ignored),
                digests | label_digests(plan.labels, plan.split_sizes))
            return _commit(writer, stem, key, decoded) if writer else decoded


def _probe_if_needed(
    root: Path, plan: FolderPlan, options: DecodeOptions, skip_bad: bool, progress: bool,
    runner: _ChunkRunner,
) -> tuple[FolderPlan, DecodeOptions, tuple[int, int], tuple[str, ...]]:
    """Find the common size and the channels from the headers, unless both are given.

    Returns the plan less the files whose header is bad (skip_bad), the options with
    channels set, the (H, W) every image must decode to, and the skipped files' messages.
    """
    if options.image_size is not None and options.channels is not None:
        return plan, options, options.image_size, ()
    infos, failures = _probe_all(root, plan, options, skip_bad, progress, runner)
    good = [info for info in infos if info is not None]
    expected_hw = options.image_size or _common_size(root, good)
    options = replace(options, channels=options.channels or _channels(good))
    skipped = tuple(message for _, message in failures)
    return plan.without(i for i, _ in failures), options, expected_hw, skipped


def _open_writer(stem: Path | None, shape: tuple[int, ...]) -> PixelWriter | None:
    """A temp pixel file in the cache, or None (no cache, or it cannot be written: a warning)."""
    if stem is None:
        return None
    try:
        return PixelWriter(stem, shape)
    except OSError as exc:
        warnings.warn(f"cannot write the image cache at {stem.parent}: {exc}; decoding into memory",
                      DataWarning, stacklevel=4)
        return None


def _commit(writer: PixelWriter, stem: Path, key: str, decoded: CachedImages) -> CachedImages:
    """Publish the entry and read it back as a later call will (in memory, or mapped if large)."""
    try:
        writer.commit(meta_arrays(key, decoded), decoded.digests)
    except (OSError, DataError) as exc:
        warnings.warn(f"could not write the image cache entry {stem}: {exc}", DataWarning, stacklevel=4)
        return replace(decoded, images=np.array(decoded.images))
    return read_cache(stem, key)


def _worker_count(workers: int | None, n_files: int) -> int:
    """Decoding processes: as asked, else 2 for large folders on a system that can fork."""
    if workers is not None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        return workers
    can_fork = "fork" in multiprocessing.get_all_start_methods() and sys.platform == "linux"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(2, usable or 1) if can_fork and n_files >= PARALLEL_MIN_FILES else 1


def _probe_all(root: Path, plan: FolderPlan, options: DecodeOptions, skip_bad: bool,
               progress: bool, runner: _ChunkRunner) -> tuple[list[ImageInfo | None], list[tuple[int, str]]]:
    """Every file's header: (info or None per row, failures as (row, message))."""
    infos: list[ImageInfo | None] = []
    failures: list[tuple[int, str]] = []
    paths = [str(root / rel) for rel in plan.files]
    task = partial(_probe_chunk, options=options, stop_early=not skip_bad)
    with progress_bar(len(paths), "reading image headers", "image", enabled=progress) as bar:
        for start, (chunk_infos, chunk_failures) in runner.run(task, paths):
            _raise_first(chunk_failures, skip_bad)
            infos += chunk_infos
            failures += [(start + i, message) for i, message in chunk_failures]
            bar.update(len(chunk_infos))
    if len(failures) == len(paths):
        raise DataError(f"{root}: none of the {len(paths)} image files could be read; "
                        f"first: {failures[0][1]}")
    return infos, failures


def _probe_chunk(paths: Sequence[str], options: DecodeOptions,
                 stop_early: bool) -> tuple[list[ImageInfo | None], list[tuple[int, str]]]:
    """Headers of one chunk of files: infos (None where bad) and (index, message) failures."""
    infos: list[ImageInfo | None] = []
    failures: list[tuple[int, str]] = []
    with _quiet_pillow():
        for i, path in enumerate(paths):
            try:
                infos.append(imagefile.probe_image(path, options))
            except DataError as exc:
                infos.append(None)
                failures.append((i, str(exc)))
                if stop_early:
                    break
    return infos, failures


def _decode_rows(root: Path, plan: FolderPlan, options: DecodeOptions, expected_hw: tuple[int, int],
                 pixels: np.ndarray, skip_bad: bool, progress: bool,
                 runner: _ChunkRunner) -> tuple[list[tuple[int, str]], dict[str, str]]:
    """Decode every file into ``pixels`` rows, in order; (failures, digests of x_*).

    Rows of skipped files are not written: the good ones are packed from the start.
    """
    paths = [str(root / rel) for rel in plan.files]
    split_of_row = np.repeat(np.arange(3), plan.split_sizes)
    digests = {split: hashlib.sha256() for split in SPLITS}
    failures: list[tuple[int, str]] = []
    written = 0
    task = partial(_decode_chunk, options=options, expected_hw=expected_hw, stop_early=not skip_bad)
    with progress_bar(len(paths), "decoding images", "image", enabled=progress) as bar:
        chunk = max(1, min(CHUNK_FILES, CHUNK_BYTES // pixels[0].nbytes))
        for start, (block, chunk_failures) in runner.run(task, paths, chunk):
            _raise_first(chunk_failures, skip_bad)
            failures += [(start + i, message) for i, message in chunk_failures]
            pixels[written:written + len(block)] = block
            written += len(block)
            failed = {i for i, _ in chunk_failures}
            good_rows = [start + i for i in range(len(block) + len(failed)) if i not in failed]
            _hash_rows(digests, block, split_of_row[good_rows])
            bar.update(len(block) + len(chunk_failures))
    if written == 0:
        raise DataError(f"{root}: none of the {len(paths)} image files could be decoded; "
                        f"first: {failures[0][1]}")
    return failures, {f"x_{split}": digest.hexdigest() for split, digest in digests.items()}


def _hash_rows(digests: dict, block: np.ndarray, splits: np.ndarray) -> None:
    """Feed each row of ``block`` to its split's digest (a chunk may straddle two splits)."""
    for split in np.unique(splits):
        rows = block if len(np.unique(splits)) == 1 else block[splits == split]
        digests[SPLITS[split]].update(np.ascontiguousarray(rows).data)


def _decode_chunk(paths: Sequence[str], options: DecodeOptions, expected_hw: tuple[int, int],
                  stop_early: bool) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """One chunk of files as (good images (n, C, H, W), (index, message) failures)."""
    block = np.empty((len(paths), options.channels, *expected_hw), np.uint8)
    failures: list[tuple[int, str]] = []
    n_good = 0
    with _quiet_pillow():
        for i, path in enumerate(paths):
            try:
                image = imagefile.decode_image(path, options)
                _check_size(path, image, expected_hw)
            except DataError as exc:
                failures.append((i, str(exc)))
                if stop_early:
                    break
                continue
            block[n_good] = image
            n_good += 1
    return block[:n_good], failures


def _check_size(path: str, image: np.ndarray, expected_hw: tuple[int, int]) -> None:
    """A PNG rotated by EXIF stored after its pixels decodes to another size than probed."""
    if image.shape[1:] != tuple(expected_hw):
        h, w = image.shape[1:]
        raise DataError(f"{path}: decodes to {h}x{w} (H x W, after EXIF rotation), not the "
                        f"{expected_hw[0]}x{expected_hw[1]} of the others; set data.image_size = [H, W]")


def _raise_first(failures: Sequence[tuple[int, str]], skip_bad: bool) -> None:
    if failures and not skip_bad:
        raise DataError(failures[0][1])


class _ChunkRunner:
    """Runs a task over chunks of paths, in order, here or in ``workers`` forked processes.

    Processes, not threads: decoding a small image costs more Python than pixel work, and
    Python holds the GIL for it, so two threads were slower than one (13,900 vs 8,700
    28x28 PNGs/s); two processes cost 7% more CPU per image (110 vs 103 us). The workers
    are forked on entry, before a progress bar starts tqdm's monitor thread: forking a
    process that runs threads can deadlock the child. (A caller that already runs threads,
    e.g. torch's pool after tensor work, still forks safely for the workers' Pillow and
    numpy work, but Python 3.12+ warns about it; ``workers=1`` avoids the fork.)
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> _ChunkRunner:
        if self.workers > 1:
            self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"))
            self.pool.submit(int).result()  # the first task forks every worker
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.pool is not None:  # on an error, the chunks still queued are dropped, not run
            self.pool.shutdown(wait=True, cancel_futures=True)

    def run(self, task: Callable, paths: Sequence[str],
            size: int = CHUNK_FILES) -> Iterator[tuple[int, object]]:
        """(start index, task(chunk)) for consecutive chunks of ``size`` paths, in order."""
        starts = range(0, len(paths), size)
        chunks = [paths[start:start + size] for start in starts]
        results = map(task, chunks) if self.pool is None else self.pool.map(task, chunks)
        return zip(starts, results)


@contextmanager
def _quiet_pillow() -> Iterator[None]:
    """Pillow's warnings (bomb size, odd EXIF, palette transparency) would repeat per file;
    sizes are checked here, and the rest does not change the pixels taken."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", module=r"PIL\.")
        yield


def _common_size(root: Path, infos: Sequence[ImageInfo]) -> tuple[int, int]:
    """The one (H, W) every image has; else DataError listing the commonest sizes."""
    counts = Counter((info.height, info.width) for info in infos)
    if len(counts) == 1:
        return next(iter(counts))
    common = counts.most_common()
    listed = ", ".join(f"{h}x{w} ({n} images)" for (h, w), n in common[:SHOWN])
    more = f" and {len(common) - SHOWN} other sizes" if len(common) > SHOWN else ""
    (h, w), _ = common[0]
    raise DataError(f"{root}: images of different sizes (H x W): {listed}{more}; set "
                    f"data.image_size = [H, W] (e.g. [{h}, {w}]) to resize them all")


def _channels(infos: Sequence[ImageInfo]) -> int:
    """1 when every image is grey, else 3."""
    return 1 if all(info.grey for info in infos) else 3


# ---------------------------------------------------------------- reporting

def _report_ignored(root: Path, ignored: Sequence[str], progress: bool) -> None:
    """One line on stderr saying how many files were not taken as images."""
    if ignored and progress:
        shown = ", ".join(ignored[:SHOWN]) + (", ..." if len(ignored) > SHOWN else "")
        print(f"vaelab: {root}: ignored {len(ignored)} files that are not images ({shown})",
              file=sys.stderr, flush=True)


def _warn_skipped(root: Path, skipped: Sequence[str]) -> None:
    """One warning line: how many bad files skip_bad left out, and the first few."""
    if skipped:
        shown = "; ".join(skipped[:SHOWN]) + ("; ..." if len(skipped) > SHOWN else "")
        warnings.warn(f"{root}: skipped {len(skipped)} unreadable image files: {shown}",
                      DataWarning, stacklevel=3)

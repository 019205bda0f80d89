"""Image-folder speed: decoding a folder of PNGs into the cache, and reading it back.

Writes N 28x28 grey PNGs (Fashion-MNIST from vaelab's own loader, else MNIST) as
``train/<class>/<index>.png`` and ``test/<class>/<index>.png`` into a temp folder, then
times, alternating over ``--rounds``:

- decoding the folder into an empty cache with 1 and with 2 worker processes
  (``load_image_folder(..., workers=w)``), in images per second;
- reading it back from the cache (a second ``load_image_folder`` call: listing and
  fingerprinting the folder, reading the index, the pixels and checking their digests),
  in seconds.

    python benchmarks/folder_speed.py [--n 60000] [--rounds 2] [--workers 1 2]

The load average before and after is printed, since other jobs share the machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from vaelab.data import DataError, load_dataset, load_image_folder


def source_images(n: int) -> tuple[str, np.ndarray, np.ndarray]:
    """The first n images and labels of Fashion-MNIST (train then test), else of MNIST."""
    for name in ("fashion-mnist", "mnist"):
        try:
            raw = load_dataset(name, progress=False, timeout=3.0)
        except DataError:
            continue
        x = np.concatenate([raw.x_train, raw.x_test])[:n]
        y = np.concatenate([raw.y_train, raw.y_test])[:n]
        return name, x, y
    raise SystemExit("no source could serve Fashion-MNIST or MNIST")


def write_folder(root: Path, x: np.ndarray, y: np.ndarray, n_train: int) -> None:
    """PNGs under train/<label>/ for the first n_train images, test/<label>/ for the rest."""
    for index, (image, label) in enumerate(zip(x, y, strict=True)):
        folder = root / ("train" if index < n_train else "test") / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:05d}.png")


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_decode(root: Path, workers: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) to decode the folder into a fresh, empty cache.

    CPU time counts the worker processes too (they have exited when the call returns), and
    unlike wall time it hardly changes with what else runs on the machine.
    """
    with tempfile.TemporaryDirectory(prefix="vaelab-bench-cache-") as cache:
        start, start_cpu = time.perf_counter(), cpu_seconds()
        load_image_folder(root, cache_dir=cache, progress=False, workers=workers)
        return time.perf_counter() - start, cpu_seconds() - start_cpu


def time_cache_read(root: Path, cache: str) -> float:
    """Seconds for a load that the cache serves (the cache is filled first)."""
    load_image_folder(root, cache_dir=cache, progress=False)
    start = time.perf_counter()
    data = load_image_folder(root, cache_dir=cache, progress=False)
    elapsed = time.perf_counter() - start
    assert data.source.startswith("cache "), data.source
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60_000, help="images to write and decode")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}, cpus: {os.cpu_count()}")
    name, x, y = source_images(args.n)
    with tempfile.TemporaryDirectory(prefix="vaelab-bench-folder-") as tmp:
        root = Path(tmp) / name
        start = time.perf_counter()
        write_folder(root, x, y, n_train=min(len(x), 60_000))
        print(f"wrote {len(x)} {name} PNGs in {time.perf_counter() - start:.1f} s")
        best = {w: float("inf") for w in args.workers}
        for round_ in range(args.rounds):
            for workers in args.workers:
                seconds, cpu = time_decode(root, workers)
                best[workers] = min(best[workers], seconds)
                print(f"round {round_ + 1}: decode, {workers} worker(s): {seconds:.2f} s, "
                      f"{len(x) / seconds:,.0f} images/s; CPU {1e6 * cpu / len(x):.0f} us/image, "
                      f"load average {os.getloadavg()[0]:.1f}")
        with tempfile.TemporaryDirectory(prefix="vaelab-bench-cache-") as cache:
            reads = [time_cache_read(root, cache) for _ in range(3)]
        for workers, seconds in best.items():
            print(f"decode {workers} worker(s): best {len(x) / seconds:,.0f} images/s")
        print(f"cache read: {min(reads):.3f} s (best of 3; all: {', '.join(f'{r:.3f}' for r in reads)})")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

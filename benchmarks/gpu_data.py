"""Write MNIST as one compressed .npz into .gpu-data/, for a lent GPU machine that has no network.

    PYTHONPATH=src python benchmarks/gpu_data.py [--out .gpu-data]

The GPU machine gets a copy of the working tree, plus the ignored paths the caller names in
`carry`; it cannot download anything. .gpu-data/ is ignored by git, so it travels only when
carried (`carry: [".gpu-data"]`), and benchmarks/gpu.sh points $VAELAB_DATA at it. Compressed,
the four arrays take about 11 MB of the 64 MiB a carry may hold (55 MB as the cache stores them).
The file is read back through vaelab's own loader, which checks the pinned SHA-256 digests,
so what travels is what the benchmarks would have downloaded.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from vaelab.data import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".gpu-data", help="folder to write mnist.npz into (default .gpu-data)")
    args = parser.parse_args()
    out = Path(args.out)
    path = out / "mnist.npz"
    raw = load_dataset("mnist", progress=False)  # $VAELAB_DATA, the cache, or a download
    out.mkdir(parents=True, exist_ok=True)
    # Written in a folder of its own first and read back from there, so a half-written or wrong
    # file never takes the name mnist.npz; reading it as a data folder checks the pinned digests.
    with tempfile.TemporaryDirectory(prefix=".mnist-", dir=out) as staging, \
            tempfile.TemporaryDirectory(prefix="vaelab-gpu-data-") as scratch_cache:
        staged = Path(staging) / "mnist.npz"
        np.savez_compressed(staged, x_train=raw.x_train, y_train=raw.y_train, x_test=raw.x_test, y_test=raw.y_test)
        check = load_dataset("mnist", staging, cache_dir=scratch_cache, progress=False)
        if check.digests != raw.digests:
            raise SystemExit(f"{staged}: reads back different arrays than were written")
        os.replace(staged, path)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) from {raw.source}; carry it with carry: "
          f"[\"{args.out}\"], and benchmarks/gpu.sh reads it through $VAELAB_DATA")


if __name__ == "__main__":
    main()

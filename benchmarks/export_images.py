"""Write image folders as a user would have them, for the own-images runs in benchmarks/README.md.

    python benchmarks/export_images.py fashion DIR          # Fashion-MNIST as PNGs: DIR/{train,test}/<class>/
    python benchmarks/export_images.py shapes DIR [--n 6000] [--size 64] [--format .jpg]

`fashion` writes vaelab's own verified copy of Fashion-MNIST (70,000 28x28 grey PNGs, one folder
per class, the official train/test split); `shapes` draws coloured circles, squares and triangles
(tests/shapes.py), one folder per shape, saved as JPEGs by default, as photographs usually are.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from shapes import draw_shapes, write_folder  # noqa: E402

from vaelab.data import load_dataset  # noqa: E402
from vaelab.data.catalog import DATASETS  # noqa: E402


def export_fashion(root: Path) -> int:
    raw = load_dataset("fashion-mnist", progress=False)
    names = tuple(name.replace("/", "-") for name in DATASETS["fashion-mnist"].label_names)  # "T-shirt/top"
    write_folder(root / "train", raw.x_train, raw.y_train, names)
    write_folder(root / "test", raw.x_test, raw.y_test, names)
    return len(raw.x_train) + len(raw.x_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["fashion", "shapes"])
    parser.add_argument("root", type=Path)
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--format", default=".jpg")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.what == "fashion":
        n = export_fashion(args.root)
    else:
        images, labels = draw_shapes(args.n, size=(args.size, args.size), seed=0)
        write_folder(args.root, images, labels, suffix=args.format)
        n = args.n
    print(f"wrote {n} images under {args.root} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()

"""Your own images, as opposed to the built-in data sets beside this package: a folder of image
files, an .npy/.npz file or arrays in memory, each read into an `ImageDataset`.

- `decode.py`: one image file decoded with Pillow (pixel limit from the header, EXIF, palette,
  16-bit, alpha, resize/crop/pad);
- `folder.py`: a folder with class and split sub-folders, decoded once and cached;
- `arrays.py`: `.npy` / `.npz` files and arrays or tensors in memory;
- `dataset.py`: the `ImageDataset` they all give, and the seeded split;
- `cache.py`: the fingerprinted, memory-mapped cache of decoded folders.
"""

from .arrays import load_image_arrays, load_image_file
from .dataset import ImageDataset
from .folder import load_image_folder, load_images

__all__ = ["ImageDataset", "load_image_arrays", "load_image_file", "load_image_folder", "load_images"]

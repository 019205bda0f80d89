"""Raw data sets (MNIST, Fashion-MNIST, CIFAR-10) and your own images: reading, verifying, caching."""

from .errors import DataError, DataWarning, SourceUnavailable
from .idx import read_idx
from .load import load_data, save_arrays
from .own import ImageDataset, load_image_arrays, load_image_file, load_image_folder, load_images
from .sources import (
    DATASET_NAMES,
    EXPECTED_DIGESTS,
    RawDataset,
    UnpinnedDigestWarning,
    cache_info,
    default_cache_dir,
    load_dataset,
)

__all__ = [
    "DataError",
    "DataWarning",
    "SourceUnavailable",
    "read_idx",
    "EXPECTED_DIGESTS",
    "RawDataset",
    "cache_info",
    "default_cache_dir",
    "load_dataset",
    "DATASET_NAMES",
    "UnpinnedDigestWarning",
    "ImageDataset",
    "load_images",
    "load_image_folder",
    "load_image_file",
    "load_image_arrays",
    "load_data",
    "save_arrays",
]

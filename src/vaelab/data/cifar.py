"""CIFAR-10 from its standard python-pickle batches, read without running pickled code.

The "CIFAR-10 python version" is ``cifar-10-python.tar.gz``, holding the folder
``cifar-10-batches-py/`` with ``data_batch_1`` .. ``data_batch_5``, ``test_batch``
and ``batches.meta``. Each batch is a protocol-2 pickle (written by Python 2
cPickle) of a dict with the keys ``b"batch_label"`` (bytes), ``b"labels"`` (a list
of N ints 0..9), ``b"data"`` (a uint8 ndarray (N, 3072): per row 1024 red, 1024
green, then 1024 blue values, each plane a row-major 32x32 image) and
``b"filenames"`` (a list of N bytes), with N = 10000.

Pickles are read by :class:`CifarUnpickler`, which resolves only the handful of
globals that rebuild a uint8 ndarray and refuses every other one; the loaded
object is then checked key by key. Archives are read member by member in
memory: nothing is extracted to disk and only regular files with the expected
names are opened.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import pickle
import pickletools
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .arrays import KEYS, sha256_array
from .catalog import DATASETS
from .download import download
from .errors import DataError, SourceUnavailable
from .npzfile import read_npz, write_npz_atomic

Arrays = dict[str, np.ndarray]
Batch = tuple[np.ndarray, np.ndarray]  # data (N, 3072) and labels (N,), uint8

INFO = DATASETS["cifar10"]
NAME = INFO.name
ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
BATCHES: tuple[str, ...] = (*TRAIN_BATCHES, TEST_BATCH)
DEFAULT_MIRRORS: tuple[str, ...] = ("https://www.cs.toronto.edu/~kriz/",)
LABEL_NAMES: tuple[str, ...] = INFO.label_names
IMAGE_SHAPE: tuple[int, int, int] = INFO.image_shape  # channel-first
ROW_LENGTH = math.prod(IMAGE_SHAPE)
N_CLASSES = INFO.n_classes
BATCH_SIZE = 10000  # images per batch; tests lower it to work with tiny fakes
MAX_BATCH_BYTES = 64 * 2**20  # a real batch is about 31 MB; bounds what one member may cost
MAX_ARCHIVE_MEMBERS = 64  # the real archive has 9; bounds the scan of a hostile one
# A batch pickle takes about 1 opcode per label and at most 8 per file name (Python 3's
# protocol 2 spells bytes as _codecs.encode(...)); hostile ones are refused well before
# their opcodes could build more objects than a batch has. BININT1 is not counted: it
# pushes one of Python's cached small ints, a pointer per two bytes of pickle (and a
# batch with its pixels as a list of ints should still be refused as exactly that).
MAX_OPCODES_PER_IMAGE = 16
MAX_OPCODES_EXTRA = 1024
_CHUNK = 1 << 20
BATCH_KEYS = frozenset({b"batch_label", b"labels", b"data", b"filenames"})
# MD5 of each batch file of the official archive (whose own MD5 is c58f30108f718f92721af3b95e74349a),
# as published with it and pinned by torchvision: a file read from a folder or the archive must
# match before it is unpickled. Only arrays from a .npz (a data folder's cifar10.npz, the cache)
# are checked by structure alone.
BATCH_MD5: dict[str, str] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}


class VerifiedArrays(dict):
    """The four arrays, read from batch files that all matched :data:`BATCH_MD5`."""


# ---------------------------------------------------------------- restricted unpickling

class _Guarded:
    """A callable that a pickle may call but never alter.

    The pickle BUILD opcode would otherwise let a pickle set attributes on
    the objects ``find_class`` hands out, which are shared module state.
    """

    __slots__ = ("_func", "_name")

    def __init__(self, func: Callable[..., Any], name: str) -> None:
        self._func = func
        self._name = name

    def __call__(self, *args: Any) -> Any:
        return self._func(*args)

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError(f"pickle tries to modify {self._name}")


def _ndarray_called(*args: Any) -> None:
    """Calling ``numpy.ndarray`` could allocate any size; the format only names it."""
    raise pickle.UnpicklingError("numpy.ndarray may only be passed to _reconstruct, not called")


_NDARRAY = _Guarded(_ndarray_called, "numpy.ndarray")  # what the pickle gets for numpy.ndarray


class _Uint8Dtype:
    """What the pickle gets for ``numpy.dtype('u1')``: a stand-in, not a numpy dtype.

    The pickle's BUILD then calls ``__setstate__`` with the dtype's state. numpy's own would
    copy the state's flags into a live dtype, and a uint8 dtype flagged as holding objects
    makes numpy treat pixel bytes as object pointers. Only a plain uint8's state is taken.
    """

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        plain = (type(state) is tuple and len(state) in (8, 9) and state[0] in (3, 4)
                 and state[1] in ("|", b"|") and state[2:5] == (None, None, None)
                 and state[5:8] == (-1, -1, 0) and state[8:] in ((), (None,)))
        if not plain:
            raise pickle.UnpicklingError(f"dtype state {state!r:.200} is not a plain uint8's")


class _ArrayState:
    """What ``_reconstruct`` gives the pickle: a stand-in that the pickle's BUILD fills.

    ``__setstate__`` takes the (version, shape, dtype, fortran_order, data) that numpy's own
    takes, checks that it describes a uint8 array whose bytes are all there, and builds it
    from those bytes with numpy's own uint8 dtype: no numpy code runs on the pickle's say.
    The array is in ``array`` (None until the pickle sets it).
    """

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if self.array is not None or type(state) is not tuple or len(state) != 5:
            raise pickle.UnpicklingError(f"ndarray state {state!r:.200} is not (1, shape, dtype, "
                                         f"fortran_order, data)")
        version, shape, dtype, fortran, raw = state
        if version != 1 or type(dtype) is not _Uint8Dtype or type(fortran) is not bool:
            raise pickle.UnpicklingError(f"ndarray state {state!r:.200} is not a uint8 array's")
        if type(shape) is not tuple or len(shape) > 32 or any(type(n) is not int or n < 0 for n in shape):
            raise pickle.UnpicklingError(f"ndarray shape {shape!r:.200} is not a shape")
        if type(raw) is not bytes or len(raw) != math.prod(shape):
            got = f"{len(raw)} bytes" if type(raw) is bytes else type(raw).__name__
            raise pickle.UnpicklingError(f"ndarray of shape {shape} needs {math.prod(shape)} bytes, "
                                         f"got {got}")
        self.array = np.frombuffer(raw, np.uint8).reshape(shape, order="F" if fortran else "C")


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> _ArrayState:
    """numpy's ``_reconstruct``, only in the form ndarray pickles use (an empty base array)."""
    if subtype is not _NDARRAY or shape != (0,) or typecode not in (b"b", "b"):
        raise pickle.UnpicklingError(
            f"_reconstruct{(subtype, shape, typecode)!r} is not a plain ndarray")
    return _ArrayState()


def _dtype(spec: Any, align: Any = False, copy: Any = True) -> _Uint8Dtype:
    """``numpy.dtype`` for uint8 only; a fresh stand-in each time (see :class:`_Uint8Dtype`)."""
    if spec not in ("u1", b"u1"):
        raise pickle.UnpicklingError(f"dtype {spec!r} is not uint8")
    return _Uint8Dtype()


def _latin1_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """``_codecs.encode`` as Python 3 uses it to pickle bytes under protocol 2."""
    if type(text) is not str or encoding != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode with {type(text).__name__}, {encoding!r}")
    return text.encode("latin1")


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    # numpy < 2 (and the real CIFAR-10 files) name it here, numpy >= 2 under numpy._core
    ("numpy.core.multiarray", "_reconstruct"): _Guarded(_reconstruct, "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): _Guarded(_reconstruct, "_reconstruct"),
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Guarded(_dtype, "dtype"),
    ("_codecs", "encode"): _Guarded(_latin1_encode, "_codecs.encode"),
}


class CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS`.

    Any other global (``os.system``, ``builtins.eval``, a class, ...) raises
    :class:`DataError` naming ``source`` and the global, before anything is
    called. Python 2 strings load as bytes, as the CIFAR-10 format expects.
    """

    def __init__(self, stream: BinaryIO, source: str) -> None:
        super().__init__(stream, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(f"{self.source}: forbidden global {module}.{name} in pickle "
                            f"(a CIFAR-10 batch holds only a dict, lists, bytes and a "
                            f"uint8 array)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self.source}: forbidden persistent id in pickle")


def read_batch(stream: BinaryIO, source: str, expected_n: int | None = None,
               expected_md5: str | None = None) -> Batch:
    """Read one batch pickle from ``stream``; ``source`` names it in messages.

    Returns data (N, 3072) uint8 and labels (N,) uint8, N = ``expected_n``
    (default :data:`BATCH_SIZE`). Any fault raises :class:`DataError`, and so does
    a file whose MD5 is not ``expected_md5`` (when given), before it is unpickled.

    The bytes are read (at most :data:`MAX_BATCH_BYTES`) and scanned opcode by opcode
    before anything is unpickled: the unpickler allocates what a length field claims
    before it reads, and sizes its memo by the index a PUT names, so a few hostile bytes
    could otherwise ask for gigabytes.
    """
    expected_n = BATCH_SIZE if expected_n is None else expected_n
    data = _read_bounded(stream, source)
    if expected_md5 is not None and (got := hashlib.md5(data).hexdigest()) != expected_md5:
        raise DataError(f"{source}: MD5 {got} is not the official file's {expected_md5}; "
                        f"this is not the original CIFAR-10 batch (a copy in cifar10.npz is "
                        f"read without this check)")
    try:
        _scan_opcodes(data, source, expected_n)
        batch = CifarUnpickler(io.BytesIO(data), source).load()
    except DataError:
        raise
    except Exception as exc:  # hostile bytes can make pickle raise almost anything
        raise DataError(f"{source}: unreadable batch pickle: {type(exc).__name__}: {exc}") \
            from exc
    return check_batch(batch, source, expected_n)


def _read_bounded(stream: BinaryIO, source: str) -> bytes:
    """All of ``stream``, in chunks, refusing more than :data:`MAX_BATCH_BYTES`."""
    chunks, total = [], 0
    while chunk := stream.read(_CHUNK):
        total += len(chunk)
        if total > MAX_BATCH_BYTES:
            raise DataError(f"{source}: more than {MAX_BATCH_BYTES} bytes, more than a batch can be")
        chunks.append(chunk)
    return b"".join(chunks)


def _scan_opcodes(data: bytes, source: str, expected_n: int) -> None:
    """Walk the pickle's opcodes without building anything (pickletools reads each argument
    from ``data``, so a length that runs past the end is an error here, not an allocation).

    Refuses more opcodes (BININT1 aside) than a batch of ``expected_n`` images needs and
    memo indices beyond that count.
    """
    limit = MAX_OPCODES_PER_IMAGE * expected_n + MAX_OPCODES_EXTRA
    count = 0
    for opcode, arg, _ in pickletools.genops(data):
        count += opcode.code != "K"
        if count > limit:
            raise DataError(f"{source}: more than {limit} pickle opcodes, more than a batch of "
                            f"{expected_n} images needs")
        if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and not 0 <= int(arg) < limit:
            raise DataError(f"{source}: pickle memo index {arg}, more than a batch needs")


def check_batch(batch: Any, source: str, expected_n: int) -> Batch:
    """Check an unpickled batch strictly; return data (N, 3072) and labels (N,), uint8."""
    if type(batch) is not dict:
        raise DataError(f"{source}: expected a dict, got {type(batch).__name__}")
    if set(batch) != BATCH_KEYS:
        raise DataError(f"{source}: expected keys {sorted(BATCH_KEYS)}, got "
                        f"{sorted(batch, key=repr)!r}")
    data = _check_data(batch[b"data"], source, expected_n)
    labels = _check_labels(batch[b"labels"], source, expected_n)
    if type(batch[b"batch_label"]) is not bytes:
        raise DataError(f"{source}: batch_label is {type(batch[b'batch_label']).__name__}, "
                        f"expected bytes")
    names = batch[b"filenames"]
    if type(names) is not list or len(names) != expected_n \
            or any(type(n) is not bytes for n in names):
        raise DataError(f"{source}: filenames must be a list of {expected_n} bytes")
    return data, labels


def _check_data(data: Any, source: str, expected_n: int) -> np.ndarray:
    """The b"data" entry as a fresh (N, 3072) uint8 array, or DataError."""
    if type(data) is _ArrayState:  # an ndarray as CifarUnpickler reads it
        data = data.array
    if type(data) is not np.ndarray:
        raise DataError(f"{source}: data is {type(data).__name__}, expected a numpy array")
    if data.dtype != np.uint8 or data.shape != (expected_n, ROW_LENGTH):
        raise DataError(f"{source}: data is {data.shape} {data.dtype}, expected "
                        f"({expected_n}, {ROW_LENGTH}) uint8")
    return np.array(data, dtype=np.uint8, order="C")


def _check_labels(labels: Any, source: str, expected_n: int) -> np.ndarray:
    """The b"labels" entry as a (N,) uint8 array, or DataError."""
    if type(labels) is not list or len(labels) != expected_n:
        got = f"{len(labels)} items" if type(labels) is list else type(labels).__name__
        raise DataError(f"{source}: labels must be a list of {expected_n} ints, got {got}")
    for i, value in enumerate(labels):
        if type(value) is not int or not 0 <= value < N_CLASSES:
            raise DataError(f"{source}: label {i} is {value!r}, expected an int in "
                            f"0..{N_CLASSES - 1}")
    return np.array(labels, dtype=np.uint8)


# ---------------------------------------------------------------- folders and archives

def read_batch_file(path: Path, expected_n: int | None = None, expected_md5: str | None = None) -> Batch:
    """Read one batch file: data (N, 3072) and labels (N,), uint8 (see :func:`read_batch`)."""
    try:
        if path.stat().st_size > MAX_BATCH_BYTES:
            raise DataError(f"{path}: {path.stat().st_size} bytes, more than a batch can be")
        with open(path, "rb") as stream:
            return read_batch(stream, str(path), expected_n, expected_md5)
    except OSError as exc:
        raise DataError(f"{path}: cannot read batch: {exc}") from exc


def read_folder(folder: Path) -> Arrays:
    """Read the six batch files in ``folder`` into the four arrays (see :func:`assemble`)."""
    missing = [name for name in BATCHES if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder}: incomplete CIFAR-10 batches, missing {', '.join(missing)}")
    return _checked({name: read_batch_file(folder / name, None, BATCH_MD5.get(name)) for name in BATCHES})


def read_archive(path: Path, label: str | None = None) -> Arrays:
    """Read the six batches straight out of ``cifar-10-python.tar.gz``.

    Only regular-file members named ``cifar-10-batches-py/<batch>`` are read;
    links, folders, other names (``../x``, absolute paths) are never opened.
    Messages name the archive as ``label`` (default: its path).
    """
    label = label or str(path)
    try:
        with gzip.open(path, "rb") as gz, tarfile.open(fileobj=_ChunkedReads(gz), mode="r:") as tar:
            members = _batch_members(tar, label)
            return _checked({name: _read_member(tar, member, label, BATCH_MD5.get(name))
                             for name, member in members.items()})
    except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
        raise DataError(f"{label}: unreadable tar.gz archive: {exc}") from exc


class _ChunkedReads:
    """A read-only file that asks the file under it for at most :data:`_CHUNK` bytes at a time.

    tarfile reads a pax or GNU long-name header's payload with one ``read(size)``, ``size``
    from the header; a buffered file allocates ``size`` bytes before it finds out how many
    there are, so a 100-byte archive could ask for gigabytes.
    """

    def __init__(self, fileobj: BinaryIO) -> None:
        self._fileobj = fileobj

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self._fileobj.read()
        chunks = []
        while size > 0 and (chunk := self._fileobj.read(min(size, _CHUNK))):
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fileobj.seek(offset, whence)

    def tell(self) -> int:
        return self._fileobj.tell()


def _batch_members(tar: tarfile.TarFile, label: str) -> dict[str, tarfile.TarInfo]:
    """The archive's batch members by batch name; a bad or missing one is a DataError."""
    wanted = {f"{FOLDER}/{name}": name for name in BATCHES}
    found: dict[str, tarfile.TarInfo] = {}
    for count, member in enumerate(tar, 1):
        if count > MAX_ARCHIVE_MEMBERS:
            raise DataError(f"{label}: more than {MAX_ARCHIVE_MEMBERS} members, not CIFAR-10")
        if member.size > MAX_BATCH_BYTES:  # checked before tarfile seeks past it to the next one
            raise DataError(f"{label}:{member.name}: {member.size} bytes, more than a batch can be")
        name = wanted.get(member.name)
        if name is None:
            continue
        if not member.isreg():
            raise DataError(f"{label}: member {member.name} is not a regular file; refused")
        if name in found:
            raise DataError(f"{label}: member {member.name} appears twice")
        found[name] = member
    missing = [f"{FOLDER}/{name}" for name in BATCHES if name not in found]
    if missing:
        raise DataError(f"{label}: archive lacks {', '.join(missing)}")
    return found


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, label: str, expected_md5: str | None) -> Batch:
    """Read one regular-file batch member into memory and unpickle it."""
    source = f"{label}:{member.name}"
    if member.size > MAX_BATCH_BYTES:
        raise DataError(f"{source}: {member.size} bytes, more than a batch can be")
    stream = tar.extractfile(member)
    if stream is None:  # unreachable after isreg(); kept so a change there cannot slip by
        raise DataError(f"{source}: not a regular file")
    with stream:  # read in chunks: member.size is only what the header claims
        return read_batch(stream, source, None, expected_md5)


def assemble(batches: Mapping[str, Batch]) -> Arrays:
    """Join the six batches into the four arrays.

    x_train (5N, 3, 32, 32), y_train (5N,), x_test (N, 3, 32, 32), y_test (N,).

    A row of ``data`` is the R, G then B plane, each row-major 32x32, so a
    reshape gives channel-first images without copying pixels around.
    """
    train = [batches[name] for name in TRAIN_BATCHES]
    x_train = np.concatenate([data for data, _ in train]).reshape(-1, *IMAGE_SHAPE)
    y_train = np.concatenate([labels for _, labels in train])
    x_test, y_test = batches[TEST_BATCH]
    return {"x_train": x_train, "y_train": y_train,
            "x_test": x_test.reshape(-1, *IMAGE_SHAPE), "y_test": y_test}


def _checked(batches: Mapping[str, Batch]) -> Arrays:
    """:func:`assemble`, marked verified when every batch was read against its pinned MD5."""
    arrays = assemble(batches)
    return VerifiedArrays(arrays) if all(name in BATCH_MD5 for name in BATCHES) else arrays


# ---------------------------------------------------------------- sources

def load_dir(root: Path, kind: str) -> tuple[Arrays, str]:
    """Read CIFAR-10 from a data folder (data_dir, $VAELAB_DATA).

    Looks for, in order: ``root/cifar-10-batches-py/``, the batch files in
    ``root`` itself, ``root/cifar-10-python.tar.gz``, ``root/cifar10.npz``.
    ``root`` may also be the archive itself. Returns (arrays, where).
    """
    if root.is_file() and root.name.endswith(".tar.gz"):
        return read_archive(root), f"{kind} {root}"
    if not root.is_dir():
        raise SourceUnavailable("no such folder")
    for folder in (root / FOLDER, root):
        if any((folder / name).is_file() for name in BATCHES):
            return read_folder(folder), f"{kind} {folder} (CIFAR-10 batches)"
    if (root / ARCHIVE).is_file():
        return read_archive(root / ARCHIVE), f"{kind} {root / ARCHIVE}"
    if (root / f"{NAME}.npz").is_file():
        return read_npz(root / f"{NAME}.npz"), f"{kind} {root / f'{NAME}.npz'}"
    raise SourceUnavailable(f"no {NAME} data (looked for {FOLDER}/, the batch files, "
                            f"{ARCHIVE} or {NAME}.npz in {root})")


def load_mirror(base: str, timeout: float, progress: bool) -> tuple[Arrays, str]:
    """Download ``<base>cifar-10-python.tar.gz`` to a temp folder and read it."""
    with tempfile.TemporaryDirectory(prefix="vaelab-download-") as tmp:
        archive = Path(tmp) / ARCHIVE
        download(base + ARCHIVE, archive, timeout=timeout, progress=progress)
        # messages name the URL: the temp path means nothing once it is gone
        return read_archive(archive, label=base + ARCHIVE), f"mirror {base}"


# ---------------------------------------------------------------- verification and cache

def verify_cifar(
    arrays: Mapping[str, np.ndarray], expected: Mapping[str, str] | None, source: str
) -> dict[str, str]:
    """Check the structure of the four arrays and, if ``expected`` is given, their digests.

    Structure: x_train (5N, 3, 32, 32) and x_test (N, 3, 32, 32) uint8,
    y_train (5N,) and y_test (N,) uint8 in 0..9, every class exactly a tenth
    of each split (N = :data:`BATCH_SIZE`). Returns the SHA-256 of each array.
    """
    missing = [key for key in KEYS if key not in arrays]
    if missing:
        raise DataError(f"{source}: missing arrays {', '.join(missing)}")
    for split, n in (("train", len(TRAIN_BATCHES) * BATCH_SIZE), ("test", BATCH_SIZE)):
        _check_split(arrays[f"x_{split}"], arrays[f"y_{split}"], n, f"{source} {split}")
    digests = {key: sha256_array(arrays[key]) for key in KEYS}
    for key in KEYS if expected else ():
        if digests[key] != expected[key]:
            raise DataError(f"{source}: SHA-256 mismatch for {key} {arrays[key].shape}: "
                            f"expected {expected[key]}, got {digests[key]}")
    return digests


def _check_split(x: np.ndarray, y: np.ndarray, n: int, where: str) -> None:
    """x (n, 3, 32, 32) uint8, y (n,) uint8 with n/10 images of each class."""
    if x.dtype != np.uint8 or x.shape != (n, *IMAGE_SHAPE):
        raise DataError(f"{where}: images are {x.shape} {x.dtype}, expected "
                        f"{(n, *IMAGE_SHAPE)} uint8")
    if y.dtype != np.uint8 or y.shape != (n,):
        raise DataError(f"{where}: labels are {y.shape} {y.dtype}, expected ({n},) uint8")
    if y.size and y.max() >= N_CLASSES:
        raise DataError(f"{where}: label {int(y.max())} is outside 0..{N_CLASSES - 1}")
    counts = np.bincount(y, minlength=N_CLASSES)
    if (counts != n // N_CLASSES).any():
        raise DataError(f"{where}: images per class {counts.tolist()}, expected "
                        f"{n // N_CLASSES} each")


def write_cache_atomic(
    path: str | os.PathLike, arrays: Mapping[str, np.ndarray], expected: Mapping[str, str] | None
) -> None:
    """Write the four arrays to ``path`` as an .npz, never seen half-written.

    :func:`vaelab.data.npzfile.write_npz_atomic` (temp file, fsync, re-read and
    verify, rename), verified with :func:`verify_cifar`. Without pinned digests
    the re-read is still checked against the digests of what was written.
    """
    expected = expected or {key: sha256_array(arrays[key]) for key in KEYS}
    write_npz_atomic(path, arrays, expected, check=verify_cifar)

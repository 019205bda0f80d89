"""Tests for CIFAR-10: batch pickles read safely, folders, archives, cache, mirror.

Fake data sets have N = 20 images per batch (cifar.BATCH_SIZE is lowered to
match) and are written as real protocol-2 pickles, both as Python 3 writes
them and as Python 2's cPickle wrote the original files. No pickle is ever
loaded here except through vaelab's restricted unpickler. The only network
used is a local HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import pickletools
import re
import shlex
import struct
import tarfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from mirror_server import serve

from vaelab.data import (
    EXPECTED_DIGESTS,
    DataError,
    DataWarning,
    UnpinnedDigestWarning,
    cache_info,
    cifar,
    load_dataset,
    sources,
)

N = 20  # images per fake batch
KEYS = ("x_train", "y_train", "x_test", "y_test")
ORIGINAL_BATCH_MD5 = dict(cifar.BATCH_MD5)  # the fixture below blanks them for the fakes
pytestmark = pytest.mark.filterwarnings("ignore::vaelab.data.UnpinnedDigestWarning")


# ---------------------------------------------------------------- fake CIFAR-10

def make_batches(seed: int = 0) -> dict[str, dict]:
    """Six batch dicts as in cifar-10-batches-py, N images each, classes balanced per split."""
    rng = np.random.default_rng(seed)
    train_labels = rng.permutation(np.repeat(np.arange(10), 5 * N // 10)).reshape(5, N)
    test_labels = rng.permutation(np.repeat(np.arange(10), N // 10))
    labels = {**{name: train_labels[i] for i, name in enumerate(cifar.TRAIN_BATCHES)},
              cifar.TEST_BATCH: test_labels}
    return {name: {
        b"batch_label": f"{name} of fake".encode(),
        b"labels": [int(v) for v in labels[name]],
        b"data": rng.integers(0, 256, (N, 3072), dtype=np.uint8),
        b"filenames": [f"{name}_{i}.png".encode() for i in range(N)],
    } for name in cifar.BATCHES}


def expected_arrays(batches: dict[str, dict]) -> dict[str, np.ndarray]:
    train = [batches[name] for name in cifar.TRAIN_BATCHES]
    test = batches[cifar.TEST_BATCH]
    return {
        "x_train": np.concatenate([b[b"data"] for b in train]).reshape(5 * N, 3, 32, 32),
        "y_train": np.concatenate([b[b"labels"] for b in train]).astype(np.uint8),
        "x_test": test[b"data"].reshape(N, 3, 32, 32),
        "y_test": np.array(test[b"labels"], dtype=np.uint8),
    }


def digests_of(arrays: dict[str, np.ndarray]) -> dict[str, str]:
    return {key: hashlib.sha256(np.ascontiguousarray(arrays[key]).tobytes()).hexdigest()
            for key in KEYS}


def py3_pickle(obj: object) -> bytes:
    """Protocol 2 as Python 3 writes it (bytes go through _codecs.encode)."""
    return pickle.dumps(obj, protocol=2)


def _py2(obj: object) -> bytes:
    """The opcodes Python 2's cPickle (protocol 2) wrote for ``obj``, numpy 1.x arrays included."""
    if obj is None:
        return b"N"
    if obj is False:
        return b"\x89"
    if isinstance(obj, bytes):  # a Python 2 str
        if len(obj) < 256:
            return b"U" + bytes([len(obj)]) + obj
        return b"T" + struct.pack("<i", len(obj)) + obj
    if isinstance(obj, int):
        if 0 <= obj < 256:
            return b"K" + bytes([obj])
        if 0 <= obj < 65536:
            return b"M" + struct.pack("<H", obj)
        return b"J" + struct.pack("<i", obj)
    if isinstance(obj, tuple):
        return b"(" + b"".join(map(_py2, obj)) + b"t"
    if isinstance(obj, list):
        return b"](" + b"".join(map(_py2, obj)) + b"e"
    if isinstance(obj, dict):
        return b"}(" + b"".join(_py2(k) + _py2(v) for k, v in obj.items()) + b"u"
    if isinstance(obj, np.ndarray):
        dtype = (b"cnumpy\ndtype\n" + _py2((b"u1", 0, 1)) + b"R"
                 + _py2((3, b"|", None, None, None, -1, -1, 0)) + b"b")
        return (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n"
                + _py2((0,)) + _py2(b"b") + b"\x87R"
                + b"(" + _py2(1) + _py2(obj.shape) + dtype + _py2(False) + _py2(obj.tobytes())
                + b"tb")
    raise TypeError(type(obj))


def py2_pickle(obj: object) -> bytes:
    """A batch pickled as in the original cifar-10-python.tar.gz."""
    return b"\x80\x02" + _py2(obj) + b"."


def globals_in(data: bytes) -> set[tuple[str, str]]:
    """The (module, name) of every GLOBAL opcode, read with pickletools (nothing is loaded)."""
    return {tuple(arg.split(" ")) for op, arg, _ in pickletools.genops(data)
            if op.name == "GLOBAL"}


def write_folder(folder: Path, batches: dict[str, dict],
                 dump: Callable[[object], bytes] = py3_pickle) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, batch in batches.items():
        (folder / name).write_bytes(dump(batch))
    return folder


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def batch_members(batches: dict[str, dict], dump=py3_pickle, prefix: str = cifar.FOLDER + "/"):
    return [regular(prefix + name, dump(batch)) for name, batch in batches.items()]


def write_archive(path: Path, members: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def assert_loaded(dataset, batches: dict[str, dict]) -> None:
    want = expected_arrays(batches)
    for key in KEYS:
        got = getattr(dataset, key)
        np.testing.assert_array_equal(got, want[key])
        assert got.dtype == np.uint8 and got.flags["C_CONTIGUOUS"]
    assert dataset.x_train.shape == (5 * N, 3, 32, 32) and dataset.x_test.shape == (N, 3, 32, 32)
    assert dataset.digests == digests_of(want)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------- fixtures

@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """Tiny fake batches (so no pinned file MD5s), no env var, no default mirrors, default cache inside tmp_path."""
    monkeypatch.setattr(cifar, "BATCH_SIZE", N)
    monkeypatch.setattr(cifar, "BATCH_MD5", {})
    monkeypatch.delenv("VAELAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setitem(sources.DEFAULT_MIRRORS, "cifar10", ())


@pytest.fixture
def batches() -> dict[str, dict]:
    return make_batches(0)


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def load(cache: Path, data_dir=None, **kwargs):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("mirrors", [])
    return load_dataset("cifar10", data_dir, cache_dir=cache, **kwargs)


# ---------------------------------------------------------------- reading the format

@pytest.mark.parametrize("dump", [py3_pickle, py2_pickle], ids=["python3", "python2"])
def test_both_pickle_dialects_use_only_the_allowed_globals(batches, dump):
    data = dump(batches["data_batch_1"])
    used = globals_in(data)
    assert used <= set(cifar.ALLOWED_GLOBALS)
    assert ("numpy", "ndarray") in used and ("numpy", "dtype") in used
    x, y = cifar.read_batch(io.BytesIO(data), "b1")
    np.testing.assert_array_equal(x, batches["data_batch_1"][b"data"])
    assert y.tolist() == batches["data_batch_1"][b"labels"] and y.dtype == np.uint8


def test_python2_pickle_names_the_globals_the_real_files_use(batches):
    assert globals_in(py2_pickle(batches["test_batch"])) == {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}


@pytest.mark.parametrize("layout", ["batches-folder", "flat", "archive", "archive-path"])
def test_data_dir_layouts_load_and_are_cached(tmp_path, batches, cache, layout):
    root = tmp_path / "d"
    if layout == "batches-folder":
        where = write_folder(root / cifar.FOLDER, batches, py2_pickle)
        source = f"data-dir {where} (CIFAR-10 batches)"
    elif layout == "flat":
        where = write_folder(root, batches)
        source = f"data-dir {where} (CIFAR-10 batches)"
    else:
        archive = write_archive(root / cifar.ARCHIVE, batch_members(batches, py2_pickle))
        root = archive if layout == "archive-path" else root
        source = f"data-dir {archive}"
    with pytest.warns(UnpinnedDigestWarning, match="cifar10: no pinned SHA-256 digests"):
        dataset = load(cache, root)
    assert dataset.name == "cifar10" and dataset.source == source
    assert_loaded(dataset, batches)
    assert files_in(cache) == ["cifar10.npz"]
    again = load(cache)
    assert again.source == f"cache {cache / 'cifar10.npz'}"
    assert_loaded(again, batches)


def test_channel_first_layout(tmp_path, batches, cache):
    dataset = load(cache, write_folder(tmp_path / "d", batches))
    first = batches["data_batch_1"][b"data"][0]
    for channel in range(3):  # R, G, B planes, each row-major 32x32
        plane = first[1024 * channel:1024 * (channel + 1)].reshape(32, 32)
        np.testing.assert_array_equal(dataset.x_train[0, channel], plane)
    assert dataset.x_train[0, 0, 0, 1] == first[1] and dataset.x_train[0, 0, 1, 0] == first[32]
    last = batches["data_batch_5"][b"data"][-1]
    np.testing.assert_array_equal(dataset.x_train[-1, 2], last[2048:].reshape(32, 32))
    test0 = batches["test_batch"][b"data"][0]
    np.testing.assert_array_equal(dataset.x_test[0, 1], test0[1024:2048].reshape(32, 32))


@pytest.mark.parametrize("name", ["cifar10", "cifar-10", "CIFAR_10", " Cifar10 "])
def test_name_aliases(tmp_path, batches, cache, name):
    dataset = load_dataset(name, write_folder(tmp_path / "d", batches), cache_dir=cache)
    assert dataset.name == "cifar10"


def test_unknown_name_still_lists_cifar10():
    with pytest.raises(DataError, match="unknown data set 'cifar'; known: .*cifar10"):
        load_dataset("cifar")


# ---------------------------------------------------------------- pickles that must not load

class RunsShell:
    """Unpickling this with plain pickle would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.command = f"touch {shlex.quote(str(marker))}"

    def __reduce__(self):
        return os.system, (self.command,)


def test_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path, batches, cache):
    marker = tmp_path / "pwned"
    batch = {**batches["data_batch_3"], b"data": RunsShell(marker)}
    data = py3_pickle(batch)
    forbidden = (os.system.__module__, "system")  # posix.system on Linux
    assert forbidden in globals_in(data)  # the trap is live: plain pickle would run it
    folder = write_folder(tmp_path / "d", batches)
    (folder / "data_batch_3").write_bytes(data)
    with pytest.raises(DataError, match=rf"{folder / 'data_batch_3'}: forbidden global "
                                        rf"{forbidden[0]}\.system"):
        load(cache, folder)
    assert not marker.exists()
    assert files_in(cache) == []


def test_pickle_that_runs_code_inside_archive_names_archive_and_member(
        tmp_path, batches, cache):
    marker = tmp_path / "pwned"
    members = batch_members(batches)
    members[5] = regular(f"{cifar.FOLDER}/test_batch", pickle.dumps(RunsShell(marker), 4))
    archive = write_archive(tmp_path / "d" / cifar.ARCHIVE, members)
    with pytest.raises(DataError, match=rf"{archive}:{cifar.FOLDER}/test_batch: forbidden "
                                        rf"global {os.system.__module__}\.system"):
        load(cache, archive)
    assert not marker.exists()


def _call_global(module: str, name: str, arg: str) -> bytes:
    """A protocol-2 pickle calling module.name(arg) via GLOBAL + REDUCE."""
    text = arg.encode()
    return (b"\x80\x02c" + f"{module}\n{name}\n".encode()
            + b"X" + struct.pack("<I", len(text)) + text + b"\x85R.")


@pytest.mark.parametrize("module, name", [
    ("os", "system"), ("posix", "system"), ("builtins", "eval"), ("builtins", "exec"),
    ("__builtin__", "eval"), ("subprocess", "Popen"), ("builtins", "getattr"),
    ("numpy", "load"), ("numpy.core.multiarray", "scalar"), ("_codecs", "decode"),
    ("copyreg", "_reconstructor"), ("pickle", "loads"),
])
def test_forbidden_globals_are_named(tmp_path, module, name):
    marker = tmp_path / "pwned"
    data = _call_global(module, name, f"open({str(marker)!r}, 'w')")
    with pytest.raises(DataError, match=rf"^b1: forbidden global {module}\.{name} in pickle"):
        cifar.read_batch(io.BytesIO(data), "b1")
    assert not marker.exists()


def test_allowed_callables_refuse_to_be_modified():
    # BUILD on the allowed numpy.dtype: would set attributes on shared module state
    data = b"\x80\x02cnumpy\ndtype\n}X\x0c\x00\x00\x00__defaults__N\x85sb."
    with pytest.raises(DataError, match="b1: unreadable batch pickle: .*modify dtype"):
        cifar.read_batch(io.BytesIO(data), "b1")


@pytest.mark.parametrize("misuse, fault", [
    (b"cnumpy\ndtype\nX\x02\x00\x00\x00f8\x85R.", "dtype 'f8' is not uint8"),
    (b"cnumpy\ndtype\nX\x01\x00\x00\x00O\x85R.", "dtype 'O' is not uint8"),
    (b"c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.",
     "_codecs.encode with str, 'rot13'"),
    (b"cnumpy._core.multiarray\n_reconstruct\ncnumpy\ndtype\nK\x00\x85U\x01b\x87R.",
     "is not a plain ndarray"),
    (b"cnumpy\nndarray\nJ\x00\xe4\x0bT\x85R.", "numpy.ndarray may only be passed"),
    (b"cnumpy\nndarray\n)\x81.", "NEWOBJ class argument"),
])
def test_allowed_globals_only_in_the_form_the_format_uses(misuse, fault):
    with pytest.raises(DataError, match=f"b1: unreadable batch pickle: .*{fault}"):
        cifar.read_batch(io.BytesIO(b"\x80\x02" + misuse), "b1")


class Custom:
    pass


def _batch(**changes) -> dict:
    batch = dict(make_batches(1)["data_batch_1"])
    for key, value in changes.items():
        if value is None:
            del batch[key.encode()]
        else:
            batch[key.encode()] = value
    return batch


@pytest.mark.parametrize("obj, fault", [
    ({1, 2}, r"forbidden global __builtin__\.set"),  # protocol 2 pickles a set by its class
    (Custom(), r"forbidden global test_data_cifar\.Custom|forbidden global tests\."),
    (_batch(labels={1, 2}), r"forbidden global __builtin__\.set"),
    (_batch(labels=[0] * 19), "labels must be a list of 20 ints, got 19 items"),
    (_batch(labels=[0] * 19 + [10]), "label 19 is 10, expected an int in 0..9"),
    (_batch(labels=[-1] + [0] * 19), "label 0 is -1"),
    (_batch(labels=[True] * 20), "label 0 is True"),
    (_batch(labels=[0.0] * 20), "label 0 is 0.0"),
    (_batch(labels=[Custom()] * 20), "forbidden global"),
    (_batch(data=np.zeros((20, 3072))), "dtype 'f8' is not uint8"),
    (_batch(data=np.zeros((20, 3071), np.uint8)), r"data is \(20, 3071\) uint8, expected \(20, "),
    (_batch(data=np.zeros((21, 3072), np.uint8)), r"data is \(21, 3072\)"),
    (_batch(data=np.zeros((20, 3, 32, 32), np.uint8)), r"data is \(20, 3, 32, 32\)"),
    (_batch(data=np.zeros((20, 3072), np.uint8).tolist()), "data is list"),
    (_batch(data=b"\x00" * 20 * 3072), "data is bytes"),
    (_batch(extra=1), "expected keys"),
    (_batch(filenames=None), "expected keys"),
    (_batch(batch_label="text"), "batch_label is str"),
    (_batch(filenames=[b"x"] * 3), "filenames must be a list of 20 bytes"),
    ([1, 2, 3], "expected a dict, got list"),
])
def test_other_contents_are_refused(obj, fault):
    with pytest.raises(DataError, match=f"^b1: .*({fault})"):
        cifar.read_batch(io.BytesIO(py3_pickle(obj)), "b1")


@pytest.mark.parametrize("obj, fault", [
    ({1, 2}, "expected a dict, got set"),
    (_batch(labels=set(range(10))), "labels must be a list of 20 ints, got set"),
    (_batch(filenames=frozenset()), "filenames must be a list of 20 bytes"),
])
def test_protocol_4_containers_need_no_global_but_are_still_refused(obj, fault):
    data = pickle.dumps(obj, protocol=4)
    assert {"EMPTY_SET", "FROZENSET"} & {op.name for op, _, _ in pickletools.genops(data)}
    with pytest.raises(DataError, match=f"^b1: {fault}"):
        cifar.read_batch(io.BytesIO(data), "b1")


def test_check_batch_refuses_float_arrays_even_if_unpickled_elsewhere():
    with pytest.raises(DataError, match=r"b1: data is \(20, 3072\) float64"):
        cifar.check_batch(_batch(data=np.zeros((20, 3072))), "b1", N)


@pytest.mark.parametrize("data", [b"", b"\x80\x02}(", b"garbage", b"\x80\x02Q."])
def test_broken_pickles_are_data_errors(data):
    with pytest.raises(DataError, match="^b1: "):
        cifar.read_batch(io.BytesIO(data), "b1")


def test_batch_size_is_checked_against_the_real_size(monkeypatch, batches):
    monkeypatch.setattr(cifar, "BATCH_SIZE", 10000)
    with pytest.raises(DataError, match=r"data is \(20, 3072\) uint8, expected \(10000, 3072\)"):
        cifar.read_batch(io.BytesIO(py3_pickle(batches["test_batch"])), "b1")
    x, _ = cifar.read_batch(io.BytesIO(py3_pickle(batches["test_batch"])), "b1", expected_n=N)
    assert x.shape == (N, 3072)


# ---------------------------------------------------------------- folders

def test_incomplete_folder_names_missing_batches(tmp_path, batches, cache):
    folder = write_folder(tmp_path / "d", batches)
    (folder / "data_batch_4").unlink()
    with pytest.raises(DataError, match=f"{folder}: incomplete CIFAR-10 batches, missing "
                                        "data_batch_4"):
        load(cache, tmp_path / "d")
    assert files_in(cache) == []


def test_empty_or_missing_data_dir(tmp_path, cache):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=f"data-dir {tmp_path / 'empty'}: no cifar10 data"):
        load(cache, tmp_path / "empty")
    with pytest.raises(DataError, match="no such folder"):
        load(cache, tmp_path / "missing")


def test_oversized_batch_file_is_not_read(tmp_path, batches, cache, monkeypatch):
    monkeypatch.setattr(cifar, "MAX_BATCH_BYTES", 1000)
    folder = write_folder(tmp_path / "d", batches)
    with pytest.raises(DataError, match="more than a batch can be"):
        load(cache, folder)


def test_env_var_is_used(tmp_path, batches, cache, monkeypatch):
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "env"))
    write_archive(tmp_path / "env" / cifar.ARCHIVE, batch_members(batches))
    dataset = load(cache)
    assert dataset.source == f"$VAELAB_DATA {tmp_path / 'env' / cifar.ARCHIVE}"
    assert_loaded(dataset, batches)


def test_npz_in_data_dir(tmp_path, batches, cache):
    (tmp_path / "d").mkdir()
    np.savez(tmp_path / "d" / "cifar10.npz", **expected_arrays(batches))
    assert_loaded(load(cache, tmp_path / "d"), batches)


# ---------------------------------------------------------------- archives

@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE], ids=["symlink", "hardlink"])
@pytest.mark.parametrize("target", ["/etc/passwd", f"{cifar.FOLDER}/data_batch_1"])
def test_link_member_with_a_batch_name_is_refused(tmp_path, batches, cache, kind, target):
    members = batch_members(batches)
    members[1] = link(f"{cifar.FOLDER}/data_batch_2", target, kind)
    archive = write_archive(tmp_path / "d" / cifar.ARCHIVE, members)
    with pytest.raises(DataError, match=f"{archive}: member {cifar.FOLDER}/data_batch_2 is "
                                        "not a regular file; refused"):
        load(cache, archive)
    assert files_in(cache) == []


@pytest.mark.parametrize("prefix", [
    "../" + cifar.FOLDER + "/", "/tmp/" + cifar.FOLDER + "/", "./" + cifar.FOLDER + "/",
    cifar.FOLDER + "/../" + cifar.FOLDER + "/", "x/" + cifar.FOLDER + "/", "",
])
def test_members_under_other_paths_are_never_read(tmp_path, batches, cache, prefix):
    archive = write_archive(tmp_path / "d" / cifar.ARCHIVE,
                            batch_members(batches, prefix=prefix))
    with pytest.raises(DataError, match=f"{archive}: archive lacks {cifar.FOLDER}/data_batch_1"):
        load(cache, archive)


def test_junk_members_are_skipped_and_nothing_is_written(tmp_path, batches, cache, monkeypatch):
    workdir = tmp_path / "cwd" / "a" / "b"
    workdir.mkdir(parents=True)
    monkeypatch.chdir(workdir)
    escaped = tmp_path / "cwd" / "escaped"
    members = [
        regular("../../escaped", b"x"),
        regular(str(tmp_path / "absolute"), b"x"),
        link(f"{cifar.FOLDER}/batches.meta", "/etc/passwd"),
        link("../../escaped-link", "/etc/passwd"),
        *batch_members(batches, py2_pickle),
    ]
    archive = write_archive(tmp_path / "d" / cifar.ARCHIVE, members)
    assert_loaded(load(cache, archive), batches)
    assert not escaped.exists() and not (tmp_path / "cwd" / "escaped-link").exists()
    assert not (tmp_path / "absolute").exists()
    assert list(workdir.iterdir()) == []


def test_duplicate_member_is_refused(tmp_path, batches, cache):
    members = batch_members(batches) + batch_members(make_batches(3))[:1]
    archive = write_archive(tmp_path / "d" / cifar.ARCHIVE, members)
    with pytest.raises(DataError, match=f"member {cifar.FOLDER}/data_batch_1 appears twice"):
        load(cache, archive)


def test_oversized_member_and_too_many_members(tmp_path, batches, cache, monkeypatch):
    archive = write_archive(tmp_path / "d" / cifar.ARCHIVE, batch_members(batches))
    monkeypatch.setattr(cifar, "MAX_BATCH_BYTES", 1000)
    with pytest.raises(DataError, match=f"{archive}:{cifar.FOLDER}/data_batch_1: .* bytes, "
                                        "more than a batch can be"):
        load(cache, archive)
    monkeypatch.undo()
    monkeypatch.setattr(cifar, "BATCH_SIZE", N)
    many = [regular(f"junk/{i}", b"") for i in range(cifar.MAX_ARCHIVE_MEMBERS)]
    write_archive(archive, many + batch_members(batches))
    with pytest.raises(DataError, match=f"more than {cifar.MAX_ARCHIVE_MEMBERS} members"):
        load(cache, archive)


def test_corrupt_archives(tmp_path, batches, cache):
    archive = write_archive(tmp_path / "d" / cifar.ARCHIVE, batch_members(batches))
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match=f"{archive}: unreadable tar.gz archive"):
        load(cache, archive)
    archive.write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match=f"{archive}: unreadable tar.gz archive"):
        load(cache, archive)


# ---------------------------------------------------------------- verification and cache

def test_structure_is_verified(tmp_path, cache):
    bad = make_batches(0)
    bad["data_batch_2"][b"labels"][0] = (bad["data_batch_2"][b"labels"][0] + 1) % 10
    with pytest.raises(DataError, match=r"train: images per class \[.*\], expected 10 each"):
        load(cache, write_folder(tmp_path / "d", bad))
    assert files_in(cache) == []


@pytest.mark.parametrize("key, value, fault", [
    ("x_train", np.zeros((5 * N, 32, 32, 3), np.uint8), r"train: images are \(100, 32, 32, 3\)"),
    ("x_test", np.zeros((N, 3, 32, 32), np.int16), "test: images are .* int16"),
    ("y_test", np.full(N, 10, np.uint8), "test: label 10 is outside 0..9"),
    ("y_train", np.zeros(5 * N + 1, np.uint8), r"train: labels are \(101,\)"),
    ("y_test", None, "missing arrays y_test"),
])
def test_verify_cifar_faults(batches, key, value, fault):
    arrays = expected_arrays(batches)
    if value is None:
        del arrays[key]
    else:
        arrays[key] = value
    with pytest.raises(DataError, match=f"^src:? {fault}"):
        cifar.verify_cifar(arrays, None, "src")


def test_pinned_digests_are_checked(tmp_path, batches, cache, monkeypatch):
    folder = write_folder(tmp_path / "d", batches)
    monkeypatch.setitem(EXPECTED_DIGESTS, "cifar10", digests_of(expected_arrays(batches)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pinned: no UnpinnedDigestWarning
        assert_loaded(load(cache, folder), batches)
        assert load(cache).source.startswith("cache ")
    other = write_folder(tmp_path / "other", make_batches(5))
    with pytest.raises(DataError, match=f"data-dir {other} .*SHA-256 mismatch for x_train"):
        load(cache, other)


def md5_of(batches: dict[str, dict], dump=py3_pickle) -> dict[str, str]:
    return {name: hashlib.md5(dump(batch)).hexdigest() for name, batch in batches.items()}


def test_the_official_file_md5s_are_pinned():
    assert set(ORIGINAL_BATCH_MD5) == set(cifar.BATCHES)
    assert all(len(v) == 32 and int(v, 16) >= 0 for v in ORIGINAL_BATCH_MD5.values())


@pytest.mark.parametrize("layout", ["folder", "archive"])
def test_batch_files_matching_their_pinned_md5s_load_without_a_warning(tmp_path, batches, cache, monkeypatch,
                                                                         layout):
    monkeypatch.setattr(cifar, "BATCH_MD5", md5_of(batches, py2_pickle))
    if layout == "folder":
        root = write_folder(tmp_path / "d", batches, py2_pickle)
    else:
        root = write_archive(tmp_path / "d" / cifar.ARCHIVE, batch_members(batches, py2_pickle))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every file verified: no UnpinnedDigestWarning
        assert_loaded(load(cache, root), batches)


@pytest.mark.parametrize("layout", ["folder", "archive"])
def test_a_batch_file_that_is_not_the_original_is_refused_before_unpickling(tmp_path, batches, cache,
                                                                            monkeypatch, layout):
    pinned = md5_of(batches, py2_pickle)
    monkeypatch.setattr(cifar, "BATCH_MD5", pinned)
    changed = dict(batches, data_batch_3=make_batches(7)["data_batch_3"])
    if layout == "folder":
        root = write_folder(tmp_path / "d", changed, py2_pickle)
        where = f"{root / 'data_batch_3'}"
    else:
        root = write_archive(tmp_path / "d" / cifar.ARCHIVE, batch_members(changed, py2_pickle))
        where = f"{root}:{cifar.FOLDER}/data_batch_3"
    got = hashlib.md5(py2_pickle(changed["data_batch_3"])).hexdigest()
    unpickled, real_load = [], cifar.CifarUnpickler.load
    monkeypatch.setattr(cifar.CifarUnpickler, "load", lambda self: unpickled.append(1) or real_load(self))
    with pytest.raises(DataError, match=f"{re.escape(where)}: MD5 {got} is not the official file's "
                                        f"{pinned['data_batch_3']}"):
        load(cache, root)
    assert len(unpickled) == 2  # data_batch_1 and 2 only: the changed file never reached the unpickler
    assert files_in(cache) == []


def test_corrupt_or_wrong_cache_warns_is_removed_and_falls_through(server, batches, cache):
    good = f"{server}/good/"
    cache.mkdir()
    (cache / "cifar10.npz").write_bytes(b"garbage")
    with pytest.warns(DataWarning, match=f"cache {cache / 'cifar10.npz'}.*unreadable npz"):
        assert load(cache, mirrors=[good]).source == f"mirror {good}"
    mnist_shaped = {"x_train": np.zeros((5 * N, 28, 28), np.uint8),
                    "y_train": np.zeros(5 * N, np.uint8),
                    "x_test": np.zeros((N, 28, 28), np.uint8), "y_test": np.zeros(N, np.uint8)}
    np.savez(cache / "cifar10.npz", **mnist_shaped)
    with pytest.warns(DataWarning, match=r"cifar10.npz train: images are \(100, 28, 28\)"):
        assert load(cache, mirrors=[good]).source == f"mirror {good}"
    dataset = load(cache)
    assert dataset.source == f"cache {cache / 'cifar10.npz'}"
    assert_loaded(dataset, batches)


def test_cache_info_reports_cifar10(tmp_path, batches, cache):
    load(cache, write_folder(tmp_path / "d", batches))
    (info,) = cache_info(cache)
    assert info["name"] == "cifar10" and info["verified"] is True and info["error"] is None
    np.savez(cache / "cifar10.npz", **dict(expected_arrays(batches),
                                            y_test=np.zeros(N, np.uint8)))
    (info,) = cache_info(cache)
    assert info["verified"] is False and "images per class" in info["error"]


def test_cache_write_is_atomic(tmp_path, batches, cache, monkeypatch):
    arrays = expected_arrays(batches)
    cifar.write_cache_atomic(cache / "cifar10.npz", arrays, None)
    before = (cache / "cifar10.npz").read_bytes()
    with pytest.raises(DataError, match="cache temp file .*SHA-256 mismatch"):
        cifar.write_cache_atomic(cache / "cifar10.npz", arrays,
                                 digests_of(expected_arrays(make_batches(4))))

    def crash(out, **arrays):
        out.write(b"PK partial")
        raise OSError("disk full")

    monkeypatch.setattr(cifar.np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        cifar.write_cache_atomic(cache / "cifar10.npz", arrays, None)
    assert files_in(cache) == ["cifar10.npz"]
    assert (cache / "cifar10.npz").read_bytes() == before


# ---------------------------------------------------------------- mirror

@pytest.fixture
def server(tmp_path, batches):
    """Mirrors good/, truncated/, html/, unbalanced/, other/ (valid, other data), empty/."""
    root = tmp_path / "www"
    good = write_archive(root / "good" / cifar.ARCHIVE, batch_members(batches, py2_pickle))
    (root / "truncated").mkdir()
    (root / "truncated" / cifar.ARCHIVE).write_bytes(good.read_bytes()[:-200])
    (root / "html").mkdir()
    (root / "html" / cifar.ARCHIVE).write_text("<html>Moved</html>")
    unbalanced = make_batches(0)
    unbalanced["test_batch"][b"labels"] = [0] * N
    write_archive(root / "unbalanced" / cifar.ARCHIVE, batch_members(unbalanced))
    write_archive(root / "other" / cifar.ARCHIVE, batch_members(make_batches(7)))
    (root / "empty").mkdir()
    with serve(root) as url:
        yield url


def test_good_mirror_loads_and_caches(server, batches, cache):
    dataset = load(cache, mirrors=[f"{server}/good"])
    assert dataset.source == f"mirror {server}/good/"
    assert_loaded(dataset, batches)
    assert files_in(cache) == ["cifar10.npz"]
    assert load(cache).source.startswith("cache ")


def test_default_mirror_is_the_toronto_archive(monkeypatch):
    monkeypatch.undo()
    assert sources.DEFAULT_MIRRORS["cifar10"] == ("https://www.cs.toronto.edu/~kriz/",)
    assert cifar.ARCHIVE == "cifar-10-python.tar.gz"


@pytest.mark.parametrize("mirror, fault", [
    ("truncated", "unreadable tar.gz archive"),
    ("short", "truncated download"),
    ("html", "unreadable tar.gz archive"),
    ("unbalanced", "test: images per class [20, 0,"),
])
def test_bad_mirrors_are_clear_errors_and_nothing_is_cached(server, cache, mirror, fault):
    with pytest.raises(DataError) as info, pytest.warns(DataWarning):
        load(cache, mirrors=[f"{server}/{mirror}/"])
    message = str(info.value)
    assert f"  - mirror {server}/{mirror}/" in message and fault in message
    if mirror in ("truncated", "html"):
        assert f"{server}/{mirror}/{cifar.ARCHIVE}: unreadable" in message  # URL, not temp path
    assert files_in(cache) == []


def test_wrong_content_with_pinned_digests(server, batches, cache, monkeypatch):
    monkeypatch.setitem(EXPECTED_DIGESTS, "cifar10", digests_of(expected_arrays(batches)))
    with pytest.raises(DataError, match=f"mirror {server}/other/: SHA-256 mismatch for x_train"), \
            pytest.warns(DataWarning):
        load(cache, mirrors=[f"{server}/other/"])
    assert files_in(cache) == []


def test_bad_mirrors_then_good_one(server, batches, cache):
    bases = [f"{server}/empty/", f"{server}/truncated/", f"{server}/html/", f"{server}/good/"]
    with pytest.warns(DataWarning) as record:
        dataset = load(cache, mirrors=bases)
    assert dataset.source == f"mirror {server}/good/"
    assert len([w for w in record if w.category is DataWarning]) == 2  # the 404 is silent
    assert_loaded(load(cache), batches)


def test_all_sources_fail_lists_each(server, cache):
    with pytest.raises(DataError) as info:
        load(cache, mirrors=[f"{server}/empty/"])
    lines = str(info.value).splitlines()
    assert lines[0] == "could not load cifar10 from any source:"
    assert lines[1] == f"  - cache {cache / 'cifar10.npz'}: no cache file"
    assert lines[2].startswith(f"  - mirror {server}/empty/: ") and "HTTP 404" in lines[2]

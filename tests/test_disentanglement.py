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

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

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


# factors_and_codes(1500, seed=1), trained on rows :1000 and tested on rows 1000: (the references'
# _compute_sap(train.T, ..., test.T, ..., continuous_factors=False)); both references agree exactly.
SAP = {"identity": 0.16999999999999998, "noisy": 0.19449999999999995,
       "mixed": 0.09999999999999998, "random": 0.013499999999999988}


@pytest.fixture(scope="module")
def small():
    return factors_and_codes(1500, 1)


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


@pytest.mark.parametrize("case", sorted(SAP))
def test_sap_matches_references(small, case):
    factors, codes = small
    c = codes[case]
    assert D.sap(c[:1000], factors[:1000], test_codes=c[1000:], test_factors=factors[1000:]) == \
        pytest.approx(SAP[case], abs=0.01)


def test_sap_splits_like_the_references(small):
    """Without test arrays the first ceil(fraction * N) rows train: 2/3 of 1500 is the split above."""
    factors, codes = small
    assert D.sap(codes["noisy"], factors, train_fraction=2 / 3) == pytest.approx(SAP["noisy"], abs=1e-12)


class SyntheticGrid:
    """A FactorGrid (the interface of vaelab.data.factors) whose 8-pixel images are a known function
    of 3 factors: 3 pixels the scaled levels, 5 fixed mixtures of them."""

    names = ("a", "b", "c")
    sizes = (4, 5, 6)
    values = tuple(np.arange(s, dtype=np.float64) for s in sizes)
    weights = np.random.default_rng(7).normal(size=(3, 5))

    def sample(self, n, rng):
        return np.stack([rng.integers(0, s, n) for s in self.sizes], axis=1)

    def batch(self, factors):
        scaled = (np.asarray(factors) + 0.5) / np.array(self.sizes)
        return torch.from_numpy(np.concatenate([scaled, scaled @ self.weights], axis=1))

    def index(self, factors):
        return np.ravel_multi_index(np.asarray(factors).T, self.sizes)


MIXING = np.random.default_rng(8).normal(size=(3, 3))


def encoders(seed):
    """The representations the generator scores are checked on: (n, 8) images -> (n, d) codes."""
    rng = np.random.default_rng(seed)
    return {
        "identity": lambda x: np.asarray(x)[:, :3],
        "mixed": lambda x: np.asarray(x)[:, :3] @ MIXING,
        "noisy": lambda x: np.asarray(x)[:, :3] + rng.normal(0, 0.15, size=(len(x), 3)),
        "random": lambda x: rng.normal(size=(len(x), 4)),
        # two latents collapsed (standard deviation 0.01, under the pruning threshold 0.05)
        "half_collapsed": lambda x: np.concatenate([np.asarray(x)[:, :2], 0.01 * rng.normal(size=(len(x), 2))], 1),
    }


# The generator scores on SyntheticGrid with encoders(0): the references drew their own factors
# (numpy RandomState(0)) and used their default sizes, which the tests use too (REFERENCE_SIZES):
# 10,000 training and 5,000 evaluation points of 64-image batches, 10,000 images for the FactorVAE
# variances, pruning threshold 0.05 (disentanglement_lib's unsupervised_study_v1 metric config).
# beta-VAE: disentanglement_lib's compute_beta_vae_sklearn (disent has no beta-VAE score).
# FactorVAE: disentanglement_lib's compute_factor_vae and disent's metric_factor_vae
# (np.random.seed(0)), which gave the same numbers.
BETA_VAE = {"identity": 1.0, "mixed": 0.997, "noisy": 1.0, "random": 0.3274, "half_collapsed": 1.0}
FACTOR_VAE = {"identity": 1.0, "mixed": 0.9896, "noisy": 1.0, "random": 0.333, "half_collapsed": 0.6702}
REFERENCE_SIZES = {"train_points": 10_000, "eval_points": 5_000}


def draw_tolerance(reference, eval_points=REFERENCE_SIZES["eval_points"]):
    """How far vaelab's score may sit from a reference's when each drew its own samples: two standard
    errors of the difference of two independent accuracies over `eval_points` (about 0.019 at chance
    over 3 factors, 0.004 at 0.99), and never under the issue's 0.01. A score the representation
    fixes (1.0) has no sampling error: 0.01."""
    return max(0.01, 2 * math.sqrt(2 * reference * (1 - reference) / eval_points))


def _torch_encoder(case):
    numpy_encode = encoders(0)[case]
    return lambda images: torch.from_numpy(numpy_encode(images.numpy()))


@pytest.mark.parametrize("case", sorted(BETA_VAE))
def test_beta_vae_score_matches_disentanglement_lib(case):
    score = D.beta_vae_score(_torch_encoder(case), SyntheticGrid(), seed=0, **REFERENCE_SIZES)
    assert score == pytest.approx(BETA_VAE[case], abs=draw_tolerance(BETA_VAE[case]))


@pytest.mark.parametrize("case", sorted(FACTOR_VAE))
def test_factor_vae_score_matches_references(case):
    score = D.factor_vae_score(_torch_encoder(case), SyntheticGrid(), seed=0, variance_samples=10_000,
                               **REFERENCE_SIZES)
    assert score == pytest.approx(FACTOR_VAE[case], abs=draw_tolerance(FACTOR_VAE[case]))


@pytest.mark.parametrize("score", [D.beta_vae_score, D.factor_vae_score])
def test_a_code_that_ignores_the_images_scores_chance(score):
    """A random encoder's prediction is independent of the true factor, so its expected accuracy is
    exactly 1/3 over 3 uniformly drawn factors: a check that needs no reference's draw."""
    accuracy = score(_torch_encoder("random"), SyntheticGrid(), seed=1, **REFERENCE_SIZES)
    eval_points = REFERENCE_SIZES["eval_points"]
    assert accuracy == pytest.approx(1 / 3, abs=3 * math.sqrt(2 / 9 / eval_points))


def test_factor_vae_score_is_zero_when_every_latent_is_pruned():
    assert D.factor_vae_score(lambda x: 0.001 * x[:, :3], SyntheticGrid(), seed=0, train_points=10,
                              eval_points=10, variance_samples=100) == 0.0


def test_factor_vae_accuracy_is_the_majority_vote():
    train = np.array([[5, 0, 1], [1, 4, 3]])  # latent 0 and 1 name factors 0 and 1; latent 2 names 1
    evals = np.array([[2, 1, 1], [0, 3, 4]])
    assert D.factor_vae_accuracy(train, evals) == pytest.approx((2 + 3 + 4) / 11)


def test_score_model_gives_every_score_with_its_sizes_and_seed():
    grid = SyntheticGrid()
    scores = D.score_model(_torch_encoder("noisy"), grid, samples=400, seed=5)
    assert scores["seed"] == 5 and scores["factors"] == ["a", "b", "c"] and scores["latent_dims"] == 3
    for name in ("mig", "sap", "total_correlation", "beta_vae", "factor_vae"):
        assert 0 <= scores[name]["score"] <= 1.5 and scores[name]["seed"] == 5, name
    assert scores["mig"]["samples"] == 400 and scores["sap"]["test_samples"] == 200
    assert scores["dci"]["train_samples"] == 400 and {"disentanglement", "completeness", "informativeness"} <= set(scores["dci"])
    assert scores["beta_vae"]["train_points"] == 20 and scores["factor_vae"]["variance_samples"] == 400
    assert np.asarray(scores["mutual_information"]["matrix"]).shape == (3, 3)
    assert scores["mig"]["score"] > 0.3  # each factor in its own latent, with noise
    json.dumps(scores)  # JSON-ready as it is
    again = D.score_model(_torch_encoder("noisy"), grid, samples=400, seed=5)
    assert again["mig"] == {**scores["mig"], "seconds": again["mig"]["seconds"]}


def test_missing_scikit_learn_is_one_line_naming_the_extra():
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "from vaelab import disentanglement as D\n"
            "import numpy as np\n"
            "try:\n    D.dci(np.random.default_rng(0).normal(size=(20, 2)), np.arange(20)[:, None] % 2)\n"
            "except D.MissingSklearn as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == 'DCI, SAP and the beta-VAE score need scikit-learn, which this install lacks: pip install "scikit-learn>=1.4"'


# factors_and_codes(1500, seed=1), trained on rows :1000, tested on rows 1000:; disent 0.8.0's
# _compute_dci (sklearn boost mode). The references leave the trees' random_state unset, so they
# vary between runs by a few thousandths: disentanglement_lib's _compute_dci on the same arrays
# gave (disentanglement, completeness, informativeness_test) noisy 0.5333, 0.5376, 0.5915;
# mixed 0.2555, 0.2849, 0.788; random 0.0027, 0.0024, 0.187; identity as disent's.
DCI = {"identity": (0.9999999994302233, 0.9999999993455994, 1.0),
       "noisy": (0.5325102981915534, 0.5368492885483647, 0.592),
       "mixed": (0.2565528449479, 0.28503744059904146, 0.7825000000000001),
       "random": (0.0037319343631160833, 0.003293930198025597, 0.182)}


@pytest.mark.parametrize("case", sorted(DCI))
def test_dci_matches_references(small, case):
    factors, codes = small
    c = codes[case]
    got = D.dci(c[:1000], factors[:1000], test_codes=c[1000:], test_factors=factors[1000:], threads=2)
    want = dict(zip(("disentanglement", "completeness", "informativeness"), DCI[case]))
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=0.01), key


def test_dci_from_importance_reads_the_matrix():
    """One latent per factor: 1 and 1; every latent equally important for every factor: 0 and 0."""
    assert D.dci_from_importance(np.eye(3)) == pytest.approx((1.0, 1.0), abs=1e-9)
    assert D.dci_from_importance(np.ones((4, 3))) == pytest.approx((0.0, 0.0), abs=1e-9)
    # two latents sharing one factor: each latent disentangled, the factor not complete
    d, c = D.dci_from_importance(np.array([[0.5, 0.0], [0.5, 0.0], [0.0, 1.0]]))
    assert d == pytest.approx(1.0, abs=1e-9) and c == pytest.approx(0.5 * (1 - np.log(2) / np.log(3)) + 0.5, abs=1e-9)

"""Disentanglement metrics on representations whose answer is known (after disentanglement_lib's metric tests)."""
import numpy as np
import pytest

from vaekit.data import shapes
from vaekit.disentangle import BetaVAEResult, MIGResult, beta_vae_score, mig
from vaekit.errors import VaekitError

SIZES = np.array([3, 6, 10, 8, 4])  # synthetic discrete factors, each with at most n_bins values
PERMUTATION = [3, 0, 4, 1, 2]


def sample_synthetic(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, SIZES, (n, len(SIZES))).astype(np.float64)


@pytest.fixture(scope="module")
def factors() -> np.ndarray:
    return sample_synthetic(5000, np.random.default_rng(0))


def permuted_monotone(factors: np.ndarray) -> np.ndarray:
    return 3 * np.exp(factors[:, PERMUTATION] / 4) - 1


def test_mig_perfect_representation(factors):
    result = mig(factors, factors)
    assert isinstance(result, MIGResult)
    assert result.score > 0.9
    assert result.per_factor.shape == (5,) and result.mutual_info.shape == (5, 5)
    np.testing.assert_allclose(result.factor_entropy, np.log(SIZES), rtol=0.02)  # near-uniform factors
    assert mig(permuted_monotone(factors), factors).score > 0.9


def test_mig_constant_and_noise_codes(factors):
    assert mig(np.ones_like(factors), factors).score < 0.05
    noise = np.random.default_rng(1).normal(size=factors.shape)
    assert mig(noise, factors).score < 0.05


def test_mig_entangled_codes_score_lower(factors):
    entangled = factors + np.roll(factors, -1, axis=1)  # code j = factor j + factor j+1
    perfect = mig(factors, factors).score
    assert mig(entangled, factors).score < perfect - 0.5


def test_mig_duplicated_code_has_no_gap(factors):
    # Two codes carry factor 0 equally well: no single code owns it, so its gap is 0.
    codes = np.concatenate([factors, factors[:, :1]], axis=1)
    result = mig(codes, factors)
    assert result.per_factor[0] < 0.01 and (result.per_factor[1:] > 0.9).all()


def test_mig_on_the_shapes_grid_needs_enough_bins():
    factors = shapes.sample_factors(5000, np.random.default_rng(0))
    # 40 orientations and 32 positions do not fit 20 bins, capping a perfect code near 0.89.
    assert 0.85 < mig(factors, factors).score < 0.92
    assert mig(factors, factors, n_bins=40).score > 0.95


def test_mig_rejects_bad_input(factors):
    with pytest.raises(VaekitError, match="rows"):
        mig(factors[:10], factors[:11])
    with pytest.raises(VaekitError, match="at least 2"):
        mig(factors[:, :1], factors)
    constant_factor = factors.copy()
    constant_factor[:, 2] = 1.0
    with pytest.raises(VaekitError, match="single value"):
        mig(factors, constant_factor)


def score(represent, sample=sample_synthetic, **kwargs) -> BetaVAEResult:
    settings = dict(batch_size=32, n_train=500, n_eval=300, seed=0) | kwargs
    return beta_vae_score(represent, sample, len(SIZES), **settings)


def test_beta_vae_perfect_representation():
    result = score(lambda f: f)
    assert result.train_accuracy > 0.95 and result.eval_accuracy > 0.95
    assert result.score == result.eval_accuracy
    assert score(permuted_monotone).eval_accuracy > 0.95


def test_beta_vae_constant_and_noise_near_chance():
    assert score(lambda f: np.zeros((len(f), 3))).eval_accuracy < 0.4  # chance is 1/5
    noise = np.random.default_rng(1)
    assert score(lambda f: noise.normal(size=(len(f), 5))).eval_accuracy < 0.4


def test_beta_vae_is_deterministic_by_seed():
    assert score(lambda f: f + np.sin(f).sum(1, keepdims=True)) == score(lambda f: f + np.sin(f).sum(1, keepdims=True))


def test_beta_vae_on_rendered_shapes():
    # A hand-made representation measured from images: area and centre of mass see scale and x, y,
    # but not orientation, so the score lands between chance and perfect.
    def measure(factors: np.ndarray) -> np.ndarray:
        images = shapes.render(factors, 32)
        return np.concatenate([shapes.area(images)[:, None] / 100, 10 * shapes.centre_of_mass(images)], axis=1)

    result = beta_vae_score(measure, shapes.sample_factors, 5, batch_size=32, n_train=300, n_eval=200)
    assert 0.45 < result.eval_accuracy < 0.95
    assert beta_vae_score(lambda f: f, shapes.sample_factors, 5, batch_size=32, n_train=300, n_eval=200).score > 0.95


def test_beta_vae_checks_the_callables():
    with pytest.raises(VaekitError, match="sample_factors"):
        beta_vae_score(lambda f: f, lambda n, rng: np.zeros((n, 2)), 5, n_train=10, n_eval=5)
    with pytest.raises(VaekitError, match="represent"):
        beta_vae_score(lambda f: f[:1], sample_synthetic, 5, n_train=10, n_eval=5)

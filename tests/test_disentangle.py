"""Disentanglement metrics on representations whose answer is known (after disentanglement_lib's metric tests)."""
import numpy as np
import pytest

from vaekit.data import shapes
from vaekit.disentangle import BetaVAEResult, MIGResult, beta_vae_score, mig, mig_posterior
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


# mig_posterior on a full grid of two factors (6 x 4 values, each pair 100 times), so the factors are independent in
# the sample itself. Code 0 reads factor 0, code 1 factor 1, both with a narrow posterior; code 2 is all but inactive
# (its posterior is N(m, 1), the prior's width) but its mean drifts a little with both factors.
GRID = np.array([(a, b) for a in range(6) for b in range(4)] * 100, dtype=np.float64)  # (2400, 2)
NARROW, DRIFT = 0.3, 0.05


def grid_posteriors() -> tuple[np.ndarray, np.ndarray]:
    loc = np.stack([GRID[:, 0], GRID[:, 1], DRIFT * (GRID[:, 0] + GRID[:, 1])], axis=1)
    scale = np.broadcast_to([NARROW, NARROW, 1.0], loc.shape).copy()
    return loc, scale


def mixture_entropy(means: np.ndarray, stds: np.ndarray) -> float:
    """H of the equal-weight mixture of the items' N(mean, std^2), by quadrature on a fine grid (nats)."""
    pairs, counts = np.unique(np.stack([means, stds], axis=1), axis=0, return_counts=True)
    centres, widths = pairs[:, 0], pairs[:, 1]
    z = np.linspace((centres - 12 * widths).min(), (centres + 12 * widths).max(), 40_001)
    density = (np.exp(-0.5 * ((z[:, None] - centres[None]) / widths[None]) ** 2) / (widths[None] * np.sqrt(2 * np.pi))
               ) @ (counts / counts.sum())
    integrand = np.where(density > 0, -density * np.log(np.where(density > 0, density, 1.0)), 0.0)
    return float((integrand[1:] + integrand[:-1]).sum() / 2 * (z[1] - z[0]))  # the trapezoid rule


def grid_mutual_info(loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """I(code j; factor k) of the grid's posteriors, (D, 2), from the mixtures' entropies by quadrature."""
    truth = np.zeros((loc.shape[1], 2))
    for j in range(loc.shape[1]):
        h = mixture_entropy(loc[:, j], scale[:, j])
        for k in range(2):
            cells = [GRID[:, k] == v for v in np.unique(GRID[:, k])]  # the factor's values are equally frequent
            truth[j, k] = h - np.mean([mixture_entropy(loc[c, j], scale[c, j]) for c in cells])
    return truth


def test_mig_posterior_matches_the_mutual_information_by_quadrature():
    loc, scale = grid_posteriors()
    truth = grid_mutual_info(loc, scale)
    result = mig_posterior(loc, scale, GRID)
    assert result.mutual_info.shape == result.mutual_info_se.shape == (3, 2)
    # Every item's component is in its own mixtures, so the mean of the per-item terms is an unbiased estimate of
    # the N items' mixtures' mutual information, which is what the quadrature computes; within 4 standard errors.
    assert (np.abs(result.mutual_info - truth) < 4 * result.mutual_info_se + 1e-9).all()
    # Code 0 holds most of factor 0 and nothing of factor 1, whose mixture it is exactly (and vice versa).
    assert truth[0, 0] > 0.8 * np.log(6) and truth[1, 1] > 0.8 * np.log(4)
    assert result.mutual_info[0, 1] == pytest.approx(0, abs=1e-9) and result.mutual_info[1, 0] == pytest.approx(0,
                                                                                                             abs=1e-9)
    np.testing.assert_allclose(result.factor_entropy, np.log([6, 4]))
    # The gap per factor: code 0 (1) against the drifting code 2, each within 4 standard errors.
    gap = (truth[[0, 1], [0, 1]] - truth[2]) / np.log([6, 4])
    se = (result.mutual_info_se[[0, 1], [0, 1]] + result.mutual_info_se[2]) / np.log([6, 4])
    assert (np.abs(result.per_factor - gap) < 4 * se).all()


def test_mig_posterior_with_posterior_widths_that_differ_from_item_to_item():
    # Widths that depend on the other factor: each draw must be scored under every component's own width (scored
    # under the draw's own width instead, the estimates miss the quadrature by 3 to 10^15 standard errors).
    loc, scale = grid_posteriors()
    scale[:, 0] = 0.2 + 0.15 * GRID[:, 1]
    scale[:, 1] = 0.5 - 0.05 * GRID[:, 0]
    truth = grid_mutual_info(loc, scale)
    result = mig_posterior(loc, scale, GRID)
    assert (np.abs(result.mutual_info - truth) < 4 * result.mutual_info_se + 1e-9).all()
    assert truth[0, 1] > 0.01  # code 0's spread now tells something of factor 1, and the estimate sees it


def test_an_inactive_code_whose_mean_drifts_costs_binned_mig_but_not_mig_posterior():
    loc, scale = grid_posteriors()
    truth = grid_mutual_info(loc, scale)
    assert truth[2].max() < 0.01  # the drifting code's posteriors have the prior's width: it carries almost nothing
    posterior, binned = mig_posterior(loc, scale, GRID), mig(loc, GRID)
    assert (posterior.per_factor > 0.8).all()
    # Its binned means are a function of both factors, so the binned estimate credits it with much of each.
    assert (binned.mutual_info[2] > 50 * truth[2]).all()
    assert (binned.per_factor < posterior.per_factor - 0.05).all()
    assert binned.per_factor[0] < posterior.per_factor[0] - 0.2  # the code drifts over 6 values of factor 0


def test_mig_posterior_on_the_shapes_recipe_gives_inactive_codes_no_information(shapes_recipe_run):
    from vaekit import metrics

    model, dataset = shapes_recipe_run
    x = dataset.x_test
    loc, scale = (t.numpy() for t in metrics.posterior_loc_scale(model, x))
    factors = np.stack([dataset.attributes_test[name].numpy() for name in shapes.FACTOR_NAMES], axis=1)
    result = mig_posterior(loc, scale, factors)
    kl = metrics.kl_per_dim(model, x).numpy()
    inactive, active = kl < 0.01, kl > 1.0
    assert inactive.any() and active.any()
    # A code carries no more information about a factor than its KL: I(z_j; v) <= I(z_j; x) <= E KL(q(z_j|x) || p).
    bound = kl[:, None] + 4 * result.mutual_info_se
    assert (result.mutual_info < bound).all()
    assert (result.mutual_info[inactive] < 0.01).all()
    assert result.mutual_info[active].max() > 0.5
    assert 0 <= result.score <= 1


def test_mig_posterior_rejects_bad_input():
    loc, scale = grid_posteriors()
    with pytest.raises(VaekitError, match="same shape"):
        mig_posterior(loc, scale[:, :2], GRID)
    bad = scale.copy()
    bad[0, 0] = 0.0
    with pytest.raises(VaekitError, match="positive"):
        mig_posterior(loc, bad, GRID)
    with pytest.raises(VaekitError, match="at least 2"):
        mig_posterior(loc[:, :1], scale[:, :1], GRID)
    with pytest.raises(VaekitError, match="rows"):
        mig_posterior(loc[:10], scale[:10], GRID[:11])
    with pytest.raises(VaekitError, match="single value"):
        mig_posterior(loc, scale, np.c_[GRID[:, :1], np.ones(len(GRID))])


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


def test_factors_with_nan_are_refused():
    """NaN factor values were one more class to np.unique, and MIG came out as a number."""
    rng = np.random.default_rng(0)
    codes, factors = rng.normal(size=(100, 3)), rng.integers(0, 3, size=(100, 2)).astype(float)
    factors[:50, 0] = np.nan
    for measure in (mig, lambda c, f: mig_posterior(c, np.ones_like(c), f)):
        with pytest.raises(VaekitError, match="factors contain NaN or infinity"):
            measure(codes, factors)


def test_mig_bins_each_code_over_its_range_as_disentanglement_lib_does():
    """Two equal-width bins over a code of four equally frequent values hold two values each (the largest in the top
    bin, not a bin of its own): the code holds half the factor's entropy, and the constant code none."""
    factor = np.repeat(np.arange(4), 25)
    codes = np.column_stack([factor.astype(float), np.zeros(100)])
    assert mig(codes, factor[:, None], n_bins=2).score == pytest.approx(0.5)

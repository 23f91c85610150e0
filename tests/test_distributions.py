"""Likelihoods and latent distributions against torch.distributions and closed forms."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from vaekit.distributions import (BernoulliLikelihood, GaussianLikelihood, PointMass, build_likelihood,
                                  diagonal_gaussian, standard_normal)
from vaekit.errors import VaekitError


def bernoulli(shape=(1, 4, 4)):
    return BernoulliLikelihood(shape)


def gaussian(shape=(6,), std=None):
    return GaussianLikelihood(shape, GaussianLikelihood.Settings(std=std))


def test_bernoulli_log_prob_matches_torch_and_formula():
    logits = torch.randn(5, 1, 4, 4) * 3
    x = torch.bernoulli(torch.rand(5, 1, 4, 4))
    got = bernoulli()(logits).log_prob(x)
    expected = Bernoulli(logits=logits).log_prob(x).sum((1, 2, 3))
    manual = (x * torch.log(torch.sigmoid(logits)) + (1 - x) * torch.log(1 - torch.sigmoid(logits))).sum((1, 2, 3))
    assert got.shape == (5,)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got, manual, rtol=1e-4, atol=1e-4)


def test_bernoulli_is_stable_for_extreme_logits():
    logits = torch.tensor([[200.0, -200.0]])
    log_prob = bernoulli((2,))(logits).log_prob(torch.tensor([[0.0, 1.0]]))
    assert torch.isfinite(log_prob).all()
    assert log_prob.item() == pytest.approx(-400.0)


def test_gaussian_fixed_and_learned_match_torch():
    loc = torch.randn(3, 6)
    x = torch.randn(3, 6)
    fixed = gaussian(std=0.5)(loc).log_prob(x)
    torch.testing.assert_close(fixed, Normal(loc, 0.5).log_prob(x).sum(-1))
    raw_scale = torch.randn(3, 6)
    learned = gaussian()(torch.cat([loc, raw_scale], dim=1)).log_prob(x)
    scale = torch.nn.functional.softplus(raw_scale) + 1e-3
    torch.testing.assert_close(learned, Normal(loc, scale).log_prob(x).sum(-1))


def test_gaussian_params_split_per_channel_for_images():
    # (B, 2*C, H, W): first C channels are means, next C the raw scales.
    params = torch.zeros(2, 6, 2, 2)
    params[:, :3] = 1.0
    dist = gaussian((3, 2, 2))(params)
    assert dist.event_shape == (3, 2, 2)
    assert torch.all(dist.mean == 1.0)


def test_bernoulli_support_check_names_the_fix():
    with pytest.raises(VaekitError, match="--likelihood gaussian"):
        bernoulli((2,)).check_support(torch.tensor([0.0, 2.0]))
    bernoulli((3,)).check_support(torch.tensor([0.0, 0.5, 1.0]))


def test_unknown_likelihood():
    with pytest.raises(VaekitError, match="bernoulli"):
        build_likelihood("poisson", (3,))


def test_analytic_kl_matches_monte_carlo():
    torch.manual_seed(1)
    loc, logvar = torch.randn(4, 3), torch.randn(4, 3) * 0.5
    qz = diagonal_gaussian(loc, logvar)
    pz = standard_normal(3, loc)
    analytic = kl_divergence(qz, pz)
    z = qz.sample((200_000,))
    monte_carlo = (qz.log_prob(z) - pz.log_prob(z)).mean(0)
    closed = 0.5 * (loc**2 + logvar.exp() - 1 - logvar).sum(-1)  # Kingma & Welling 2014, appendix B
    torch.testing.assert_close(analytic, closed, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(monte_carlo, analytic, rtol=0.03, atol=0.02)


def test_logvar_is_clamped_so_scale_stays_finite():
    qz = diagonal_gaussian(torch.zeros(1, 2), torch.tensor([[1e4, -1e4]]))
    assert torch.isfinite(qz.stddev).all() and (qz.stddev > 0).all()


def test_point_mass_is_deterministic():
    loc = torch.randn(3, 4, requires_grad=True)
    q = PointMass(loc)
    z = q.rsample((5,))
    assert z.shape == (5, 3, 4)
    assert torch.equal(z[2], loc.detach())
    z.sum().backward()
    assert loc.grad is not None
    assert torch.equal(q.log_prob(loc.detach()), torch.zeros(3))
    assert q.batch_shape == (3,) and q.event_shape == (4,)


@pytest.mark.parametrize("likelihood,channels", [(bernoulli((1, 5, 5)), 1), (gaussian((1, 5, 5), std=0.3), 1),
                                                 (gaussian((1, 5, 5)), 2)], ids=["bernoulli", "gaussian-fixed",
                                                                                 "gaussian-learned"])
def test_training_nll_equals_minus_log_prob(likelihood, channels):
    # The loss's direct formula against the distribution it stands for, on image-shaped outputs.
    params = torch.randn(4, channels, 5, 5) * 4
    x = torch.rand(4, 1, 5, 5).round() if isinstance(likelihood, BernoulliLikelihood) else torch.randn(4, 1, 5, 5)
    nll = likelihood.nll(params, x)
    assert nll.shape == (4,)
    if isinstance(likelihood, BernoulliLikelihood):
        expected = -Bernoulli(logits=params).log_prob(x).sum((1, 2, 3))
    elif likelihood.std is not None:
        expected = -Normal(params, likelihood.std).log_prob(x).sum((1, 2, 3))
    else:
        expected = -Normal(params[:, :1], F.softplus(params[:, 1:]) + 1e-3).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(nll, expected)  # against torch.distributions, not against vaekit's own classes


def test_vae_kl_equals_kl_divergence_to_the_prior():
    from vaekit.config import ModelConfig
    from vaekit.models import build_model

    model = build_model(ModelConfig(latent_dim=3, network="mlp", hidden_dims=(8,), likelihood="bernoulli",
                                    data_shape=(6,)))
    loc, logvar = torch.randn(7, 3) * 2, torch.randn(7, 3) * 3
    qz = diagonal_gaussian(loc, logvar)
    got = model.kl(qz, qz.rsample())
    torch.testing.assert_close(got, kl_divergence(qz, model.prior()))
    torch.testing.assert_close(got, 0.5 * (loc**2 + logvar.exp() - 1 - logvar).sum(-1))
    # Past the log-variance clamp: the same value as kl_divergence, and no gradient through the clamped entries.
    logvar = torch.tensor([[30.0, -30.0, 0.5]], requires_grad=True)
    qz = diagonal_gaussian(torch.zeros(1, 3), logvar)
    got = model.kl(qz, qz.rsample())
    torch.testing.assert_close(got, kl_divergence(qz, model.prior()))
    got.sum().backward()
    assert logvar.grad[0, 0] == 0 and logvar.grad[0, 1] == 0 and logvar.grad[0, 2] != 0


def test_vae_subclass_with_another_prior_gets_the_generic_kl():
    from vaekit.config import ModelConfig
    from vaekit.models import VAE

    class WidePrior(VAE):
        def prior(self):
            return Independent(Normal(torch.zeros(3), torch.full((3,), 2.0)), 1)

    model = WidePrior(ModelConfig(latent_dim=3, network="mlp", hidden_dims=(8,), likelihood="bernoulli",
                                  data_shape=(6,)))
    qz = diagonal_gaussian(torch.randn(5, 3), torch.randn(5, 3))
    torch.testing.assert_close(model.kl(qz, qz.rsample()), kl_divergence(qz, model.prior()))


# ---- the continuous Bernoulli and the discretised logistic -----------------------------------------------------

LOGITS = [-30.0, -8.0, -1.0, -1e-2, -1e-3, -1e-6, 0.0, 1e-7, 1e-4, 5e-3, 0.2, 3.0, 12.0, 40.0]


def test_continuous_bernoulli_density_integrates_to_one_including_near_one_half():
    likelihood = build_likelihood("continuous_bernoulli", (1,))
    x = torch.linspace(0, 1, 400_001, dtype=torch.float64)[:, None]  # trapezoid on a fine grid
    for logit in LOGITS:
        params = torch.full((1,), logit, dtype=torch.float64)
        density = likelihood.log_prob_elements(params, x).exp()[:, 0]
        total = torch.trapezoid(density, x[:, 0])
        assert float(total) == pytest.approx(1.0, abs=2e-6), logit


def test_continuous_bernoulli_matches_torch_and_its_normaliser_is_smooth_at_one_half():
    from torch.distributions import ContinuousBernoulli

    likelihood = build_likelihood("continuous_bernoulli", (len(LOGITS),))
    logits = torch.tensor(LOGITS, dtype=torch.float64)[None]
    x = torch.rand(1, len(LOGITS), dtype=torch.float64)
    ours = likelihood.log_prob_elements(logits, x)
    moderate = logits.abs() <= 12  # torch clamps its probabilities, which loses accuracy past that
    torch.testing.assert_close(ours[moderate], ContinuousBernoulli(logits=logits).log_prob(x)[moderate],
                               rtol=1e-6, atol=1e-6)
    # float32 near lambda = 1/2 (logit 0): the normaliser's series and exact form meet without a jump.
    near = torch.linspace(-0.05, 0.05, 2001)
    log_c = likelihood.log_prob_elements(near, torch.zeros_like(near)) + torch.nn.functional.softplus(near)
    assert torch.isfinite(log_c).all()
    assert float(log_c.diff().abs().max()) < 1e-5
    exact = torch.log(near.double() / torch.tanh(near.double() / 2)).float()
    keep = near.abs() > 1e-3
    torch.testing.assert_close(log_c[keep], exact[keep], rtol=0, atol=2e-6)
    # the loss's nll is minus the distribution's log_prob
    params, xs = (torch.randn(3, 1, 4, 4) * 3).clamp(-12, 12), torch.rand(3, 1, 4, 4)
    cb = build_likelihood("continuous_bernoulli", (1, 4, 4))
    expected = -ContinuousBernoulli(logits=params).log_prob(xs).sum((1, 2, 3))
    torch.testing.assert_close(cb.nll(params, xs), expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("bits", [8, 5, 1])
def test_discretized_logistic_bin_probabilities_sum_to_one(bits):
    levels = 2**bits - 1
    from vaekit.distributions import DiscretizedLogisticLikelihood

    likelihood = build_likelihood("discretized_logistic", (1,), DiscretizedLogisticLikelihood.Settings(bits=bits))
    grid = (torch.arange(levels + 1, dtype=torch.float64) / levels)[:, None]  # every value x can take
    for loc, log_scale in [(0.5, -3.0), (0.0, -6.9), (1.0, 0.5), (0.37, -5.0), (-2.0, 1.0), (3.0, -1.0)]:
        raw_loc = torch.logit(torch.tensor(min(max(loc, 1e-9), 1 - 1e-9), dtype=torch.float64))
        params = torch.stack([raw_loc, torch.tensor(log_scale, dtype=torch.float64)])
        probabilities = likelihood.log_prob_elements(params, grid).exp()
        assert float(probabilities.sum()) == pytest.approx(1.0, abs=1e-9), (loc, log_scale)
        # each bin against the logistic CDF difference in float64
        s, m = math.exp(log_scale), float(torch.sigmoid(raw_loc))
        cdf = lambda v: 1 / (1 + math.exp(-(v - m) / s))  # noqa: E731
        for k in (0, levels // 2, levels):
            upper = 1.0 if k == levels else cdf((k + 0.5) / levels)
            lower = 0.0 if k == 0 else cdf((k - 0.5) / levels)
            assert float(probabilities[k]) == pytest.approx(upper - lower, rel=1e-6, abs=1e-12)


def test_discretized_logistic_is_finite_and_exact_for_any_scale_in_float32():
    """A bin's log-mass against 200-digit arithmetic, from scales far below a bin's width to scales so large that
    1/s underflows float32 (it returned -inf there, and the loss inf); gradients finite throughout."""
    import mpmath

    from vaekit.distributions import discretized_logistic_log_prob

    levels = 255
    log_scales = [-7.0, -3.0, 0.0, 5.0, 10.0, 20.0, 50.0, 95.0, 120.0, 300.0]
    for x, loc in [(0.5, 0.5), (100 / 255, 0.3), (3 / 255, 0.9)]:
        log_scale = torch.tensor(log_scales, requires_grad=True)
        got = discretized_logistic_log_prob(torch.tensor(loc), log_scale, torch.tensor(x), levels)
        got.sum().backward()
        assert torch.isfinite(got).all() and torch.isfinite(log_scale.grad).all()
        for value, ls in zip(got.tolist(), log_scales):
            with mpmath.workdps(200):  # 1/s down to e^-300: the two CDF values agree to 130 digits
                cdf = lambda v: 1 / (1 + mpmath.exp(-(v - mpmath.mpf(loc)) / mpmath.exp(ls)))  # noqa: E731
                exact = float(mpmath.log(cdf(mpmath.mpf(x) + mpmath.mpf(0.5) / levels)
                                         - cdf(mpmath.mpf(x) - mpmath.mpf(0.5) / levels)))
            assert value == pytest.approx(exact, rel=1e-5, abs=1e-4), (x, loc, ls)


def test_discretized_logistic_mean_is_the_expectation_over_bins():
    likelihood = build_likelihood("discretized_logistic", (1, 2, 2))
    params = torch.randn(3, 2, 2, 2, dtype=torch.float64) * 2
    px = likelihood(params)
    grid = torch.arange(256, dtype=torch.float64) / 255
    probabilities = likelihood.log_prob_elements(params[None], grid.view(256, 1, 1, 1, 1)).exp()  # (256, 3, 1, 2, 2)
    torch.testing.assert_close(px.mean, (grid.view(256, 1, 1, 1, 1) * probabilities).sum(0))


def test_discretized_logistic_refuses_data_off_its_grid():
    likelihood = build_likelihood("discretized_logistic", (3,))
    likelihood.check_support(torch.tensor([0.0, 128 / 255, 1.0]))
    with pytest.raises(VaekitError, match="bits"):
        likelihood.check_support(torch.tensor([0.0, 0.5001, 1.0]))

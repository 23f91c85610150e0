"""The aggregate posterior's estimates (minibatch stratified sampling) against closed forms."""
from __future__ import annotations

import math

import pytest
import torch

from vaekit.aggregate import decomposition, log_densities, stratified_log_weights
from vaekit.errors import VaekitError


def gaussian_tc(covariance: torch.Tensor) -> float:
    """TC of N(0, S) = KL(N(0, S) || prod_d N(0, S_dd)) = (sum_d log S_dd - log det S) / 2."""
    return 0.5 * float(covariance.diagonal().log().sum() - torch.logdet(covariance))


@pytest.mark.parametrize("batch,size", [(2, 2), (5, 5), (7, 100), (64, 60_000)])
def test_the_weights_of_each_row_sum_to_one(batch, size):
    weights = stratified_log_weights(batch, size).exp()
    assert torch.allclose(weights.sum(1), torch.ones(batch, dtype=torch.float64))
    assert torch.allclose(weights.diagonal(), torch.full((batch,), 1 / size, dtype=torch.float64))


def test_the_estimate_of_q_z_is_unbiased_over_batches():
    """Averaged over random batches (item i and B - 1 others drawn without replacement), exp(log q(z_i)) is the
    mixture density (1/N) sum_n q(z_i | x_n)."""
    generator = torch.Generator().manual_seed(0)
    items, batch, dims = 30, 6, 2
    loc, scale = torch.randn(items, dims, generator=generator), torch.rand(items, dims, generator=generator) + 0.3
    z0 = loc[0] + scale[0] * torch.randn(dims, generator=generator)
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(items)),
        torch.distributions.Independent(torch.distributions.Normal(loc.double(), scale.double()), 1))
    joint_sum, draws = torch.zeros((), dtype=torch.float64), 20_000
    for _ in range(draws):
        others = 1 + torch.randperm(items - 1, generator=generator)[: batch - 1]
        index = torch.cat([torch.zeros(1, dtype=torch.long), others])
        z = torch.cat([z0[None], loc[others]])  # only row 0's estimate is read
        joint, _ = log_densities(z, loc[index], scale[index], dataset_size=items)
        joint_sum += joint[0].exp()
    assert float(joint_sum / draws) == pytest.approx(float(mixture.log_prob(z0.double()).exp()), rel=0.02)


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_total_correlation_matches_the_gaussian_closed_form(rho):
    """Posteriors N(m, s^2 I) around means m drawn from N(0, S): the aggregate posterior is N(0, S + s^2 I), whose
    total correlation is known. Estimated from batches of 1,000 of 20,000 items (a minibatch estimate of a log is
    biased low, by about 0.02 nats here and more for narrower posteriors or smaller batches): near zero when S is
    diagonal, positive and at the closed form when it is not."""
    generator = torch.Generator().manual_seed(1)
    dims, items, batch, s = 3, 20_000, 1000, 0.5
    covariance = torch.full((dims, dims), rho) + (1 - rho) * torch.eye(dims)
    means = torch.randn(items, dims, generator=generator) @ torch.linalg.cholesky(covariance).T
    scale = torch.full((items, dims), s)
    estimates = []
    for _ in range(8):
        index = torch.randperm(items, generator=generator)[:batch]
        loc = means[index]
        z = loc + s * torch.randn(batch, dims, generator=generator)
        estimates.append(decomposition(z, loc, scale[index], items).total_correlation.mean())
    estimate = float(torch.stack(estimates).mean())
    expected = gaussian_tc(covariance + s**2 * torch.eye(dims))
    assert estimate == pytest.approx(expected, abs=0.05)
    if rho == 0:
        assert abs(estimate) < 0.05
    else:
        assert estimate > 0.1


def test_with_one_dimension_the_aggregate_is_its_own_marginal():
    """log q(z) and the sum of the log marginals are one density when z has one dimension: the marginals are
    weighed as the joint is (a plain 1/B average there passed every other test here: with wide posteriors and large
    batches it moves the total correlation by less than its tolerance)."""
    generator = torch.Generator().manual_seed(3)
    for batch, size, width in ((256, 60_000, 0.05), (7, 100, 1.0), (5, 5, 0.3)):
        loc = torch.randn(batch, 1, generator=generator)
        scale = width * (torch.rand(batch, 1, generator=generator) + 0.5)
        z = loc + scale * torch.randn(batch, 1, generator=generator)
        joint, marginals = log_densities(z, loc, scale, dataset_size=size)
        torch.testing.assert_close(marginals, joint, rtol=0, atol=1e-12)


def test_the_three_terms_add_up_to_the_kl_at_the_draw():
    generator = torch.Generator().manual_seed(2)
    loc, scale = torch.randn(32, 4, generator=generator), torch.rand(32, 4, generator=generator) + 0.1
    z = loc + scale * torch.randn(32, 4, generator=generator)
    parts = decomposition(z, loc, scale, dataset_size=1000)
    qzx = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
    pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    total = parts.mutual_info + parts.total_correlation + parts.dimension_kl
    assert torch.allclose(total, qzx - pz, atol=1e-5)
    assert all(part.shape == (32,) and part.dtype == torch.float32 for part in
               (parts.mutual_info, parts.total_correlation, parts.dimension_kl))


def test_mistakes_are_errors():
    with pytest.raises(VaekitError, match="at least 2 items"):
        stratified_log_weights(1, 10)
    with pytest.raises(VaekitError, match="data set size must be at least the batch size"):
        stratified_log_weights(10, 5)
    with pytest.raises(VaekitError, match="must be"):
        log_densities(torch.zeros(4, 2), torch.zeros(4, 3), torch.ones(4, 3), 10)
    assert math.isfinite(float(stratified_log_weights(3, 3).exp().sum()))

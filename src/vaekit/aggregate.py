"""The aggregate posterior q(z) = E_data[q(z|x)] of diagonal Gaussian posteriors, estimated on a minibatch: log q(z),
the log of the product of its marginals, and the KL decomposition's terms (Chen et al. 2018, "Isolating Sources of
Disentanglement in VAEs", section 4.1 and appendix C.1)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import VaekitError

LOG_2PI = math.log(2 * math.pi)
ROWS = 256  # draws per block: a block holds ROWS x B x D float64 numbers


@dataclass(frozen=True)
class Decomposition:
    """Per item (B,), in nats; their sum is the KL(q(z|x) || p(z)) estimate at the draw z:
    index-code mutual information + total correlation + dimension-wise KL (Chen et al. 2018, eq. 2)."""

    mutual_info: torch.Tensor  # log q(z|x) - log q(z)
    total_correlation: torch.Tensor  # log q(z) - sum_d log q(z_d)
    dimension_kl: torch.Tensor  # sum_d log q(z_d) - log p(z)


def stratified_log_weights(batch: int, dataset_size: int, device: torch.device | None = None) -> torch.Tensor:
    """log w_ij (B, B) of minibatch stratified sampling (appendix C.1, with M = B - 1 other items): estimating
    q(z_i) = E_n q(z_i | x_n) over N items from a batch drawn without replacement, item i's own posterior gets 1/N,
    one other item (N - M) / (N M) and the remaining M - 1 items 1/M each (every row sums to 1). A batch holding the
    whole data set (B = N) is the mixture itself: every weight 1/N."""
    if batch < 2:
        raise VaekitError(f"the aggregate posterior needs a batch of at least 2 items, got {batch}")
    if dataset_size < batch:
        raise VaekitError(f"a batch of {batch} items from a data set of {dataset_size}: the data set size must be at "
                          "least the batch size")
    if batch == dataset_size:  # the whole data set is in the batch: the mixture itself, every posterior 1/N
        return torch.full((batch, batch), -math.log(batch), device=device, dtype=torch.float64)
    m = batch - 1
    strata = (dataset_size - m) / (dataset_size * m)
    weights = torch.full((batch, batch), 1.0 / m, device=device, dtype=torch.float64)
    weights.view(-1)[:: batch + 1] = 1.0 / dataset_size  # item i's own posterior (the diagonal)
    weights.view(-1)[1 :: batch + 1] = strata  # one other item, the next, stands for the stratum the batch left out
    weights[m, 0] = strata  # (the last item's next is the first)
    return weights.log()


def log_densities(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, dataset_size: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """For draws z_i ~ q(z|x_i) of a batch (B, D), with the batch's posteriors N(loc_j, scale_j^2): the estimates of
    log q(z_i) and of sum_d log q(z_i,d) under the aggregate posterior of a data set of `dataset_size` items, each
    (B,), in float64 (minibatch stratified sampling; log-sum-exp throughout)."""
    if z.ndim != 2 or z.shape != loc.shape or loc.shape != scale.shape:
        raise VaekitError(f"z, loc and scale must be (B, D) alike, got {tuple(z.shape)}, {tuple(loc.shape)}, "
                          f"{tuple(scale.shape)}")
    z, loc, scale = z.double(), loc.double(), scale.double()
    log_w = stratified_log_weights(z.shape[0], dataset_size, z.device)
    joints, marginals = [], []
    for start in range(0, z.shape[0], ROWS):  # rows of draws at a time: (rows, B, D) rather than (B, B, D) at once
        # (a saving without gradients, as in evaluation; under autograd each block is kept for the backward pass)
        rows = slice(start, start + ROWS)
        # log N(z_i,d; loc_j,d, scale_j,d^2), (rows, B, D): row i a draw, column j a posterior
        standard = (z[rows, None, :] - loc[None, :, :]) / scale[None, :, :]
        log_q = -0.5 * (standard.square() + LOG_2PI) - scale.log()[None, :, :]
        joints.append(torch.logsumexp(log_w[rows] + log_q.sum(-1), dim=1))  # log q(z_i)
        marginals.append(torch.logsumexp(log_w[rows, :, None] + log_q, dim=1).sum(-1))  # sum_d log q(z_i,d)
    return torch.cat(joints), torch.cat(marginals)


def decomposition(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, dataset_size: int) -> Decomposition:
    """The KL(q(z|x) || N(0, I)) of each item split into mutual information, total correlation and dimension-wise
    KL, at the draws z (B, D) from the batch's posteriors N(loc, scale^2)."""
    joint, marginals = log_densities(z, loc, scale, dataset_size)
    zd, locd, scaled = z.double(), loc.double(), scale.double()
    log_qzx = (-0.5 * (((zd - locd) / scaled).square() + LOG_2PI) - scaled.log()).sum(-1)
    log_pz = (-0.5 * (zd.square() + LOG_2PI)).sum(-1)
    dtype = z.dtype
    return Decomposition((log_qzx - joint).to(dtype), (joint - marginals).to(dtype), (marginals - log_pz).to(dtype))

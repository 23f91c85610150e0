"""Likelihoods p(x|z) as objects that turn decoder outputs into distributions, and the latent distributions."""
from __future__ import annotations

import math
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Distribution, Independent, Normal, constraints

from .errors import VaekitError

# Log-variance bounds: wide enough never to bind in healthy training, tight enough that exp() cannot overflow.
LOGVAR_MIN, LOGVAR_MAX = -20.0, 10.0
# Smallest learned observation std: keeps the Gaussian log-density finite on constant pixels.
MIN_STD = 1e-3


class Likelihood:
    """Maps decoder outputs (B, param_channels * C, ...) to a distribution with event shape = data shape."""

    name: ClassVar[str]
    param_channels: ClassVar[int] = 1

    def __call__(self, params: torch.Tensor) -> Distribution:
        raise NotImplementedError

    def check_support(self, x: torch.Tensor, what: str = "data") -> None:
        """Raise a VaekitError naming the fix when x lies outside the likelihood's support."""

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per example (B,) from decoder outputs: the training loss's reconstruction term.
        Equal to -self(params).log_prob(x); likelihoods override it with a direct formula."""
        return -self(params).log_prob(x)

    def log_prob_samples(self, px: Distribution, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z_k) for px = self(decoder(z)) with z (K, B, D) flattened sample-major to (K*B,): (K, B).

        This generic version tiles x K times; likelihoods override it to broadcast x instead (same numbers).
        """
        k = px.batch_shape[0] // x.shape[0]
        return px.log_prob(x.expand(k, *x.shape).flatten(0, 1)).view(k, x.shape[0])

    @staticmethod
    def _split(params: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
        # (B, P*C, ...) -> P tensors of (B, C, ...): parameters are stacked along the channel axis.
        return tuple(params.unflatten(1, (parts, -1)).unbind(1))


class BernoulliLikelihood(Likelihood):
    """Bernoulli on logits; log p(x|z) = -BCE-with-logits, also used for grey levels in [0, 1]."""

    name = "bernoulli"

    def __call__(self, params: torch.Tensor) -> Distribution:
        return Independent(Bernoulli(logits=params, validate_args=False), params.dim() - 1)

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # One fused, stable kernel (max(l, 0) - x l + log1p(exp(-|l|))) and one sum, no distribution objects.
        return F.binary_cross_entropy_with_logits(params, x.reshape_as(params), reduction="none").flatten(1).sum(-1)

    def log_prob_samples(self, px: Distribution, x: torch.Tensor) -> torch.Tensor:
        # log p(x|z) = sum_d x_d l_d - softplus(l_d): one batched dot product and one softplus pass, x not tiled.
        batch = x.shape[0]
        logits = px.base_dist.logits.reshape(-1, batch, x[0].numel())  # (K, B, D)
        return torch.einsum("kbd,bd->kb", logits, x.reshape(batch, -1)) - F.softplus(logits).sum(-1)

    def check_support(self, x: torch.Tensor, what: str = "data") -> None:
        low, high = float(x.min()), float(x.max())
        if low < 0 or high > 1:
            raise VaekitError(
                f"the bernoulli likelihood needs {what} in [0, 1], got values in [{low:g}, {high:g}]: "
                "use --likelihood gaussian, or rescale the data to [0, 1]"
            )


class GaussianLikelihood(Likelihood):
    """Diagonal Gaussian: a fixed std, or a learned one per output (softplus, floored at MIN_STD)."""

    name = "gaussian"

    def __init__(self, std: float | None = None) -> None:
        self.std = std
        self.param_channels = 1 if std is not None else 2

    def __call__(self, params: torch.Tensor) -> Distribution:
        if self.std is not None:
            loc, scale = params, torch.full_like(params, self.std)
        else:
            loc, raw_scale = self._split(params, 2)
            scale = F.softplus(raw_scale) + MIN_STD
        return Independent(Normal(loc, scale, validate_args=False), loc.dim() - 1)

    def log_prob_samples(self, px: Distribution, x: torch.Tensor) -> torch.Tensor:
        # x broadcast over the K samples instead of tiled; the log-density of N(loc, scale^2) summed over dims.
        batch, dims = x.shape[0], x[0].numel()
        loc = px.base_dist.loc.reshape(-1, batch, dims)  # (K, B, D)
        if self.std is not None:
            standard = (x.reshape(batch, dims) - loc) / self.std
            log_scale = dims * math.log(self.std)
        else:
            scale = px.base_dist.scale.reshape(-1, batch, dims)
            standard = (x.reshape(batch, dims) - loc) / scale
            log_scale = scale.log().sum(-1)
        return -0.5 * standard.square().sum(-1) - log_scale - 0.5 * dims * math.log(2 * math.pi)


LIKELIHOODS: dict[str, Callable[..., Likelihood]] = {
    "bernoulli": lambda std=None: BernoulliLikelihood(),
    "gaussian": lambda std=None: GaussianLikelihood(std),
}


def build_likelihood(name: str, std: float | None = None) -> Likelihood:
    if name not in LIKELIHOODS:
        raise VaekitError(f"unknown likelihood {name!r}: use one of {', '.join(LIKELIHOODS)}")
    return LIKELIHOODS[name](std)


def diagonal_gaussian(loc: torch.Tensor, logvar: torch.Tensor) -> Distribution:
    """q(z|x) = N(loc, diag(exp(logvar))), batch (B,), event (D,)."""
    scale = torch.exp(0.5 * logvar.clamp(LOGVAR_MIN, LOGVAR_MAX))
    return Independent(Normal(loc, scale, validate_args=False), 1)


def standard_normal(latent_dim: int, like: torch.Tensor) -> Distribution:
    zeros = like.new_zeros(latent_dim)
    return Independent(Normal(zeros, torch.ones_like(zeros), validate_args=False), 1)


class PointMass(Distribution):
    """A deterministic code (the plain autoencoder's 'posterior'): every sample is the code itself."""

    arg_constraints: ClassVar[dict] = {"loc": constraints.real}
    has_rsample = True

    def __init__(self, loc: torch.Tensor) -> None:
        self.loc = loc
        super().__init__(batch_shape=loc.shape[:-1], event_shape=loc.shape[-1:], validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def mode(self) -> torch.Tensor:
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        return torch.zeros_like(self.loc)

    @property
    def stddev(self) -> torch.Tensor:
        return torch.zeros_like(self.loc)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return self.loc.expand(torch.Size(sample_shape) + self.loc.shape)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        equal = (value == self.loc).all(-1)
        return torch.where(equal, 0.0, -math.inf)

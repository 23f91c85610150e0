"""The VampPrior (Tomczak & Welling 2018, "VAE with a VampPrior"): the prior is the mixture of the model's own
posteriors at M learned pseudo-inputs, p(z) = (1/M) sum_m q(z | u_m), and the KL is estimated by Monte Carlo."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution

from .config import ModelConfig, setting
from .distributions import GaussianMixture, diagonal_gaussian
from .models import VAE, register_family

BOUNDED = ("bernoulli", "continuous_bernoulli")  # likelihoods of data in [0, 1]: pseudo-inputs kept there


@register_family("vamp")
class VampPrior(VAE):
    """A VAE whose prior is the mixture of its posteriors at learned pseudo-inputs u_m (shaped like the data, started
    from random training items, learned with the rest; kept in [0, 1] by a hard tanh for data there, as in the
    paper). The regularizer is log q(z|x) - log p(z) at the draw z (unbiased for the KL); sampling draws a
    component, then its Gaussian. Each step also encodes the M pseudo-inputs (about M extra encoder rows)."""

    @dataclass(frozen=True)
    class Settings:
        components: int = setting(500, "pseudo-inputs (mixture components) of the vamp family's prior (the "
                                       "paper's 500)",
                                  check=(lambda v: 1 <= v <= 100_000, "between 1 and 100000"))

    takes_labels = False  # the pseudo-inputs carry no label

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        start = 0.5 if config.likelihood in BOUNDED else 0.0
        self.pseudo_inputs = nn.Parameter(start + 0.01 * torch.randn(self.settings.components, *config.data_shape))

    def init_from_data(self, x: torch.Tensor) -> None:
        """Start the pseudo-inputs at random training items (distinct where there are enough)."""
        count = self.pseudo_inputs.shape[0]
        index = torch.randperm(x.shape[0])[:count] if x.shape[0] >= count else torch.randint(x.shape[0], (count,))
        with torch.no_grad():
            self.pseudo_inputs.copy_(x[index].reshape(self.pseudo_inputs.shape).to(self.pseudo_inputs))

    def pseudo(self) -> torch.Tensor:
        """The pseudo-inputs as the encoder sees them: (M, *data_shape)."""
        u = self.pseudo_inputs
        return F.hardtanh(u, 0.0, 1.0) if self.config.likelihood in BOUNDED else u

    def prior(self) -> Distribution:
        """p(z) = (1/M) sum_m q(z | u_m)."""
        q = diagonal_gaussian(*self.encoder_params(self.pseudo()).chunk(2, dim=-1))
        return GaussianMixture(q.base_dist.loc, q.base_dist.scale)

    def closed_form_kl(self, qz: Distribution) -> torch.Tensor | None:
        return None  # no closed form against a mixture

    def kl(self, qz: Distribution, z: torch.Tensor) -> torch.Tensor:
        return qz.log_prob(z) - self.prior().log_prob(z)

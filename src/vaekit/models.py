"""The model interface (encode -> q(z|x), decode -> p(x|z), prior, loss) and its families, by registry."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import nn
from torch.distributions import Distribution, Normal, kl_divergence

from .config import ModelConfig
from .distributions import PointMass, build_likelihood, diagonal_gaussian, standard_normal
from .errors import VaekitError
from .networks import build_networks


@dataclass(frozen=True)
class LossOutput:
    """The training objective and its parts as batch means (nats per example); elbo per example (B,)."""

    loss: torch.Tensor  # minimised: recon + beta * kl_scale * kl
    recon: torch.Tensor  # -E_q[log p(x|z)], one sample
    kl: torch.Tensor  # the regularizer, KL(q(z|x) || p(z)) for a VAE
    elbo: torch.Tensor  # (B,) per example: -(recon + kl), higher is better (beta = 1)


class Model(nn.Module):
    """Template: the ELBO is written once here; a family overrides `posterior`, `regularizer` or `loss`."""

    family: ClassVar[str]
    posterior_params: ClassVar[int] = 2  # encoder outputs per latent dimension

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.likelihood = build_likelihood(config.likelihood, config.gaussian_std)
        self.encoder, self.decoder = build_networks(
            config, config.latent_dim * self.posterior_params, self.likelihood.param_channels
        )

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def data_shape(self) -> tuple[int, ...]:
        return self.config.data_shape

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # The distributions. y is the optional label, reserved for conditioning shared by every family.
    def posterior(self, params: torch.Tensor) -> Distribution:
        raise NotImplementedError

    # The networks. Conditioning a family on labels overrides these two; everything else follows.
    def encoder_params(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The posterior's parameters (B, latent_dim * posterior_params), always in full precision."""
        return _full_precision(self.encoder(x))

    def decoder_params(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The likelihood's parameters (B, param_channels * C, ...), always in full precision."""
        return _full_precision(self.decoder(z))

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """q(z|x): batch (B,), event (latent_dim,)."""
        return self.posterior(self.encoder_params(x, y))

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """p(x|z): batch (B,), event = data shape. Any leading sample dims of z are folded into the batch."""
        return self.likelihood(self.decoder_params(z, y))

    def prior(self) -> Distribution:
        return standard_normal(self.latent_dim, next(self.parameters()))

    def regularizer(self, qz: Distribution, z: torch.Tensor) -> torch.Tensor:
        """Per-example KL(q(z|x) || p(z)), closed form. (B,)"""
        return kl_divergence(qz, self.prior())

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_scale: float = 1.0) -> LossOutput:
        qz = self.encode(x, y)
        z = qz.rsample()  # (B, D), reparameterised
        recon = self.likelihood.nll(self.decoder_params(z, y), x)  # (B,) = -decode(z, y).log_prob(x)
        kl = self.regularizer(qz, z)  # (B,)
        loss = (recon + (self.config.beta * kl_scale) * kl).mean()
        return LossOutput(loss=loss, recon=recon.mean(), kl=kl.mean(), elbo=-(recon + kl))

    def log_importance_weights(
        self, x: torch.Tensor, k: int, y: torch.Tensor | None = None, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log p(x|z_k) + log p(z_k) - log q(z_k|x) for z_k ~ q(z|x): (K, B). The IWAE bound and NLL use it.

        noise (K, B, D), optional: the standard normal draws of z = mean + stddev * noise, for callers that fix
        each item's draws (the NLL metric, so results do not depend on batching); else drawn by rsample.
        """
        qz = self.encode(x, y)
        z = qz.rsample((k,)) if noise is None else qz.mean + qz.stddev * noise  # (K, B, D)
        px = self.decode(z.flatten(0, 1), y)  # batch (K*B,)
        log_px = self.likelihood.log_prob_samples(px, x)  # (K, B), x broadcast rather than copied K times
        return log_px + self.prior().log_prob(z) - qz.log_prob(z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n prior draws decoded to the likelihood mean: (n, *data_shape)."""
        z = torch.randn(n, self.latent_dim, generator=generator, device="cpu").to(self.device)
        return self.decode(z).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean: the model's best single reconstruction."""
        return self.decode(self.encode(x).mean).mean


def _full_precision(t: torch.Tensor) -> torch.Tensor:
    """Network outputs under bf16 autocast come out in bfloat16; the distributions and the loss work in float32."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


MODEL_FAMILIES: dict[str, type[Model]] = {}


def register_family(name: str) -> Callable[[type[Model]], type[Model]]:
    def add(cls: type[Model]) -> type[Model]:
        cls.family = name
        MODEL_FAMILIES[name] = cls
        return cls

    return add


@register_family("vae")
class VAE(Model):
    """Diagonal Gaussian posterior, standard normal prior, analytic KL (Kingma & Welling 2014, eq. 10)."""

    def posterior(self, params: torch.Tensor) -> Distribution:
        loc, logvar = params.chunk(2, dim=-1)
        return diagonal_gaussian(loc, logvar)

    def regularizer(self, qz: Distribution, z: torch.Tensor) -> torch.Tensor:
        """KL(N(m, s^2) || N(0, 1)) = sum_d (m^2 + s^2 - 1) / 2 - log s: the number kl_divergence gives against the
        standard normal prior, in fewer passes. A subclass with another prior or posterior gets the generic KL."""
        if type(self).prior is not Model.prior or not isinstance(getattr(qz, "base_dist", None), Normal):
            return super().regularizer(qz, z)
        loc, scale = qz.base_dist.loc, qz.base_dist.scale
        return (0.5 * (loc.square() + scale.square() - 1.0) - scale.log()).sum(-1)


@register_family("ae")
class AE(Model):
    """A plain autoencoder: a deterministic code and no regularizer; the same loss otherwise."""

    posterior_params = 1

    def posterior(self, params: torch.Tensor) -> Distribution:
        return PointMass(params)

    def regularizer(self, qz: Distribution, z: torch.Tensor) -> torch.Tensor:
        return z.new_zeros(z.shape[:-1])

    def log_importance_weights(
        self, x: torch.Tensor, k: int, y: torch.Tensor | None = None, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise VaekitError("a plain autoencoder (family ae) defines no likelihood bound: evaluate a vae instead")


def build_model(config: ModelConfig) -> Model:
    if config.family not in MODEL_FAMILIES:
        raise VaekitError(f"unknown model family {config.family!r}: use one of {', '.join(sorted(MODEL_FAMILIES))}")
    if config.likelihood == "auto":
        raise VaekitError("model.likelihood is 'auto': resolve it from the data first (vaekit.runs.resolve_config)")
    return MODEL_FAMILIES[config.family](config)

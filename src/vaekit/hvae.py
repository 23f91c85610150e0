"""A VAE with two stochastic layers (z1 near the data, z2 on top): the IWAE paper's two-layer layout (Burda et al.
2016, section 5: 784-200-200-100(z1)-100-100-50(z2)) with bottom-up inference q(z1|x) q(z2|z1), or top-down
inference as in the ladder VAE (Sønderby et al. 2016): q(z2|x) q(z1|z2, x), whose z1 merges the bottom-up estimate
with the prior p(z1|z2) by precision weighting.

The latent z is (z1, z2) side by side, (D1 + D2) numbers: the posterior and the prior are distributions over it
(log_prob, reparameterised draws from given noise), so the contract's ELBO, importance weights, IWAE bound and
evaluator work unchanged. The decoder reads z1, which is also an item's code for the latent tools; sampling draws
z2 ~ p(z2), then z1 ~ p(z1|z2). p(z2) is N(0, I), or as in the VampPrior paper's two-layer model (Tomczak & Welling
2018) the mixture of the posteriors' top layer at learned pseudo-inputs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import nn
from torch.distributions import Distribution, constraints

from .config import ModelConfig, setting
from .distributions import (ClassMixture, DiagonalGaussian, GaussianMixture, diagonal_gaussian, draw_noise,
                            rsample_with, standard_normal)
from .errors import VaekitError
from .models import VAE, Output, _full_precision, _prior_of, iw_gradient_setting, register_family
from .networks import MLPEncoder
from . import vamp  # the module (its functions read when called): `import vaekit.vamp` first imports this one


def merge(a: DiagonalGaussian, b: DiagonalGaussian) -> DiagonalGaussian:
    """The normalised product of two diagonal Gaussians (precision-weighted: the ladder VAE's eq. 18-19)."""
    pa, pb = a.base_dist.scale.pow(-2), b.base_dist.scale.pow(-2)
    variance = 1.0 / (pa + pb)
    loc = (a.base_dist.loc * pa + b.base_dist.loc * pb) * variance
    return DiagonalGaussian(loc, variance.sqrt())


def _version(t: torch.Tensor) -> int:
    """How often t has been changed in place (-1 for an inference tensor, which cannot be: no counter)."""
    return -1 if t.is_inference() else t._version


class _TwoLayers(Distribution):
    """A distribution over z = (z1, z2) built from one layer's distribution and the other's Gaussian, conditional on
    it. `first` is the layer drawn first ("z1" or "z2"); `given(value)` the other layer's Gaussian given it. The first
    layer's is a Gaussian (draws from given noise) or, for a prior only, a Gaussian mixture (draws by `sample`; one
    of batch (n,) for n labels: a label-conditioned vamp top prior)."""

    arg_constraints: ClassVar[dict] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, dims: tuple[int, int], first: str, start: DiagonalGaussian | GaussianMixture,
                 given: Callable[[torch.Tensor], DiagonalGaussian]) -> None:
        self.dims, self.first, self.start, self.given = dims, first, start, given
        self._last: tuple[torch.Tensor, int, DiagonalGaussian] | None = None  # the last draw (and its version:
        # not edited in place since) with its conditional, reused by log_prob
        self.device = start.mean.device
        super().__init__(batch_shape=start.batch_shape, event_shape=torch.Size([sum(dims)]), validate_args=False)

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return z[..., : self.dims[0]], z[..., self.dims[0] :]

    def _order(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the layer drawn first, the other) from (z1's, z2's); a swap or none, so it also turns (the layer drawn
        first, the other) back into (z1's, z2's)."""
        return (z1, z2) if self.first == "z1" else (z2, z1)

    def _conditional(self, value: torch.Tensor, base: torch.Tensor) -> DiagonalGaussian:
        if torch.compiler.is_compiling():  # computed again (a compiled graph shares the work): no version to read,
            return self.given(base)  # whose is_inference() split the compiled step
        if self._last is not None and self._last[0] is value and self._last[1] == _version(value):
            return self._last[2]
        return self.given(base)

    @property
    def noise_shape(self) -> torch.Size:
        return self.event_shape

    def rsample_with(self, noise: torch.Tensor) -> torch.Tensor:
        if not hasattr(self.start, "rsample_with"):
            raise VaekitError("a vamp top prior draws a mixture component first and has no reparameterised draws: "
                              "use sample()")
        e1, e2 = self.split(noise)
        e_first, e_then = self._order(e1, e2)
        first = self.start.rsample_with(e_first)
        then_dist = self.given(first)
        then = then_dist.rsample_with(e_then)
        z = torch.cat(self._order(first, then), -1)
        self._last = None if torch.compiler.is_compiling() else (z, _version(z), then_dist)
        return z

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape + self.event_shape
        return self.rsample_with(torch.randn(shape, device=self.device))

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            if hasattr(self.start, "rsample_with"):
                return self.rsample(sample_shape)
            first = self.start.sample(torch.Size(sample_shape))  # a mixture: a component, then its Gaussian
            then = self.given(first).sample()
            return torch.cat(self._order(first, then), -1)

    def layer_log_probs(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log density of z1's layer, of z2's layer), each (*S, B): their sum is log_prob."""
        z1, z2 = self.split(z)
        first, then = self._order(z1, z2)
        log_first = self.start.log_prob(first)
        log_then = self._conditional(z, first).log_prob(then)
        return self._order(log_first, log_then)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        a, b = self.layer_log_probs(value)
        return a + b

    @property
    def mean(self) -> torch.Tensor:
        """The mean path: the first layer's mean, then the other's mean given it (an item's code)."""
        first = self.start.mean
        then = self.given(first).mean
        return torch.cat(self._order(first, then), -1)


@register_family("hvae")
class HVAE(VAE):
    """Two stochastic layers: z1 (model.latent_dim numbers, the decoder's input) and z2 on top (model.hvae.top_dim).
    The networks between x and z1 are the model's own (--hidden-dims / --network); those between z1 and z2 are MLPs
    of model.hvae.top_hidden. Reports the KL of each layer (kl_z1 = log q(z1|.) - log p(z1|z2), kl_z2 = log q(z2|.)
    - log p(z2), Monte Carlo at the draw); their sum with recon is the negative ELBO. Options: top-down inference,
    free bits per layer, the K-sample IWAE bound (k > 1), and a VampPrior on z2 (top_prior: vamp; each step then also
    encodes the top_components pseudo-inputs). Label-conditioned (--condition label), the networks between x and z1
    take the label as the vae's do; the layers between z1 and z2 do not, nor does an N(0, I) top prior; a vamp top
    prior takes it as the vamp family's does: pseudo-input m has class m mod L, is encoded with it, and p(z2 | y) is
    the mixture of its class's components."""

    fixed_prior = True  # (with a vamp top prior, its pseudo-inputs encoded once per evaluation)

    @property
    def prior_text(self) -> str:
        top = ("a VampPrior of the top layer's posteriors at pseudo-inputs" if self.settings.top_prior == "vamp"
               else "N(0, I)") + (" (given the label, its class's)" if self.prior_takes_labels else "")
        return f"p(z2) p(z1|z2): z2 from {top}, then z1 from the learned conditional"

    @dataclass(frozen=True)
    class Settings:
        top_dim: int = setting(50, "numbers in the hvae family's top stochastic layer z2 (the IWAE paper's 50)",
                               check=(lambda v: 1 <= v <= 65_536, "between 1 and 65536"))
        top_hidden: tuple[int, ...] = setting((100, 100), "widths of the MLPs between z1 and z2 in the hvae family "
                                              "(the IWAE paper's 100,100)",
                                              check=(lambda v: all(1 <= h <= 65_536 for h in v),
                                                     "widths from 1 to 65536, e.g. 100,100"))
        inference: str = setting("bottom-up", "hvae inference order: bottom-up q(z1|x) q(z2|z1) (IWAE paper) or "
                                 "top-down q(z2|x) q(z1|z2,x), merging with the prior (ladder VAE)",
                                 choices=("bottom-up", "top-down"))
        k: int = setting(1, "importance samples of the hvae family's training bound (1: the ELBO; the IWAE "
                         "paper's two-layer IWAE used 50)",
                         check=(lambda v: 1 <= v <= 1000, "between 1 and 1000 (each sample is a decoder pass)"))
        top_prior: str = setting("normal", "p(z2) of the hvae family: normal, N(0, I) (IWAE paper), or vamp, the "
                                 "mixture of q(z2|u) at learned pseudo-inputs u (the VampPrior paper's two-layer model)",
                                 choices=("normal", "vamp"))
        top_components: int = setting(500, "pseudo-inputs of the hvae family's vamp top prior (--hvae-top-prior "
                                      "vamp; the VampPrior paper's 500)",
                                      check=(lambda v: 1 <= v <= 100_000, "between 1 and 100000"),
                                      needs=("top_prior", "vamp"))
        gradient: str = iw_gradient_setting("hvae", " (with k > 1)")

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        settings = self.settings
        if settings.k > 1 and config.free_bits > 0:
            raise VaekitError("free bits floor the ELBO's KL terms, and the hvae family's IWAE bound (--hvae-k > 1) "
                              "has none: use --hvae-k 1 with --free-bits (and --hvae-gradient standard, "
                              "where a recipe such as hvae-iwae sets dreg), or drop --free-bits")
        if settings.gradient != "standard" and settings.k == 1:
            raise VaekitError(f"--hvae-gradient {settings.gradient} is a gradient of the K-sample bound, and this model "
                              "trains on the ELBO: add --hvae-k 5 (or more), or pass --hvae-gradient "
                              "standard")
        d1, d2 = config.latent_dim, settings.top_dim
        # bottom-up: q(z2|z1) from a draw of z1; top-down: q(z2|x) from the bottom-up estimate of z1's parameters
        self.up = MLPEncoder((2 * d1 if settings.inference == "top-down" else d1,), settings.top_hidden, 2 * d2,
                             activation=config.activation)
        self.down = MLPEncoder((d2,), settings.top_hidden, 2 * d1, activation=config.activation)  # p(z1|z2)
        if settings.top_prior == "vamp":  # p(z2) = (1/M) sum_m q(z2|u_m)
            self.pseudo_inputs = vamp.new_pseudo_inputs(settings.top_components, config.data_shape)
            if self.num_labels:  # each pseudo-input a class, as the vamp family's
                if settings.top_components < self.num_labels:
                    raise VaekitError(f"a label-conditioned hvae's vamp top prior gives each of its {self.num_labels} "
                                      f"classes its own pseudo-inputs, and has {settings.top_components}: use "
                                      f"--hvae-top-components {self.num_labels} or more")
                self.register_buffer("pseudo_labels", torch.arange(settings.top_components) % self.num_labels)

    @property
    def prior_takes_labels(self) -> bool:
        """A label-conditioned model's vamp top prior takes the label; N(0, I) on top does not."""
        return bool(self.num_labels) and self.settings.top_prior == "vamp"

    def init_from_data(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """A vamp top prior's pseudo-inputs start at random training items (as the vamp family's: label-conditioned,
        each at an item of its class)."""
        if self.settings.top_prior == "vamp":
            labels = (self.pseudo_labels, y) if self.num_labels and y is not None else None
            vamp.start_pseudo_inputs(self.pseudo_inputs, x, self.config.likelihood, labels)

    # ---- shapes ----------------------------------------------------------------------------------------------
    @property
    def dims(self) -> tuple[int, int]:
        return self.config.latent_dim, self.settings.top_dim

    @property
    def latent_dim(self) -> int:  # z = (z1, z2)
        return sum(self.dims)

    def build_networks(self) -> tuple[nn.Module, nn.Module]:
        from .networks import build_networks

        d1 = self.config.latent_dim
        return build_networks(self.config, 2 * d1, d1, self.likelihood.param_channels, self.num_labels)

    @property
    def code_shape(self) -> tuple[int, ...]:
        """An item's code is z1, what the decoder reads (z2 reaches the data only through p(z1|z2))."""
        return (self.config.latent_dim,)

    def code(self, qz: Distribution) -> torch.Tensor:
        return self.draw_code(qz.mean)

    def draw_code(self, z: torch.Tensor) -> torch.Tensor:
        return z[..., : self.config.latent_dim]

    def decoder_params(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return super().decoder_params(z[..., : self.config.latent_dim], y)  # the decoder reads z1 (a code, or all z)

    # ---- the layers --------------------------------------------------------------------------------------------
    @staticmethod
    def _gaussian(params: torch.Tensor) -> DiagonalGaussian:
        return diagonal_gaussian(*_full_precision(params).chunk(2, dim=-1))

    def _net(self, net: nn.Module, value: torch.Tensor, held: bool = False) -> DiagonalGaussian:
        """A Gaussian from an MLP applied to the last dimension of value (any leading shape); `held`: with the MLP's
        weights held fixed (gradients reach value only)."""
        flat = value.reshape(-1, value.shape[-1])
        if held:
            params = torch.func.functional_call(net, {n: p.detach() for n, p in net.named_parameters()}, (flat,))
        else:
            params = net(flat)
        return self._gaussian(params.reshape(*value.shape[:-1], params.shape[-1]))

    def conditional_prior(self, z2: torch.Tensor, held: bool = False) -> DiagonalGaussian:
        """p(z1|z2)."""
        return self._net(self.down, z2, held)

    def _top_from(self, bottom_up: DiagonalGaussian, held: bool = False) -> DiagonalGaussian:
        """Top-down inference's q(z2|x) from the bottom-up estimate of z1's parameters."""
        return self._net(self.up, torch.cat([bottom_up.base_dist.loc, bottom_up.base_dist.scale.log()], -1), held)

    def posterior(self, params: torch.Tensor, held: bool = False) -> Distribution:
        """q(z|x); `held` (with params detached): every network in it held fixed, for posterior_held."""
        d1, d2 = self.dims
        bottom_up = self._gaussian(params)  # q(z1|x) (bottom-up), or the bottom-up estimate of z1 (top-down)
        if self.settings.inference == "bottom-up":
            return _TwoLayers((d1, d2), "z1", bottom_up, lambda z1: self._net(self.up, z1, held))
        top = self._top_from(bottom_up, held)

        def z1_given(z2: torch.Tensor) -> DiagonalGaussian:  # q(z1|z2, x): the estimate merged with p(z1|z2)
            estimate = DiagonalGaussian(bottom_up.base_dist.loc.expand(*z2.shape[:-1], d1),
                                        bottom_up.base_dist.scale.expand(*z2.shape[:-1], d1))
            return merge(estimate, self.conditional_prior(z2, held))

        return _TwoLayers((d1, d2), "z2", top, z1_given)

    def posterior_held(self, params: torch.Tensor) -> Distribution:
        return self.posterior(params.detach(), held=True)

    def top_prior(self) -> Distribution:
        """p(z2): N(0, I), or with a vamp top prior the mixture (1/M) sum_m q(z2|u_m) of the posteriors' top layer
        at the pseudo-inputs u_m: top-down inference's q(z2|u) itself; bottom-up, q(z2|z1) at the mean of
        q(z1|u) (its top layer's mean path)."""
        if self.settings.top_prior == "normal":
            return standard_normal(self.settings.top_dim, next(self.parameters()))
        labels = self.pseudo_labels if self.num_labels else None  # each pseudo-input encoded with its class
        pseudo = vamp.pseudo_view(self.pseudo_inputs, self.config.likelihood)
        bottom_up = self._gaussian(self.encoder_params(pseudo, labels))
        top = self._top_from(bottom_up) if self.settings.inference == "top-down" else \
            self._net(self.up, bottom_up.base_dist.loc)
        return GaussianMixture(top.base_dist.loc, top.base_dist.scale)

    def prior(self) -> Distribution:
        """p(z2) p(z1|z2)."""
        d1, d2 = self.dims
        return _TwoLayers((d1, d2), "z2", self.top_prior(), self.conditional_prior)

    def closed_form_kl(self, qz: Distribution, y: torch.Tensor | None = None) -> torch.Tensor | None:
        return None

    def prior_given(self, y: torch.Tensor | None) -> Distribution:
        """p(z | y) for each label y (n,): a vamp top prior's mixture of the class's components, then p(z1|z2) (the
        prior one evaluation holds, where it holds one); prior() where the prior takes no label."""
        prior = _prior_of(self)
        if y is None or not self.prior_takes_labels:
            return prior
        return _TwoLayers(self.dims, "z2", ClassMixture(prior.start, self.pseudo_labels, y), self.conditional_prior)

    def regularizer_terms(self, qz: Distribution, z: torch.Tensor,
                          y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Each layer's log q - log p at the draw (p given the labels y where the prior takes them)."""
        q1, q2 = qz.layer_log_probs(z)
        p1, p2 = self.prior_for(y, qz.batch_shape[0]).layer_log_probs(z)
        return {"kl_z1": q1 - p1, "kl_z2": q2 - p2}

    def regularizer_sizes(self) -> dict[str, int]:
        d1, d2 = self.dims
        return {"kl_z1": d1, "kl_z2": d2}

    def kl(self, qz: Distribution, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        terms = self.regularizer_terms(qz, z, y)
        return terms["kl_z1"] + terms["kl_z2"]

    EVALUATION_DRAWS: ClassVar[int] = 16  # posterior draws per item behind evaluate's per-layer KL

    def evaluation_terms(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per item: each layer's KL term, log q - log p of that layer at the draw, averaged over EVALUATION_DRAWS
        posterior draws (evaluate's `kl_z1` and `kl_z2`, from its seed; their sum estimates the KL the ELBO holds)."""
        qz = self.encode(x, y)
        noise = draw_noise(qz, (self.EVALUATION_DRAWS,))
        terms = self.regularizer_terms(qz, rsample_with(qz, noise), y)
        return {name: value.mean(0) for name, value in terms.items()}

    def layer_means(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """E_q[z2|x]: top-down, q(z2|x)'s mean; bottom-up, the mean of q(z2|z1) averaged over EVALUATION_DRAWS draws
        of z1 ~ q(z1|x) (q(z2|x) is their mixture)."""
        qz = self.encode(x, y)
        if qz.first == "z2":
            return {"z2": qz.start.mean}
        z1 = qz.start.rsample_with(draw_noise(qz.start, (self.EVALUATION_DRAWS,)))
        return {"z2": qz.given(z1).mean.mean(0)}

    # ---- the objective ---------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_scale: float = 1.0) -> Output:
        if self.settings.k > 1:  # the contract's K-sample IWAE bound (Burda et al. 2016, eq. 8)
            return self.importance_weighted(x, self.settings.k, y, kl_scale, self.settings.gradient)
        return super().forward(x, y, kl_scale)  # the ELBO, its terms the two layers' (free bits per layer)


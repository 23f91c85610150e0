"""The VampPrior (Tomczak & Welling 2018, "VAE with a VampPrior"): the prior is the mixture of the model's own
posteriors at M learned pseudo-inputs, p(z) = (1/M) sum_m q(z | u_m), and the KL is estimated by Monte Carlo.
Label-conditioned, each pseudo-input has a class, and the prior of an item of class y is the mixture of the
posteriors at its class's pseudo-inputs, each encoded with that label:
p(z | y) = (1/M_y) sum_{m: y_m = y} q(z | u_m, y)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Distribution

from .config import ModelConfig, setting
from .distributions import ClassMixture, GaussianMixture, diagonal_gaussian
from .errors import VaekitError
from .models import VAE, _prior_of, register_family

BOUNDED = ("bernoulli", "continuous_bernoulli")  # likelihoods of data in [0, 1]: pseudo-inputs kept there
EDGE = 0.01  # data in [0, 1] starts its pseudo-inputs' logits at this far inside the range (finite logits)


def new_pseudo_inputs(count: int, data_shape: tuple[int, ...]) -> nn.Parameter:
    """M learned pseudo-inputs shaped like the data (for data in [0, 1], logits: 0 is grey 0.5), before
    start_pseudo_inputs sets them from training items."""
    return nn.Parameter(0.01 * torch.randn(count, *data_shape))


def _random_items(pool: torch.Tensor, count: int) -> torch.Tensor:
    """count of the indices in pool, at random: distinct where there are enough."""
    pick = torch.randperm(len(pool))[:count] if len(pool) >= count else torch.randint(len(pool), (count,))
    return pool[pick]


def start_pseudo_inputs(pseudo_inputs: nn.Parameter, x: torch.Tensor, likelihood: str,
                        labels: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """Start the pseudo-inputs at random training items x (distinct where there are enough); for data in [0, 1],
    at the items pulled EDGE inside the range, as logits. labels: (the pseudo-inputs' classes (M,), the items'
    (N,)): each starts at an item of its own class (at any item where the data hold none of it)."""
    count = pseudo_inputs.shape[0]
    index = _random_items(torch.arange(x.shape[0]), count)
    if labels is not None:
        classes, y = labels[0].cpu(), labels[1].cpu().reshape(-1)
        for label in classes.unique():
            slots, pool = (classes == label).nonzero()[:, 0], (y == label).nonzero()[:, 0]
            if len(pool):
                index[slots] = _random_items(pool, len(slots))
    items = x[index].reshape(pseudo_inputs.shape).to(pseudo_inputs)
    if likelihood in BOUNDED:
        items = torch.logit(items.clamp(EDGE, 1 - EDGE))
    with torch.no_grad():
        pseudo_inputs.copy_(items)


def pseudo_view(pseudo_inputs: torch.Tensor, likelihood: str) -> torch.Tensor:
    """The pseudo-inputs as an encoder sees them (M, *data_shape): for data in [0, 1] the sigmoid of the learned
    logits, else the learned values."""
    return torch.sigmoid(pseudo_inputs) if likelihood in BOUNDED else pseudo_inputs


@register_family("vamp")
class VampPrior(VAE):
    """A VAE whose prior is the mixture of its posteriors at learned pseudo-inputs u_m (shaped like the data, started
    from random training items, learned with the rest; for data in [0, 1] kept there as the sigmoid of learned
    logits, which never stop learning as the paper's hard tanh does at the exact 0s and 1s of binary data). The
    regularizer is log q(z|x) - log p(z) at the draw z (unbiased for the KL); sampling draws a component, then its
    Gaussian. Each step also encodes the M pseudo-inputs (about M extra encoder rows).

    Label-conditioned (--condition label), pseudo-input m has the class m mod L (L classes; started at a training
    item of that class), is encoded with it, and the prior of an item of class y is the mixture of its class's
    components (prior_given): the KL, the importance weights and the draws for a label are against it; prior() is
    the mixture of them all."""

    @dataclass(frozen=True)
    class Settings:
        components: int = setting(500, "pseudo-inputs (mixture components) of the vamp family's prior (the "
                                       "paper's 500)",
                                  check=(lambda v: 1 <= v <= 100_000, "between 1 and 100000"))

    fixed_prior = True  # the mixture at the pseudo-inputs: one encoder pass of them per evaluation, not per pass

    @property
    def prior_text(self) -> str:
        given = ""
        if self.num_labels:
            share, more = divmod(self.settings.components, self.num_labels)
            given = f" (given the label, its class's {share}{f' or {share + 1}' if more else ''})"
        return f"the VampPrior, a mixture of the posteriors at {self.settings.components} learned pseudo-inputs{given}"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        # the encoder sees pseudo() of these: for data in [0, 1] their sigmoid (0 here: grey 0.5, plus noise)
        self.pseudo_inputs = new_pseudo_inputs(self.settings.components, config.data_shape)
        if self.num_labels:
            if self.settings.components < self.num_labels:
                raise VaekitError(f"a label-conditioned vamp gives each of its {self.num_labels} classes its own "
                                  f"pseudo-inputs, and has {self.settings.components}: use --vamp-components "
                                  f"{self.num_labels} or more")
            self.register_buffer("pseudo_labels", torch.arange(self.settings.components) % self.num_labels)

    def init_from_data(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        labels = (self.pseudo_labels, y) if self.num_labels and y is not None else None
        start_pseudo_inputs(self.pseudo_inputs, x, self.config.likelihood, labels)

    def pseudo(self) -> torch.Tensor:
        """The pseudo-inputs as the encoder sees them: (M, *data_shape)."""
        return pseudo_view(self.pseudo_inputs, self.config.likelihood)

    def prior(self) -> Distribution:
        """p(z) = (1/M) sum_m q(z | u_m) (label-conditioned: q(z | u_m, y_m), every class's components)."""
        labels = self.pseudo_labels if self.num_labels else None
        q = diagonal_gaussian(*self.encoder_params(self.pseudo(), labels).chunk(2, dim=-1))
        return GaussianMixture(q.base_dist.loc, q.base_dist.scale)

    def prior_given(self, y: torch.Tensor | None) -> Distribution:
        """p(z | y) for each label y (n,): the mixture of the components of y's class (the prior one evaluation
        holds, where it holds one); prior() for a model that is not conditioned."""
        mixture = _prior_of(self)
        return mixture if y is None or not self.num_labels else ClassMixture(mixture, self.pseudo_labels, y)

    def closed_form_kl(self, qz: Distribution, y: torch.Tensor | None = None) -> torch.Tensor | None:
        return None  # no closed form against a mixture: the KL is log q(z|x) - log p(z) (given y) at the draw

"""The model contract (encode -> q(z|x), decode -> p(x|z), prior, forward -> objective and named terms) and the
families built on it, by registry.

Written once here: the ELBO (reconstruction plus beta times the regularizer), the importance weights that the
IWAE bound and the evaluator share, label conditioning, sampling through the prior. A family overrides one piece:
the posterior, the prior, the regularizer, the bound (forward), or its networks (build_networks).
"""
from __future__ import annotations

import contextlib
import logging
import math
import threading
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Normal, kl_divergence

from .config import (ModelConfig, RunConfig, check_needs, check_unclaimed, register_settings, setting,
                     validate_model)
from .distributions import (
    DiagonalGaussian, PointMass, build_likelihood, diagonal_gaussian, draw_noise, noise_shape, rsample_with,
    standard_normal,
)
from .errors import VaekitError
from .networks import build_networks

if TYPE_CHECKING:
    from .integrations.hub import HubFolder

log = logging.getLogger(__name__)

M = TypeVar("M", bound="Model")

LABELLED_HOOKS = ("closed_form_kl", "kl", "regularizer_terms")  # the objective's hooks that take the items' labels
_TAKES_LABELS: dict[Any, bool] = {}  # function -> whether it takes y, read once


def hook_takes_labels(hook: Any) -> bool:
    """Whether a hook (a function, or a bound method) takes the labels: a parameter named y, or **kwargs."""
    import inspect

    function = getattr(hook, "__func__", hook)
    if function not in _TAKES_LABELS:
        try:
            parameters = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):
            parameters = ()
        _TAKES_LABELS[function] = any(p.name == "y" or p.kind is p.VAR_KEYWORD for p in parameters)
    return _TAKES_LABELS[function]


def _label_hooks(cls: type) -> dict[str, tuple[Any, bool]]:
    """A family's objective hooks, name -> (its function, whether it takes y): read when the class is made, so that
    a compiled step reads a constant of its class rather than a cache that grows (which made it compile again)."""
    return {name: (getattr(cls, name), hook_takes_labels(getattr(cls, name))) for name in LABELLED_HOOKS}


@dataclass(frozen=True)
class Output:
    """What `model(x, y)` returns: the objective to minimise and its named per-example parts (nats)."""

    loss: torch.Tensor  # () the batch mean of the objective; what the trainer minimises
    terms: Mapping[str, torch.Tensor]  # name -> (B,) per example: recon, kl, kl_z1, bound, commitment, ...
    elbo: torch.Tensor | None  # (B,) log-likelihood lower bound per example at beta = 1; None if the family has none


class Model(nn.Module):
    """The contract every family keeps; the ELBO is written once here.

    KL warm-up and beta reach every family through one mechanism: forward's `kl_scale` (the trainer's warm-up
    schedule) times `config.beta` weights whatever the family regularizes (all `regularizer_terms`, or in the
    IWAE bound log p(z) - log q(z|x); tcvae's beta weighs its total correlation alone); `elbo` is always reported
    at weight 1.
    """

    family: ClassVar[str]
    Settings: ClassVar[type | None] = None  # a family's own settings (model.<family>.<name>), a frozen dataclass
    posterior_params: ClassVar[int] = 2  # encoder outputs per latent dimension
    has_bound: ClassVar[bool] = True  # whether log p(x) is bounded (ELBO, NLL); a plain autoencoder has none
    # whether training pulls the codes towards prior(), so that the prior's spread is the code's scale: by default
    # has_bound (a VAE's do; a plain AE's N(0, I) is nominal, a VQ-VAE's prior is learned later over its codebook's
    # entries); a family without a bound whose codes do follow its prior (a Wasserstein AE) sets True. Where False,
    # traversals and the explorer's sliders step in the codes' own spread over the data, and the explorer says the
    # prior is nominal (or learned).
    codes_follow_prior: ClassVar[bool] = True
    takes_labels: ClassVar[bool] = True  # whether the family can be conditioned on labels (--condition label)
    takes_free_bits: ClassVar[bool] = True  # whether its objective applies model.free_bits (Model.forward does)
    # whether its objective has a regularizer for model.beta and train.kl_warmup_epochs to weigh (a plain AE's has
    # none: a new run drops both, with a warning)
    has_regularizer: ClassVar[bool] = True
    # whether prior() depends on the weights alone, and costs enough (a VampPrior encodes its pseudo-inputs) that an
    # evaluation builds it once for all its passes (held_prior); a prior that reads the last batch encoded must not
    fixed_prior: ClassVar[bool] = False
    stages: ClassVar[tuple[str, ...]] = ()  # training stages after the model's own, e.g. ("prior",) (vqvae)
    run_config: RunConfig | None = None  # the settings it was trained with, where known (vaekit.load sets them)
    _label_hooks: ClassVar[dict[str, tuple[Any, bool]]]  # LABELLED_HOOKS: (function, takes y), read per class

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """codes_follow_prior as the family (or a base below Model) declares it, else its has_bound (the default,
        also of families written before the setting was). A family that writes its own regularizer_terms without
        saying has_regularizer has one (an AE's subclass with a penalty of its own: its --beta weighs it)."""
        super().__init_subclass__(**kwargs)
        cls._label_hooks = _label_hooks(cls)
        for base in cls.__mro__:  # the nearest class below Model (a mixin too) that says it or writes the terms
            if base is Model:
                break
            if "has_regularizer" in vars(base) or "regularizer_terms" in vars(base):
                cls.has_regularizer = vars(base).get("has_regularizer", True)
                break
        for base in cls.__mro__:  # the class, its bases below Model and their mixins
            if base is Model:
                break
            if "codes_follow_prior" in vars(base) and not vars(base).get("_follow_derived"):
                return  # declared
        cls.codes_follow_prior = cls.has_bound
        cls._follow_derived = True

    @property
    def prior_text(self) -> str:
        """The prior p(z) in words, for reports and captions: N(0, I) unless the family has its own prior."""
        return "N(0, I)" if type(self).prior is Model.prior else f"the {self.family} family's prior"

    @classmethod
    def settings_from_data(cls, settings: Any, dataset: Any) -> Any:
        """The family's settings with what the training data decides filled in (e.g. its size); unchanged here."""
        return settings

    @classmethod
    def batch_refused(cls, settings: Any, batch_size: int) -> str | None:
        """Why the family, with these settings, cannot train on batches of `batch_size` items, as a one-line error
        with the fix; None where it can."""
        return None

    @classmethod
    def labels_refused(cls, settings: Any) -> str | None:
        """Why the family, with these settings (its Settings, or None), cannot be label-conditioned, as a one-line
        error with the fix; None where it can (a family that never can says takes_labels = False)."""
        return None

    @classmethod
    def processes_refused(cls, settings: Any) -> str | None:
        """Why the family, with these settings (its Settings, or None), cannot train in several processes (--nproc),
        as a one-line error with the fix; None where it can."""
        return None

    def init_from_data(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Set weights that start from the training data (x, the training items as the encoder takes them; y,
        their labels, passed to a label-conditioned model alone) before a fresh training run, drawing from torch's
        global generator (seeded by the run); nothing here. Not called on a resume or a load: the weights come from
        the checkpoint."""

    def set_stage(self, stage: str | None) -> None:
        """Train `stage` (one of `stages`) next: the family makes only that stage's parameters trainable and forward
        return that stage's objective; None: the model's own training. `vaekit train-prior` and
        vaekit.runs.train_stage call it; a family without stages takes None only."""
        if stage is not None:
            raise VaekitError(f"the {self.family} family has no training stage {stage!r}: it trains in one stage")

    def layer_means(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The posterior means of the family's stochastic layers beyond the code, name -> (B, size) (the hvae's z2):
        `evaluate` counts each one's active units, as Burda et al. 2016 do per layer. Draws, where a mean needs them,
        from torch's generator (seeded by the evaluator). {} (no such layers) by default."""
        return {}

    def stage_module(self, stage: str) -> nn.Module:
        """The part of the model that `stage` trains (its weights and buffers), so that a stage cut off can start
        again from its initial weights (vaekit.runs.train_stage's restart). A family with stages overrides it."""
        raise VaekitError(f"the {self.family} family names no module for its stage {stage!r}: it cannot restart it")

    def discrete_codes(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor | None:
        """Each item's discrete code indices (B, ...) for a family with a codebook (the evaluator reports the
        codebook's usage and perplexity from them); None for a continuous latent."""
        return None

    def evaluation_terms(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Further per-item measurements (B,) the evaluator averages, by name (e.g. a learned prior's -log p of the
        codes); none here."""
        return {}

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.settings = config.settings(self.family)
        if self.settings is not None and is_dataclass(self.settings):  # as validate_model checks them
            check_needs(self.settings, f"model.{self.family}")
        self.likelihood = build_likelihood(config.likelihood, config.data_shape, config.settings(config.likelihood))
        self.encoder, self.decoder = self.build_networks()

    # ---- shapes and networks ---------------------------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def data_shape(self) -> tuple[int, ...]:
        return self.config.data_shape

    @property
    def code_shape(self) -> tuple[int, ...]:
        """Shape of one item's code, what the latent tools work on (encode, interpolate, traverse, attributes)."""
        return (self.latent_dim,)

    def code_number_name(self, d: int) -> str:
        """Number d of an item's flattened code as a traversal's rows name it: z[d]; a family whose code has places
        (the vqvae's grid of vectors) adds where d sits."""
        return f"z[{d}]"

    @property
    def num_labels(self) -> int:
        """Classes a label-conditioned model takes (0: not conditioned)."""
        return self.config.num_labels if self.config.condition == "label" else 0

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def build_networks(self) -> tuple[nn.Module, nn.Module]:
        """encoder(x, c) -> posterior parameters; decoder(z, c) -> likelihood parameters; c the one-hot label or
        None. A family with other shapes overrides this hook."""
        return build_networks(self.config, self.latent_dim * self.posterior_params, self.latent_dim,
                              self.likelihood.param_channels, self.num_labels)

    # ---- labels ----------------------------------------------------------------------------------------------
    def label_features(self, y: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """The one-hot label the networks see (B, num_labels); None for a model that is not conditioned."""
        y = self.label_indices(y, batch)
        return None if y is None else F.one_hot(y, self.num_labels).float()

    def label_indices(self, y: torch.Tensor | int | None, batch: int) -> torch.Tensor | None:
        """The labels as checked class indices (B,) on the model's device; None for a model that is not
        conditioned. One-line errors for labels missing, given to a model without them, or out of range."""
        if not self.num_labels:
            if y is not None:
                raise VaekitError("labels were given, but this model is not conditioned on labels: leave them out "
                                  "(y=None), or train a label-conditioned model (--condition label)")
            return None
        if y is None:
            raise VaekitError(f"this model is conditioned on labels (0..{self.num_labels - 1}): pass the labels "
                              "(y=..., or --label on the command line)")
        y = self.expand_labels(y, batch)
        # labels given by a caller; on a GPU or in a compiled step (training data, checked when loaded), no sync and
        # no graph break (the check's .item() split every compiled step in two)
        if y.device.type == "cpu" and not torch.compiler.is_compiling():
            if bool(((y < 0) | (y >= self.num_labels)).any()):
                raise VaekitError(f"labels must be class indices 0..{self.num_labels - 1}, got values in "
                                  f"[{int(y.min())}, {int(y.max())}]")
        return y.to(self.device)

    def expand_labels(self, y: torch.Tensor | int, batch: int) -> torch.Tensor:
        """Labels as a (batch,) long tensor: one per item, or one for all. Class indices only: a bool, text, a
        fraction or a table of labels is refused (they were cast to a class in silence: 2.7 to 2, True to 1)."""
        if not torch.is_tensor(y):
            if isinstance(y, (bool, str, bytes)):
                raise VaekitError(f"labels must be class indices (int), got {y!r}")
            try:
                y = torch.as_tensor(y)
            except (TypeError, ValueError, RuntimeError):
                raise VaekitError(f"labels must be class indices (ints), got {type(y).__name__}") from None
        if y.dtype == torch.bool or y.dtype.is_complex or y.dim() > 1:
            raise VaekitError(f"labels must be class indices: one int per item (batch,), got a {y.dtype} tensor of "
                              f"shape {tuple(y.shape)}")
        if y.dtype.is_floating_point:  # whole numbers are fine as they are; a fraction is no class
            bad = ~(torch.isfinite(y) & (y == y.round())) if y.device.type == "cpu" and \
                not torch.compiler.is_compiling() else None
            if bad is not None and bool(bad.any()):
                raise VaekitError("labels must be class indices (whole numbers), got fractions such as "
                                  f"{float(y[bad].reshape(-1)[0]):g}")
        y = y.long().reshape(-1)
        if y.numel() == 1 and batch != 1:
            y = y.expand(batch)
        if y.numel() != batch:
            raise VaekitError(f"got {y.numel()} labels for {batch} items: give one label per item, or one for all")
        return y

    # ---- the networks, in full precision -----------------------------------------------------------------------
    def encoder_params(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The posterior's parameters (B, ...), always in full precision."""
        return _full_precision(self.encoder(x, self.label_features(y, x.shape[0])))

    def decoder_params(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The likelihood's parameters (B, param_channels * C, ...), always in full precision."""
        return _full_precision(self.decoder(z, self.label_features(y, z.shape[0])))

    # ---- the distributions -----------------------------------------------------------------------------------
    def posterior(self, params: torch.Tensor) -> Distribution:
        """q(z|x) from the encoder's output: batch (B,), the family's own event shape; it draws its own noise
        (`noise_shape`, `rsample_with`; see vaekit.distributions)."""
        raise NotImplementedError

    def prior(self) -> Distribution:
        """p(z), what every sampler draws from: the standard normal unless a family says otherwise."""
        return standard_normal(self.latent_dim, next(self.parameters()))

    @property
    def prior_takes_labels(self) -> bool:
        """Whether this model's prior is conditioned on the label (a label-conditioned model of a family that
        overrides prior_given), so that its draws need labels. A family whose prior takes it with some settings only
        says so here (the hvae: with a vamp top prior)."""
        return bool(self.num_labels) and type(self).prior_given is not Model.prior_given

    def prior_given(self, y: torch.Tensor | None) -> Distribution:
        """p(z | y) for each of the labels y (n,) (checked class indices; None for a model that is not conditioned):
        prior(), the same for every class, unless the family's prior takes the label (the vqvae's over its codes,
        the conditioned vamp's mixture of its class's pseudo-inputs: a distribution of batch (n,)); a
        label-conditioned model's label otherwise enters through its networks. A prior that takes the label is
        the one the objective holds each item to (prior_for: the KL, the importance weights) and the one
        sample_prior draws from."""
        return self.prior()

    def prior_for(self, y: torch.Tensor | int | None, batch: int) -> Distribution:
        """The prior the objective holds `batch` items with labels y to: prior_given of their checked labels where
        the family's prior takes the label (a distribution of batch (batch,)), prior() otherwise (and for a saved run
        whose objective hook trained without the labels: see build_model)."""
        if self._objective_takes_labels:
            return self.prior_given(self.label_indices(y, batch))
        return self.prior()

    @property
    def _objective_takes_labels(self) -> bool:
        """Whether the objective holds items to the prior given their labels: where the prior takes them, unless
        this is a saved run whose hook trained its KL without them (then its importance weights, as its KL, use
        prior(), as they did when it trained)."""
        return self.prior_takes_labels and not self.__dict__.get("_trained_without_labels", False)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """q(z|x): batch (B,), event = the family's latent shape."""
        return self.posterior(self.encoder_params(x, y))

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """p(x|z): batch (B,), event = data shape."""
        return self.likelihood(self.decoder_params(z, y))

    def code(self, qz: Distribution) -> torch.Tensor:
        """An item's code for the latent tools (B, *code_shape): the posterior mean for a flat latent."""
        return qz.mean

    def draw_code(self, z: torch.Tensor) -> torch.Tensor:
        """The code (*S, *code_shape) of latent draws z (*S, *latent shape), from the posterior or the prior: z itself
        for a flat latent; a family whose code is part of its latent picks it out."""
        return z

    def decode_code(self, code: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """p(x | code): the inverse of `code` for decoding edited codes."""
        return self.decode(code, y)

    # ---- the objective ---------------------------------------------------------------------------------------
    def _with_labels(self, name: str, y: torch.Tensor | None, *args: Any) -> Any:
        """self.<name>(*args, y=y) where there are labels and the family's hook takes them; self.<name>(*args)
        otherwise (a family's hook written without y, as before the labels reached it)."""
        hook = getattr(self, name)
        if y is None:
            return hook(*args)
        function, takes = type(self)._label_hooks[name]
        if getattr(type(self), name) is not function or name in self.__dict__:  # replaced since the class was made
            takes = hook_takes_labels(hook)
        return hook(*args, y=y) if takes else hook(*args)

    # The three hooks below take the items' labels y where the model is label-conditioned (None otherwise): a
    # prior that takes the label (prior_given) is the one the KL is against. A family's own hook written without
    # y (as before labels reached them) is called without; a family whose prior takes the label must take y in
    # every one of them it writes (build_model refuses it otherwise).
    def closed_form_kl(self, qz: Distribution, y: torch.Tensor | None = None) -> torch.Tensor | None:
        """KL(q(z|x) || p(z)) per example (B,) (p(z | y) where the prior takes the label) where torch knows it in
        closed form for this pair, else None."""
        try:
            return kl_divergence(qz, self.prior_for(y, qz.batch_shape[0]) if qz.batch_shape else self.prior())
        except NotImplementedError:
            return None

    def kl(self, qz: Distribution, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """KL(q(z|x) || p(z)) per example (B,) (p(z | y) where the prior takes the label): closed form where one
        exists, else the Monte Carlo estimate log q(z|x) - log p(z) at the draw z (unbiased)."""
        exact = self._with_labels("closed_form_kl", y, qz)
        if exact is not None:
            return exact
        prior = self.prior_for(y, qz.batch_shape[0]) if qz.batch_shape else self.prior()
        return qz.log_prob(z) - prior.log_prob(z)

    def regularizer_terms(self, qz: Distribution, z: torch.Tensor,
                          y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The regularizer's named parts per example (B,), summed into the objective with weight beta * kl_scale.
        A hierarchical family reports one per layer (kl_z1, kl_z2)."""
        return {"kl": self._with_labels("kl", y, qz, z)}

    def regularizer_sizes(self) -> dict[str, int]:
        """The latent dimensions each regularizer term covers (free bits give a term size * free_bits nats)."""
        return {"kl": self.latent_dim}

    def regularizer_mean(self, regularizers: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The batch mean of the regularizer, each term at least free_bits nats per dimension of its layer while
        training (max(floor, batch mean): no gradient to a term below its floor; no host sync)."""
        total = None
        floor_per_dim = self.config.free_bits if self.training else 0.0
        sizes = self.regularizer_sizes() if floor_per_dim > 0 else {}
        for name, term in regularizers.items():
            mean = term.mean()
            if floor_per_dim > 0:
                floor = floor_per_dim * sizes[name]
                mean = torch.where(_whole_batch_mean(mean.detach()) < floor, mean.new_tensor(floor), mean)
            total = mean if total is None else total + mean
        return total if total is not None else torch.zeros((), device=self.device)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_scale: float = 1.0) -> Output:
        """The negative ELBO with one reparameterised draw: recon + beta * kl_scale * sum(regularizer_terms)."""
        qz = self.encode(x, y)
        z = qz.rsample()
        recon = self.likelihood.nll(self.decoder_params(z, y), x)  # (B,) = -decode(z, y).log_prob(x)
        regularizers = self._with_labels("regularizer_terms", y, qz, z)
        regularizer = _total(regularizers.values(), recon)
        if self.config.free_bits > 0 and self.training:
            loss = recon.mean() + (self.config.beta * kl_scale) * self.regularizer_mean(regularizers)
        else:
            loss = (recon + (self.config.beta * kl_scale) * regularizer).mean()
        elbo = -(recon + regularizer) if self.has_bound else None
        return Output(loss=loss, terms={"recon": recon, **regularizers}, elbo=elbo)

    def importance_terms(self, x: torch.Tensor, k: int, y: torch.Tensor | None = None,
                         noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """For z_k ~ q(z|x): log p(x|z_k) and log q(z_k|x) - log p(z_k), each (K, B).

        noise (K, B, *noise_shape), optional: the posterior's standard noise, for callers that fix each item's
        draws (the evaluator, so results do not depend on batching); else drawn here.
        """
        return self._draws(x, k, y, noise)[1:]

    def _draws(self, x: torch.Tensor, k: int, y: torch.Tensor | None = None, noise: torch.Tensor | None = None,
               held: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """importance_terms with the draws z (K, B, *event) first; `held`: log q from posterior_held."""
        if not self.has_bound:
            raise VaekitError(f"a model of family {self.family!r} defines no likelihood bound, so no ELBO or NLL: "
                              "evaluate its reconstruction and latent space only (--iw-samples 0)")
        if held:
            params = self.encoder_params(x, y)
            qz = self.posterior(params)
        else:
            qz = self.encode(x, y)
        if noise is None:
            noise = draw_noise(qz, (k,))
        elif tuple(noise.shape) != (k, *qz.batch_shape, *noise_shape(qz)):
            raise VaekitError(f"noise of shape {tuple(noise.shape)} for {k} draws of this posterior: expected "
                              f"{(k, *qz.batch_shape, *noise_shape(qz))}")
        z = rsample_with(qz, noise)  # (K, B, *event)
        # K*B codes flattened sample-major (row k*B + b is item b): item b's label, K times in item order
        ky = None if y is None or not self.num_labels else self.expand_labels(y, x.shape[0]).repeat(k)
        decoded = self.decoder_params(z.flatten(0, 1), ky)  # batch (K*B,)
        log_px = self.likelihood.log_prob_samples(decoded, x)  # (K, B), x broadcast rather than copied K times
        log_q = (self.posterior_held(params) if held else qz).log_prob(z)
        prior = self.prior_for(y, x.shape[0]) if self._objective_takes_labels else _prior_of(self)  # (B,) or ()
        return z, log_px, log_q - prior.log_prob(z)

    def posterior_held(self, params: torch.Tensor) -> Distribution:
        """q(z|x) from the encoder's output with every parameter of the model held fixed: its log_prob passes
        gradients to z only (the doubly reparameterised gradient's log q). A family whose posterior uses parameters
        beyond the encoder's output (a network between layers) holds those too."""
        return self.posterior(params.detach())

    def importance_weighted(self, x: torch.Tensor, k: int, y: torch.Tensor | None, kl_scale: float,
                            gradient: str = "standard") -> Output:
        """The K-sample IWAE bound (Burda et al. 2016, eq. 8) as a training objective, its prior-posterior ratio
        weighed by beta * kl_scale (warm-up). `gradient`: "standard", the bound's own gradient; or "dreg", the doubly
        reparameterised one (Tucker et al. 2019): log q is held (its parameters get no score-function term), and what
        reaches q's parameters through the draws z_k is weighed by w_k (1 - a (1 - w_k)) in place of the bound's w_k,
        where w are the normalised importance weights and a = beta * kl_scale (w_k^2 at a = 1). The same expected
        gradient for every parameter at a lower variance; at the same draws, exactly the bound's own for the
        parameters q's draws do not depend on (the decoder's). At K = 1 it is the sticking-the-landing gradient
        (Roeder et al. 2017). The loss's value is the bound either way."""
        if gradient not in IW_GRADIENTS:
            raise VaekitError(f"gradient {gradient!r} for the K-sample bound: choose from {', '.join(IW_GRADIENTS)}")
        a = self.config.beta * kl_scale
        held = gradient == "dreg" and torch.is_grad_enabled()  # no gradient (validation): the bound alone
        z, log_px, log_ratio = self._draws(x, k, y, held=held)  # (K, B, *event), (K, B), (K, B)
        log_w = log_px - a * log_ratio
        bound = torch.logsumexp(log_w, 0) - math.log(k)  # (B,): its backward hands each log w_k the weight w_k
        recon, kl = -log_px.mean(0), log_ratio.mean(0)  # the K-sample estimates of the ELBO's parts
        if held and z.requires_grad:
            w = torch.softmax(log_w.detach(), 0)  # (K, B)
            reweigh = (1.0 - a * (1.0 - w)).reshape(*w.shape, *(1,) * (z.dim() - 2))
            z.register_hook(lambda grad: grad * reweigh)  # every use of z: the decoder, log p(z), the held log q
        return Output(loss=-bound.mean(), terms={"bound": -bound, "recon": recon, "kl": kl}, elbo=-(recon + kl))

    def log_importance_weights(self, x: torch.Tensor, k: int, y: torch.Tensor | None = None,
                               noise: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x|z_k) + log p(z_k) - log q(z_k|x), (K, B): the IWAE bound, its training and the NLL use it."""
        log_px, log_ratio = self.importance_terms(x, k, y, noise)
        return log_px - log_ratio

    # ---- using a trained model -------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_prior(self, n: int, generator: torch.Generator | None = None,
                     y: torch.Tensor | int | None = None) -> torch.Tensor:
        """n draws z ~ p(z), reproducible from `generator`: (n, *latent shape). A label-conditioned model takes y
        (one label for all, or one per draw), which a family whose prior takes the label draws given (prior_given);
        the others' draws do not depend on it. A diagonal Gaussian prior draws its noise on the CPU, the same on
        every device; other priors draw on the model's device, seeded from it."""
        labels = self.label_indices(y, n) if y is not None or self.prior_takes_labels else None
        given = labels is not None and self.prior_takes_labels
        pz = self.prior_given(labels) if given else self.prior()
        # a prior given the labels is one distribution for each of the n draws (batch (n,)): one draw of it;
        # one that is the same for every label (batch ()) is drawn n times
        shape = () if given and tuple(pz.batch_shape) == (n,) else (n,)
        if isinstance(pz, DiagonalGaussian):  # the common case: noise from the generator, on the CPU
            return pz.rsample_with(draw_noise(pz, shape, generator=generator))
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return pz.sample(shape)

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | int | None = None,
               generator: torch.Generator | None = None, draw: bool = False) -> torch.Tensor:
        """n prior draws decoded to the likelihood mean: (n, *data_shape); with draw=True, x ~ p(x|z) instead (its
        noise seeded from `generator` too). A label-conditioned model takes y: one label for all, or one per draw."""
        px = self.decode(draw_prior(self, n, generator, y), y)  # (the decoder checks the labels)
        if not draw:
            return px.mean
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))  # torch's distributions take no generator
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            return px.sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Decode the code of each item: the model's best single reconstruction."""
        return self.decode_code(self.code(self.encode(x, y)), y).mean

    # ---- the Hugging Face Hub (vaekit.integrations.hub, which imports huggingface_hub when it is needed) ---------
    def save_pretrained(self, directory: str | Path, *, config: RunConfig | None = None,
                        metrics: Mapping[str, float] | None = None, repo_id: str | None = None) -> HubFolder:
        """A Hub-ready folder: config.json + model.safetensors (as a run folder holds them), README.md (a model card
        with the data, family, `metrics` and how to load) and samples.png. `config`: the run's settings (default:
        run_config). Upload it with `hf upload USER/REPO DIRECTORY`, or use push_to_hub."""
        from .integrations import hub

        return hub.save_pretrained(self, directory, config=config, metrics=metrics, repo_id=repo_id)

    @classmethod
    def from_pretrained(cls: type[M], source: str | Path, *, revision: str | None = None,
                        cache_dir: str | Path | None = None, token: str | bool | None = None,
                        local_files_only: bool = False, force_download: bool = False,
                        device: str | torch.device = "cpu") -> M:
        """A model from a folder (a run or Hub folder) or a Hub repository ("namespace/name", or
        "hf://namespace/name@revision"; downloaded through huggingface_hub's cache: pip install 'vaekit[hub]'), in
        eval mode. It is the family its config.json names, whichever class this is called on (Model.from_pretrained
        loads any); called on a family, a model of another family is an error."""
        from .integrations import hub

        model = hub.from_pretrained(source, revision=revision, cache_dir=cache_dir, token=token,
                                    local_files_only=local_files_only, force_download=force_download, device=device)
        if cls is not Model and model.family != cls.family:  # a family's subclass (hvae, tcvae: VAEs) is another
            raise VaekitError(f"{source} holds a {model.family!r} model, not a {cls.family!r} one: load it with "
                              "vaekit.Model.from_pretrained, which returns the family its config.json names")
        return model

    def push_to_hub(self, repo_id: str, *, config: RunConfig | None = None,
                    metrics: Mapping[str, float] | None = None, private: bool | None = None,
                    token: str | bool | None = None, revision: str | None = None,
                    commit_message: str | None = None, create_pr: bool = False) -> str:
        """Create the Hub repository `repo_id` if it is new and upload the save_pretrained folder to it in one commit
        (huggingface_hub's HfApi: pip install 'vaekit[hub]'). Returns the commit's URL."""
        from .integrations import hub

        return hub.push_to_hub(self, repo_id, config=config, metrics=metrics, private=private, token=token,
                               revision=revision, commit_message=commit_message, create_pr=create_pr)


def iw_gradient_setting(family: str, note: str = "") -> Any:
    """The setting of a K-sample family's gradient estimator (see Model.importance_weighted); `note` ends its help."""
    return setting("standard", f"the {family} family's gradient of its K-sample bound: standard, or dreg, doubly "
                   f"reparameterised (Tucker et al. 2019): the same expectation, lower variance for the encoder{note}",
                   choices=IW_GRADIENTS)


IW_GRADIENTS = ("standard", "dreg")


def _whole_batch_mean(mean: torch.Tensor) -> torch.Tensor:
    """A batch mean over every process's share (several processes: each holds a share of the batch, and the floor
    of free bits is decided on the whole batch, as one process decides it; the averaged gradients then are one
    process's). One process: the mean itself."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return mean
    total = mean.clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


def _total(values, like: torch.Tensor) -> torch.Tensor:
    """The sum of per-example terms (zeros like `like` for none), without sum()'s extra 0 + tensor."""
    total = None
    for value in values:
        total = value if total is None else total + value
    return torch.zeros_like(like) if total is None else total


def _full_precision(t: torch.Tensor) -> torch.Tensor:
    """Network outputs under bf16 autocast come out in bfloat16; the distributions and the loss work in float32."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


Model._label_hooks = _label_hooks(Model)  # (its subclasses get theirs from __init_subclass__)
MODEL_FAMILIES: dict[str, type[Model]] = {}


def register_family(name: str) -> Callable[[type[Model]], type[Model]]:
    """Register a Model subclass as family `name` (--model NAME), with its settings if it declares any."""
    def add(cls: type[Model]) -> type[Model]:
        if not (isinstance(cls, type) and issubclass(cls, Model)):
            raise TypeError(f"register_family({name!r}) takes a subclass of vaekit.Model, got {cls!r}")
        check_unclaimed(MODEL_FAMILIES, name, cls, "family")
        register_settings(name, cls.Settings, "family")  # first: a name that cannot be used registers nothing
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

    def closed_form_kl(self, qz: Distribution, y: torch.Tensor | None = None) -> torch.Tensor | None:
        """KL(N(m, s^2) || N(0, 1)) = sum_d (m^2 + s^2 - 1) / 2 - log s: what kl_divergence gives against the
        standard normal prior, in fewer passes. A subclass with another prior or posterior gets the generic KL."""
        if type(self).prior is not Model.prior or self.prior_takes_labels or \
                not isinstance(getattr(qz, "base_dist", None), Normal):
            return super().closed_form_kl(qz, y)
        loc, scale = qz.base_dist.loc, qz.base_dist.scale
        return (0.5 * (loc.square() + scale.square() - 1.0) - scale.log()).sum(-1)


@register_family("iwae")
class IWAE(VAE):
    """Trains on the K-sample importance-weighted bound (Burda et al. 2016, eq. 8) through the same
    importance weights the evaluator uses; K = 1 is the VAE's ELBO. Costs about K decoder passes per item."""

    takes_free_bits = False  # the bound has no separate KL term to floor

    @dataclass(frozen=True)
    class Settings:
        k: int = setting(5, "importance samples per item in the iwae family's training bound",
                         check=(lambda v: 1 <= v <= 1000, "between 1 and 1000 (each sample is a decoder pass)"))
        gradient: str = iw_gradient_setting("iwae", "; at K = 1, sticking the landing")

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_scale: float = 1.0) -> Output:
        return self.importance_weighted(x, self.settings.k, y, kl_scale, self.settings.gradient)


@register_family("ae")
class AE(Model):
    """A plain autoencoder: a deterministic code and no regularizer, hence no likelihood bound."""

    posterior_params = 1
    has_bound = False
    codes_follow_prior = False
    takes_free_bits = False  # no KL to floor
    has_regularizer = False  # nothing for beta or a KL warm-up to weigh

    @property
    def prior_text(self) -> str:
        return "N(0, I), which an autoencoder was never trained towards"

    def posterior(self, params: torch.Tensor) -> Distribution:
        return PointMass(params)

    def regularizer_terms(self, qz: Distribution, z: torch.Tensor,
                          y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return {}


def hook_missing_labels(model: Model) -> str | None:
    """The objective hook a family writes without y although the model's prior takes the label
    (prior_takes_labels: an hvae's with a vamp top prior, not with N(0, I)), so that its KL would be against the
    prior without the label; None where there is none."""
    if not model.prior_takes_labels:
        return None
    cls = type(model)
    return next((name for name in LABELLED_HOOKS if getattr(cls, name) is not getattr(Model, name)
                 and not hook_takes_labels(getattr(cls, name))), None)


def draw_prior(model: Model, n: int, generator: torch.Generator | None = None,
               y: torch.Tensor | int | None = None) -> torch.Tensor:
    """model.sample_prior(n, generator), given the labels y where the model's prior takes them (prior_takes_labels)
    and without them otherwise: a family may override sample_prior(self, n, generator), as it was before y, and
    the draws of a prior that takes no label do not depend on it."""
    return model.sample_prior(n, generator, y) if model.prior_takes_labels else model.sample_prior(n, generator)


_HELD = threading.local()  # the priors held_prior built, by model, for this thread only


@contextlib.contextmanager
def held_prior(model: Model):
    """Within: importance_terms of a family with a fixed_prior uses one prior built on entry, in this thread (other
    threads, copies and pickles of the model see the family's own method). For an evaluation, its weights fixed."""
    held = vars(_HELD).setdefault("priors", {})
    if not type(model).fixed_prior or id(model) in held:
        yield
        return
    held[id(model)] = model.prior()
    try:
        yield
    finally:
        held.pop(id(model), None)


def _prior_of(model: Model) -> Distribution:
    held = getattr(_HELD, "priors", None)
    return held[id(model)] if held and id(model) in held else model.prior()


from . import hvae, tcvae, vamp, vqvae  # noqa: E402,F401  (families in their own files, registered on import)

_PLUGINS_LOADED = False


def load_plugins() -> None:
    """Import the modules that installed packages name in the entry-point group "vaekit.plugins" (once): they
    register families and likelihoods, so that `--model NAME` and run folders of those families work."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    from importlib.metadata import entry_points

    from .config import COMPONENT_KINDS, COMPONENT_SETTINGS
    from .distributions import LIKELIHOODS

    registries = (MODEL_FAMILIES, LIKELIHOODS, COMPONENT_KINDS, COMPONENT_SETTINGS)
    for entry in entry_points(group="vaekit.plugins"):
        held = [set(registry) for registry in registries]
        try:
            entry.load()
        except Exception as exc:  # noqa: BLE001  (one broken plugin must not take every command down with it)
            for registry, names in zip(registries, held):  # what it registered before failing goes too
                for name in set(registry) - names:
                    del registry[name]
            log.warning("the vaekit plugin %r (%s) was not loaded: %s", entry.name, entry.value,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            continue
        _PLUGIN_PACKAGES.add(entry.module.split(".")[0])
        _PLUGIN_CLASSES.update(registry[name] for registry, names in zip(registries[:2], held) for name in
                               set(registry) - names)  # the families and likelihoods it registered


_PLUGIN_PACKAGES: set[str] = set()  # the top-level packages of the loaded plugins' modules
_PLUGIN_CLASSES: set[type] = set()  # the families and likelihoods registered while the plugins loaded


def check_launchable(config: ModelConfig, processes: int) -> None:
    """Refuse --nproc for a family or likelihood that the processes it starts (python -m vaekit) would not know:
    one registered by the calling script or a module of its own, not by vaekit or an installed plugin."""
    from .distributions import LIKELIHOODS

    load_plugins()
    for kind, cls in (("family", MODEL_FAMILIES.get(config.family)),
                      ("likelihood", LIKELIHOODS.get(config.likelihood))):
        module = getattr(cls, "__module__", "vaekit")
        if cls in _PLUGIN_CLASSES or module.split(".")[0] in ("vaekit", *_PLUGIN_PACKAGES):
            continue
        name = config.family if kind == "family" else config.likelihood
        raise VaekitError(f"the {kind} {name!r} is registered by {module}, which the {processes} processes --nproc "
                          f"starts (python -m vaekit) do not import: install it as a plugin (entry-point group "
                          f"vaekit.plugins), or train in one process")


def check_processes(config: ModelConfig, processes: int, batch_size: int | None = None) -> None:
    """Refuse a family that cannot train in `processes` processes (or on batches of `batch_size`), before a run
    folder is made."""
    family = MODEL_FAMILIES.get(config.family)
    reason = family.processes_refused(config.settings(config.family)) if family and processes > 1 else None
    if not reason and family and batch_size is not None:
        reason = family.batch_refused(config.settings(config.family), batch_size)
    if reason:
        raise VaekitError(reason)


def model_shapes(config: ModelConfig, fix: str = "choose a smaller --latent-dim, --hidden-dims or --conv-channels",
                 copies: int = 1, what: str = "the model") -> dict[str, tuple[int, ...]] | None:
    """The names and shapes of the state of `config`'s model, built on the meta device (no memory taken, the random
    numbers untouched), or None for a family that cannot be built so (a plugin computing with its tensors). A model
    whose sizes overflow, or that needs more than half of this machine's memory, is a VaekitError before anything is
    allocated (before, the weights' initialisation filled the memory first); `fix` ends its message. `copies`: how
    many times its state is held (training: the weights, their gradients and Adam's two moments), `what` that."""
    from .data.safe import check_memory

    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            state = MODEL_FAMILIES[config.family](config).state_dict()
    except Exception as exc:  # noqa: BLE001  (a family that cannot be built on the meta device is built as it is)
        if "overflow" in str(exc).lower() and isinstance(exc, (RuntimeError, OverflowError, TypeError, ValueError)):
            raise VaekitError(f"the model's sizes are beyond any machine's (their products overflow): {fix}") from None
        return None
    check_memory(copies * sum(tensor.numel() * tensor.element_size() for tensor in state.values()), what, fix)
    return {name: tuple(tensor.shape) for name, tensor in state.items()}


def build_model(config: ModelConfig, saved: bool = False) -> Model:
    """The model of `config`, its settings checked. saved: the settings of a run already trained (a load, a resume),
    which a check added since (a family's objective hooks that miss the label its prior takes) warns of, not
    refuses: the run trained so, and its folder must still open."""
    if config.family not in MODEL_FAMILIES:
        load_plugins()
    if config.family not in MODEL_FAMILIES:
        raise VaekitError(f"unknown model family {config.family!r}: use one of {', '.join(sorted(MODEL_FAMILIES))}, "
                          "or import the module that registers it (vaekit.register_family) first")
    if config.likelihood == "auto":
        raise VaekitError("model.likelihood is 'auto': resolve it from the data first (vaekit.runs.resolve_config)")
    if not config.data_shape:
        raise VaekitError("model.data_shape is empty: build the model from a data set (vaekit fills it in)")
    validate_model(config)  # the checks train() makes of every model setting, for a config built in Python
    if config.free_bits > 0 and not MODEL_FAMILIES[config.family].takes_free_bits:
        raise VaekitError(f"the {config.family} family's objective has no KL term for free bits to floor: drop "
                          "--free-bits, or use a family trained on the ELBO (vae, vamp, hvae)")
    if config.condition == "label" and not MODEL_FAMILIES[config.family].takes_labels:
        raise VaekitError(f"the {config.family} family cannot be conditioned on labels: drop --condition label, or "
                          "use --model vae for a label-conditioned model")
    if config.condition == "label" and (reason := MODEL_FAMILIES[config.family].labels_refused(
            config.settings(config.family))):
        raise VaekitError(reason)
    if config.condition == "label" and config.num_labels < 2:
        raise VaekitError("a label-conditioned model needs model.num_labels >= 2 (vaekit fills it in from labelled "
                          "data): train on data with labels, or drop --condition label")
    model_shapes(config)  # sizes that overflow, or more than memory holds, said before anything is allocated
    try:
        model = MODEL_FAMILIES[config.family](config)
    except (RuntimeError, MemoryError) as exc:  # the allocator's "can't allocate memory" (sizes pass their checks)
        if "alloc" not in str(exc).lower() and not isinstance(exc, MemoryError):
            raise
        raise VaekitError(f"the model does not fit in memory ({str(exc).splitlines()[0][:80]}): choose a smaller "
                          "--latent-dim, --hidden-dims or --conv-channels") from None
    if hook := hook_missing_labels(model):
        family = config.family
        if not saved:
            raise VaekitError(f"the {family} family's prior takes the label (prior_given), but its {hook} does not "
                              f"take the labels, so its KL would be against the prior without them: give {hook} a "
                              "y=None parameter and use prior_for(y, batch), or drop --condition label")
        log.warning("the %s family's prior takes the label (prior_given), but its %s does not take the labels: this "
                    "run is opened as it trained, its KL and importance weights against the prior without them (give "
                    "%s a y=None parameter for new runs)", family, hook, hook)
        model._trained_without_labels = True  # prior_for gives prior(): its bound and NLL as when it trained
    return model

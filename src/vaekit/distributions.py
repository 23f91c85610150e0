"""Likelihoods p(x|z) (objects that turn decoder outputs into distributions), by registry, and latent distributions
that draw their own noise."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import (
    Bernoulli, ContinuousBernoulli, Distribution, Independent, Normal, constraints,
)

from .config import check_unclaimed, positive, register_settings, setting
from .errors import VaekitError

# Log-variance bounds: wide enough never to bind in healthy training, tight enough that exp() cannot overflow.
LOGVAR_MIN, LOGVAR_MAX = -20.0, 10.0
# Smallest learned observation std: keeps the Gaussian log-density finite on constant pixels.
MIN_STD = 1e-3
LOG_2PI = math.log(2 * math.pi)


# ---- likelihoods -------------------------------------------------------------------------------------------

class Likelihood:
    """Maps decoder outputs (B, param_channels * C, ...) to a distribution with event shape = data shape.

    A likelihood with settings declares them as a frozen dataclass `Settings` (model.<name>.<field>).
    Subclasses give `log_prob_elements`, the log-density of each element, broadcasting over leading dims.
    """

    name: ClassVar[str]
    Settings: ClassVar[type | None] = None
    param_channels: int = 1

    def __init__(self, data_shape: tuple[int, ...], settings=None) -> None:
        self.data_shape = tuple(data_shape)
        self.event_dims = len(self.data_shape)
        self.settings = settings

    def __call__(self, params: torch.Tensor) -> Distribution:
        raise NotImplementedError

    def log_prob_elements(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x_d | params) per element; params (..., P*C, ...) and x (..., C, ...) broadcast over leading dims."""
        return self(params).base_dist.log_prob(x)  # type: ignore[attr-defined]

    def check_support(self, x: torch.Tensor, what: str = "data") -> None:
        """Raise a VaekitError naming the fix when x lies outside the likelihood's support."""

    def is_mass_on(self, x: torch.Tensor) -> bool:
        """Whether log p(x|z) is the log of a probability (so -log p(x) / (D ln 2) is a code length in bits/dim);
        a density's is not."""
        return False

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per example (B,) from decoder outputs: the training loss's reconstruction term."""
        return -self.log_prob_elements(params, x.reshape(params.shape[0], *self.data_shape)).flatten(1).sum(-1)

    def log_prob_samples(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z_k) for params = decoder(z) with z (K, B, ...) flattened sample-major to (K*B, ...): (K, B).
        x (B, ...) is broadcast over the K samples, not copied."""
        batch = x.shape[0]
        params = params.unflatten(0, (-1, batch))  # (K, B, P*C, ...)
        return self.log_prob_elements(params, x).flatten(2).sum(-1)

    def _split(self, params: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
        # (..., P*C, H, W) -> P tensors of (..., C, H, W): parameters are stacked along the channel axis.
        axis = params.dim() - self.event_dims
        return tuple(params.unflatten(axis, (parts, -1)).unbind(axis))

    def _range_check(self, x: torch.Tensor, what: str, alternative: str) -> None:
        low, high = float(x.min()), float(x.max())
        if low < 0 or high > 1:
            raise VaekitError(f"the {self.name} likelihood needs {what} in [0, 1], got values in [{low:g}, {high:g}]: "
                              f"{alternative}, or rescale the data to [0, 1]")


LIKELIHOODS: dict[str, type[Likelihood]] = {}


def register_likelihood(name: str) -> Callable[[type[Likelihood]], type[Likelihood]]:
    """Register a likelihood class under `name` (--likelihood NAME), with its settings if it declares any."""
    def add(cls: type[Likelihood]) -> type[Likelihood]:
        check_unclaimed(LIKELIHOODS, name, cls, "likelihood")
        register_settings(name, cls.Settings, "likelihood")  # first: a name that cannot be used registers nothing
        cls.name = name
        LIKELIHOODS[name] = cls
        return cls

    return add


def build_likelihood(name: str, data_shape: tuple[int, ...], settings=None) -> Likelihood:
    if name not in LIKELIHOODS:
        raise VaekitError(f"unknown likelihood {name!r}: use one of {', '.join(sorted(LIKELIHOODS))}")
    cls = LIKELIHOODS[name]
    if cls.Settings is not None and settings is None:
        settings = cls.Settings()
    return cls(data_shape, settings)


@register_likelihood("bernoulli")
class BernoulliLikelihood(Likelihood):
    """Bernoulli on logits; log p(x|z) = -BCE-with-logits. For binary data (also used for grey levels in [0, 1])."""

    def __call__(self, params: torch.Tensor) -> Distribution:
        return Independent(Bernoulli(logits=params, validate_args=False), self.event_dims)

    def log_prob_elements(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x * params - F.softplus(params)

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # One fused, stable kernel (max(l, 0) - x l + log1p(exp(-|l|))) and one sum, no distribution objects.
        return F.binary_cross_entropy_with_logits(params, x.reshape_as(params), reduction="none").flatten(1).sum(-1)

    def log_prob_samples(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # log p(x|z) = -sum_d BCE(l_d, x_d): one fused pass over the K samples' logits, x broadcast, not tiled. Each
        # term is near 0 where the decoder is confident and right; sum x l - sum softplus(l), two large sums
        # subtracted, lost up to 0.1 nats per item in float32 at confident logits (and ran 3-4x slower here).
        batch = x.shape[0]
        logits = params.reshape(-1, batch, x[0].numel())  # (K, B, D)
        targets = x.reshape(1, batch, -1).to(logits.dtype).expand_as(logits)
        return -F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(-1)

    def check_support(self, x: torch.Tensor, what: str = "data") -> None:
        self._range_check(x, what, "use --likelihood gaussian")

    def is_mass_on(self, x: torch.Tensor) -> bool:
        # On grey levels the Bernoulli "log-likelihood" is a cross-entropy, not the log of a probability of x.
        return bool(((x == 0) | (x == 1)).all())


@register_likelihood("gaussian")
class GaussianLikelihood(Likelihood):
    """Diagonal Gaussian: a fixed std, or a learned one per output (softplus, floored at MIN_STD). A density:
    its log-likelihoods are not bits/dim."""

    @dataclass(frozen=True)
    class Settings:
        std: float | None = setting(None, "fixed observation std of the gaussian likelihood (default: learned per "
                                    "output)", check=(positive, "> 0"))

    def __init__(self, data_shape: tuple[int, ...], settings=None) -> None:
        super().__init__(data_shape, settings)
        self.std = settings.std if settings is not None else None
        self.param_channels = 1 if self.std is not None else 2

    def _loc_scale(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
        if self.std is not None:
            return params, self.std
        loc, raw_scale = self._split(params, 2)
        return loc, F.softplus(raw_scale) + MIN_STD

    def __call__(self, params: torch.Tensor) -> Distribution:
        loc, scale = self._loc_scale(params)
        scale = torch.full_like(loc, scale) if isinstance(scale, float) else scale
        return Independent(Normal(loc, scale, validate_args=False), self.event_dims)

    def log_prob_elements(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        loc, scale = self._loc_scale(params)
        log_scale = math.log(scale) if isinstance(scale, float) else scale.log()
        return -0.5 * ((x - loc) / scale).square() - log_scale - 0.5 * math.log(2 * math.pi)


def _log_normaliser(logits: torch.Tensor) -> torch.Tensor:
    """log C(lambda) of the continuous Bernoulli with lambda = sigmoid(l): C = l / tanh(l / 2) (= 2 at l = 0).

    Near l = 0 the ratio is 0/0 in floating point; its series 2 + l^2/6 - l^4/360 + ... is used there instead
    (Loaiza-Ganem & Cunningham 2019, eq. 7, written in logits)."""
    a = logits.abs()
    small = a < 1e-2
    safe = torch.where(small, torch.ones_like(a), a)
    exact = safe.log() - torch.tanh(0.5 * safe).log()
    l2 = logits.square()
    series = math.log(2.0) + torch.log1p(l2 / 12 - l2.square() / 720)
    return torch.where(small, series, exact)


def continuous_bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = x l - softplus(l) + log C(l) per element, in logits."""
    return x * logits - F.softplus(logits) + _log_normaliser(logits)


class StableContinuousBernoulli(ContinuousBernoulli):
    """torch's continuous Bernoulli (its mean, sampling) with the log-density in logits, exact for large |l|
    where torch clamps its probabilities."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return continuous_bernoulli_log_prob(self.logits, value)


@register_likelihood("continuous_bernoulli")
class ContinuousBernoulliLikelihood(Likelihood):
    """The continuous Bernoulli (Loaiza-Ganem & Cunningham 2019), a proper density on [0, 1] for grey levels:
    log p(x) = x l - softplus(l) + log C(l) on logits l. A density: its log-likelihoods are not bits/dim."""

    def __call__(self, params: torch.Tensor) -> Distribution:
        return Independent(StableContinuousBernoulli(logits=params, validate_args=False), self.event_dims)

    def log_prob_elements(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return continuous_bernoulli_log_prob(params, x)

    def check_support(self, x: torch.Tensor, what: str = "data") -> None:
        self._range_check(x, what, "use --likelihood gaussian")


class DiscretizedLogisticDistribution(Distribution):
    """Each element on the grid {0, 1/(n-1), ..., 1} (n = 2^bits) with probability the logistic(loc, scale) mass
    of its bin; the end bins take the tails (Salimans et al. 2017, without the mixture)."""

    arg_constraints: ClassVar[dict] = {}
    support = constraints.unit_interval

    def __init__(self, loc: torch.Tensor, log_scale: torch.Tensor, bits: int) -> None:
        self.loc, self.log_scale, self.levels = loc, log_scale, 2**bits - 1
        super().__init__(batch_shape=loc.shape, validate_args=False)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return discretized_logistic_log_prob(self.loc, self.log_scale, x, self.levels)

    @property
    def mean(self) -> torch.Tensor:
        # E[x] = sum_k x_k P(x_k) = (1/(n-1)) sum_{k=1}^{n-1} P(x >= x_k) = (1/(n-1)) sum_k sigmoid((loc - e_k) / s),
        # e_k the bin edges: one pass per edge, memory of one tensor.
        inverse_scale = torch.exp(-self.log_scale)
        total = torch.zeros_like(self.loc)
        for k in range(1, self.levels + 1):
            edge = (k - 0.5) / self.levels
            total += torch.sigmoid((self.loc - edge) * inverse_scale)
        return total / self.levels

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            shape = self._extended_shape(sample_shape)
            u = torch.rand(shape, device=self.loc.device).clamp(1e-6, 1 - 1e-6)
            x = self.loc + torch.exp(self.log_scale) * (u.log() - torch.log1p(-u))
            return (x.clamp(0, 1) * self.levels).round() / self.levels


def discretized_logistic_log_prob(loc: torch.Tensor, log_scale: torch.Tensor, x: torch.Tensor,
                                  levels: int) -> torch.Tensor:
    """log P(x) per element, in log space throughout: sigma(a) - sigma(b) = sigma(a) sigma(-b) (1 - e^{b-a}) for
    the bin [b, a] (standardised edges), so no difference of two nearly equal probabilities is ever formed."""
    inverse_scale = torch.exp(-log_scale)
    half = 0.5 / levels
    upper = (x + half - loc) * inverse_scale  # a
    lower = (x - half - loc) * inverse_scale  # b
    top, bottom = x >= 1 - half, x <= half  # the end bins take the tails: a = +inf, b = -inf
    log_a = torch.where(top, torch.zeros_like(upper), F.logsigmoid(upper))
    log_not_b = torch.where(bottom, torch.zeros_like(lower), F.logsigmoid(-lower))
    # log(1 - e^-t), t = (1/s) / levels the bin's standardised width, from log t: for small t it is log t - t/2 (to
    # t^2/24), where e^-t rounds to 1 and 1/s to 0 (a large scale); each branch clamped so neither overflows.
    log_t = -log_scale - math.log(levels)
    width = torch.where(log_t < -15, log_t.clamp_max(-15) - 0.5 * log_t.clamp_max(-15).exp(),
                        torch.log(-torch.expm1(-log_t.clamp_min(-15).exp())))
    return log_a + log_not_b + torch.where(top | bottom, torch.zeros_like(width), width)


@register_likelihood("discretized_logistic")
class DiscretizedLogisticLikelihood(Likelihood):
    """8-bit (or `bits`-bit) images as a discretised logistic per element, location and log-scale decoded.
    A probability mass: its NLL in bits/dim is comparable with the literature's."""

    param_channels = 2

    @dataclass(frozen=True)
    class Settings:
        bits: int = setting(8, "bit depth of the data for the discretized_logistic likelihood (2^bits levels)",
                            check=(lambda v: 1 <= v <= 16, "between 1 and 16"))

    # Log-scale floor: a bin of width 1/255 needs scales well below it; exp(-7) ~ 1e-3.
    MIN_LOG_SCALE = -7.0

    def _parts(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_scale = self._split(params, 2)
        return torch.sigmoid(loc), log_scale.clamp_min(self.MIN_LOG_SCALE)

    def __call__(self, params: torch.Tensor) -> Distribution:
        loc, log_scale = self._parts(params)
        return Independent(DiscretizedLogisticDistribution(loc, log_scale, self.settings.bits), self.event_dims)

    def log_prob_elements(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        loc, log_scale = self._parts(params)
        return discretized_logistic_log_prob(loc, log_scale, x, 2**self.settings.bits - 1)

    def is_mass_on(self, x: torch.Tensor) -> bool:
        return True  # check_support keeps x on its grid

    def check_support(self, x: torch.Tensor, what: str = "data") -> None:
        self._range_check(x, what, "use --likelihood gaussian")
        levels = 2**self.settings.bits - 1
        off = ((x * levels - (x * levels).round()).abs() > 1e-3).sum()
        if off:
            raise VaekitError(
                f"the discretized_logistic likelihood needs {what} on the grid k/{levels} ({self.settings.bits}-bit), "
                f"but {int(off)} values lie between levels: set model.discretized_logistic.bits to the data's bit "
                "depth, or use --likelihood continuous_bernoulli for continuous grey levels"
            )



class TableDistribution(Distribution):
    """p(x|z) of one table row: independent columns (see TableLikelihood), event (width,) in the model's encoding."""

    arg_constraints: ClassVar[dict] = {}

    def __init__(self, likelihood: "TableLikelihood", params: torch.Tensor) -> None:
        self.likelihood, self.params = likelihood, params
        super().__init__(batch_shape=params.shape[:-1], event_shape=likelihood.data_shape, validate_args=False)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.likelihood.log_prob_elements(self.params, x).sum(-1)

    @property
    def mean(self) -> torch.Tensor:
        """Numeric columns: the Gaussian mean; binary: P(1); categorical: the class probabilities."""
        return self.likelihood.parts(self.params)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.likelihood.parts(self.params.expand(*sample_shape, *self.params.shape), draw=True)

    def column_errors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, columns): -log p(x_c|z) and the error of the most likely value (TableLikelihood.column_errors)."""
        return self.likelihood.column_errors(self.params, x)


@register_likelihood("table")
class TableLikelihood(Likelihood, nn.Module):
    """The columns of a table, each with its own likelihood (the ELBO sums their log-likelihoods): a Gaussian per
    numeric column, a Bernoulli on the logit of a 0/1 column, a categorical on the logits of a one-hot block. The
    columns (vaekit.data.tables) come from the data and are stored with the model.

    A numeric column's std is a learned parameter of the column (a calibrated decoder: it settles at the column's
    reconstruction error, Rybkin et al. 2021), or fixed. It is one number per column, not per row: a std decoded per
    row lets the model declare any column noise and stop reconstructing it."""

    @dataclass(frozen=True)
    class Settings:
        std: float | None = setting(None, "fixed std of the table likelihood's numeric columns, in standardised units "
                                    "(default: learned per column)", check=(positive, "> 0"))
        columns: tuple[dict, ...] = setting((), from_data=True)  # the table's columns (TableSchema.to_dicts), from
        # the data

    def __init__(self, data_shape: tuple[int, ...], settings=None) -> None:
        nn.Module.__init__(self)
        Likelihood.__init__(self, data_shape, settings)
        from .data.tables import TableSchema  # the one description of a table's columns

        self.schema = TableSchema.from_dicts(settings.columns if settings is not None else ())
        if self.data_shape != (self.schema.width,):
            raise VaekitError(f"the table likelihood's columns take {self.schema.width} values per row, but the data "
                              f"shape is {self.data_shape}: the run's config is damaged; train it again")
        self.std = settings.std
        kinds, column_of, start = {"numeric": [], "binary": [], "categorical": {}}, [], 0
        for index, column in enumerate(self.schema.columns):
            if column.kind == "categorical":
                kinds["categorical"].setdefault(column.width, []).append(list(range(start, start + column.width)))
            else:
                kinds[column.kind].append(start)
            column_of += [index] * column.width
            start += column.width
        # Index tensors follow the model to its device; they are derived from the columns, so not saved.
        self.register_buffer("numeric", torch.tensor(kinds["numeric"], dtype=torch.long), persistent=False)
        self.register_buffer("binary", torch.tensor(kinds["binary"], dtype=torch.long), persistent=False)
        # Categorical columns grouped by their number of categories, so each group is one (..., n, K) softmax.
        self.groups = len(kinds["categorical"])
        for i, blocks in enumerate(kinds["categorical"].values()):
            self.register_buffer(f"categorical_{i}", torch.tensor(blocks, dtype=torch.long), persistent=False)
        order = torch.cat([self.numeric, self.binary, *[block.flatten() for block in self.categorical]])
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel())  # the pieces, concatenated by kind, back in column order
        self.register_buffer("inverse", inverse, persistent=False)
        self.register_buffer("column_of", torch.tensor(column_of, dtype=torch.long), persistent=False)
        if self.std is None:
            self.log_std = nn.Parameter(torch.zeros(len(kinds["numeric"])))  # std 1 at first: the data's own

    @property
    def categorical(self) -> list[torch.Tensor]:
        return [getattr(self, f"categorical_{i}") for i in range(self.groups)]

    def __call__(self, params: torch.Tensor) -> Distribution:  # the Likelihood protocol, not nn.Module's forward
        return TableDistribution(self, params)

    def _log_std(self, like: torch.Tensor) -> torch.Tensor | float:
        if self.std is not None:
            return math.log(self.std)
        return self.log_std.clamp(math.log(MIN_STD), LOGVAR_MAX / 2).to(like.dtype)

    def _in_order(self, pieces: list[torch.Tensor]) -> torch.Tensor:
        joined = torch.cat([piece.flatten(-2) if i > 1 else piece for i, piece in enumerate(pieces)], -1)
        return joined.index_select(-1, self.inverse)

    def log_prob_elements(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        loc, value = params.index_select(-1, self.numeric), x.index_select(-1, self.numeric)
        log_std = self._log_std(loc)
        inverse_std = math.exp(-log_std) if isinstance(log_std, float) else torch.exp(-log_std)
        gaussian = -0.5 * ((value - loc) * inverse_std).square() - log_std - 0.5 * math.log(2 * math.pi)
        logits = params.index_select(-1, self.binary)
        bernoulli = x.index_select(-1, self.binary) * logits - F.softplus(logits)
        # A categorical column's log-probability is its one-hot block times the log-softmax: its one non-zero value.
        categorical = [x[..., block] * F.log_softmax(params[..., block], -1) for block in self.categorical]
        return self._in_order([gaussian, bernoulli, *categorical])

    def parts(self, params: torch.Tensor, draw: bool = False) -> torch.Tensor:
        """The distribution's mean (numeric location, P(1), class probabilities) or one draw, in column order."""
        loc = params.index_select(-1, self.numeric)
        p = torch.sigmoid(params.index_select(-1, self.binary))
        probabilities = [F.softmax(params[..., block], -1) for block in self.categorical]
        if draw:
            log_std = self._log_std(loc)
            loc = loc + (math.exp(log_std) if isinstance(log_std, float) else log_std.exp()) * torch.randn_like(loc)
            p = torch.bernoulli(p)
            probabilities = [F.one_hot(torch.distributions.Categorical(probs=q).sample(), q.shape[-1]).to(q.dtype)
                             for q in probabilities]
        return self._in_order([loc, p, *probabilities])

    def column_errors(self, params: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row and column (B, columns): -log p(x_c|z), and the error of the most likely value in the user's
        units: the squared error of a numeric column, 0/1 for a wrong binary or categorical value."""
        elements = self.log_prob_elements(params, x)
        nll = -torch.zeros(*elements.shape[:-1], len(self.schema.columns), dtype=elements.dtype,
                           device=elements.device).index_add_(-1, self.column_of, elements)
        mean = self.parts(params)
        errors, start = [], 0
        for column in self.schema.columns:
            got, want = mean[..., start : start + column.width], x[..., start : start + column.width]
            start += column.width
            if column.kind == "numeric":
                errors.append(((got - want)[..., 0] * column.std).square())
            elif column.kind == "binary":
                errors.append(((got[..., 0] >= 0.5).to(want.dtype) != want[..., 0]).to(want.dtype))
            else:
                errors.append((got.argmax(-1) != want.argmax(-1)).to(want.dtype))
        return nll, torch.stack(errors, -1)

    def check_support(self, x: torch.Tensor, what: str = "data") -> None:
        rows = x.reshape(-1, self.data_shape[0]).to(self.inverse.device)
        values = rows.index_select(-1, torch.cat([self.binary, *[block.flatten() for block in self.categorical]]))
        one_hot = all(bool((rows[:, block].sum(-1) == 1).all()) for block in self.categorical)
        if not (bool(((values == 0) | (values == 1)).all()) and one_hot):
            raise VaekitError(f"the table likelihood needs {what} in the table's encoding (0/1 for binary columns, "
                              "one-hot categories): read the table through vaekit (vaekit.data.tables)")

    def is_mass_on(self, x: torch.Tensor) -> bool:
        return self.numeric.numel() == 0  # a numeric column makes it a density

# ---- latent distributions -----------------------------------------------------------------------------------

class DiagonalGaussian(Independent):
    """N(loc, diag(scale^2)), batch (B,), event (D,), that draws its own noise: z = loc + scale * eps."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__(Normal(loc, scale, validate_args=False), 1, validate_args=False)

    @property
    def noise_shape(self) -> torch.Size:
        return self.event_shape

    def rsample_with(self, noise: torch.Tensor) -> torch.Tensor:
        """z for given standard normal noise (*S, B, D)."""
        return self.base_dist.loc + self.base_dist.scale * noise


def diagonal_gaussian(loc: torch.Tensor, logvar: torch.Tensor) -> DiagonalGaussian:
    """q(z|x) = N(loc, diag(exp(logvar))), batch (B,), event (D,)."""
    return DiagonalGaussian(loc, torch.exp(0.5 * logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)))


def standard_normal(latent_dim: int, like: torch.Tensor) -> DiagonalGaussian:
    zeros = like.new_zeros(latent_dim)
    return DiagonalGaussian(zeros, torch.ones_like(zeros))


class GaussianMixture(Distribution):
    """The equal-weight mixture (1/M) sum_m N(loc_m, diag(scale_m^2)) of M diagonal Gaussians (M, D): batch (),
    event (D,). The VampPrior's p(z). log_prob works in log-sum-exp over the components, a block of draws at a time
    (a block's (draws, M) densities never exceed BLOCK numbers), so importance sampling with thousands of draws fits
    in memory."""

    arg_constraints: ClassVar[dict] = {}
    has_rsample = False
    BLOCK = 1 << 22  # numbers in one (draws, M) block

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
        if loc.ndim != 2 or loc.shape != scale.shape:
            raise VaekitError(f"a Gaussian mixture takes (M, D) means and scales, got {tuple(loc.shape)} and "
                              f"{tuple(scale.shape)}")
        self.loc, self.scale = loc, scale
        super().__init__(batch_shape=torch.Size(), event_shape=loc.shape[-1:], validate_args=False)

    @property
    def components(self) -> int:
        return self.loc.shape[0]

    @property
    def mean(self) -> torch.Tensor:
        return self.loc.mean(0)

    @property
    def variance(self) -> torch.Tensor:  # E[Var] + Var[E] over the equal-weight components
        return self.scale.square().mean(0) + self.loc.var(0, unbiased=False)

    def component_log_probs(self, value: torch.Tensor) -> torch.Tensor:
        """log N(value; loc_m, scale_m^2) for every component: (*S, M) for value (*S, D). The squared distances are
        expanded into matrix products, sum_d (z_d - m_d)^2 / s_d^2 = z^2 . (1/s^2) - 2 z . (m/s^2) + sum_d m_d^2/s_d^2,
        in float64 so that the expansion's cancellation costs little (the products are only D wide): about 1e-3
        nats at its worst, codes 100 from a component whose scales sit at the posterior's floor, e^-10."""
        flat = value.reshape(-1, value.shape[-1]).double()
        loc, precision = self.loc.double(), self.scale.double().pow(-2)  # (M, D)
        constant = (loc.square() * precision).sum(-1) + 2 * self.scale.double().log().sum(-1) + \
            self.loc.shape[-1] * LOG_2PI  # (M,)
        rows = max(1, self.BLOCK // max(1, self.components))
        blocks = []
        for start in range(0, flat.shape[0], rows):
            z = flat[start : start + rows]
            distance = z.square() @ precision.T - 2 * z @ (loc * precision).T  # (rows, M)
            blocks.append(-0.5 * (distance + constant))
        out = torch.cat(blocks) if blocks else flat.new_zeros(0, self.components)
        return out.to(value.dtype).reshape(*value.shape[:-1], self.components)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log p(value), (*S,) for value (*S, D): a block of draws at a time, so only BLOCK densities are held."""
        flat = value.reshape(-1, value.shape[-1])
        rows = max(1, self.BLOCK // max(1, self.components))
        out = [torch.logsumexp(self.component_log_probs(flat[start : start + rows]), -1)
               for start in range(0, flat.shape[0], rows)]
        joined = torch.cat(out) if out else flat.new_zeros(0)
        return (joined - math.log(self.components)).reshape(value.shape[:-1])

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        """Draws from torch's global generator, on the mixture's device: a component, then its Gaussian."""
        with torch.no_grad():
            shape = torch.Size(sample_shape)
            which = torch.randint(self.components, shape, device=self.loc.device)
            return self.loc[which] + self.scale[which] * torch.randn(*shape, self.loc.shape[-1],
                                                                      device=self.loc.device, dtype=self.loc.dtype)


class ClassMixture(Distribution):
    """For each of n labels y (n,), the equal-weight mixture of those components of a GaussianMixture whose labels
    (M,) equal it: batch (n,), event (D,). The label-conditioned VampPrior's p(z | y), each class's pseudo-inputs.
    log_prob of value (*S, n, D) holds at most GaussianMixture.BLOCK densities at a time, as the mixture's does."""

    arg_constraints: ClassVar[dict] = {}
    has_rsample = False

    def __init__(self, mixture: GaussianMixture, component_labels: torch.Tensor, y: torch.Tensor) -> None:
        if component_labels.shape != (mixture.components,) or y.ndim != 1:
            raise VaekitError(f"a class mixture takes one label per component ({mixture.components}) and labels "
                              f"(n,), got {tuple(component_labels.shape)} and {tuple(y.shape)}")
        self.mixture = mixture
        member = component_labels[None, :] == y[:, None]  # (n, M)
        counts = member.sum(1)
        if y.device.type == "cpu" and not torch.compiler.is_compiling() and bool((counts == 0).any()):  # no sync
            raise VaekitError(f"no mixture component has the label {int(y[counts == 0][0])}")
        self.log_weights = torch.where(member, -counts.to(mixture.loc.dtype).log()[:, None], -math.inf)  # (n, M)
        super().__init__(batch_shape=y.shape, event_shape=mixture.event_shape, validate_args=False)

    @property
    def _weights(self) -> torch.Tensor:
        return self.log_weights.exp()

    @property
    def mean(self) -> torch.Tensor:
        return self._weights @ self.mixture.loc

    @property
    def variance(self) -> torch.Tensor:  # E[Var] + Var[E] over the class's equal-weight components
        second = self._weights @ (self.mixture.scale.square() + self.mixture.loc.square())
        return (second - self.mean.square()).clamp_min(0)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log p(value | y), (*S, n) for value (*S, n, D) (or one that broadcasts to it)."""
        n, d = self.batch_shape[0], self.event_shape[0]
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        flat = value.expand(*shape, d).reshape(-1, n, d)
        rows = max(1, self.mixture.BLOCK // max(1, n * self.mixture.components))
        weights = self.log_weights.to(value.dtype)
        out = [torch.logsumexp(self.mixture.component_log_probs(flat[start : start + rows]) + weights, -1)
               for start in range(0, flat.shape[0], rows)]
        return (torch.cat(out) if out else flat.new_zeros(0, n)).reshape(shape)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        """Draws (*S, n, D) from torch's global generator: a component of each label's class, then its Gaussian."""
        with torch.no_grad():
            which = torch.distributions.Categorical(logits=self.log_weights, validate_args=False).sample(
                torch.Size(sample_shape))  # (no argument check: on a GPU it would wait for the device)
            loc, scale = self.mixture.loc[which], self.mixture.scale[which]
            return loc + scale * torch.randn_like(loc)


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
    def noise_shape(self) -> torch.Size:
        return torch.Size([0])  # nothing to draw

    def rsample_with(self, noise: torch.Tensor) -> torch.Tensor:
        return self.rsample(noise.shape[: noise.dim() - 1 - len(self.batch_shape)])  # (*S, B, 0): the sample dims

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return self.loc.expand(torch.Size(sample_shape) + self.loc.shape)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        equal = (value == self.loc).all(-1)
        return torch.where(equal, 0.0, -math.inf)


# A posterior draws its own noise: `noise_shape` (per item) and `rsample_with(noise)`. These helpers also serve
# torch's own Normal / Independent(Normal), so a family may return those unchanged.

def noise_shape(qz: Distribution) -> torch.Size:
    if hasattr(qz, "noise_shape"):
        return torch.Size(qz.noise_shape)
    if _normal(qz) is not None:
        return qz.event_shape
    raise VaekitError(f"the posterior {type(qz).__name__} cannot draw from given noise: give it `noise_shape` and "
                      "`rsample_with(noise)` (see vaekit.distributions.DiagonalGaussian)")


def rsample_with(qz: Distribution, noise: torch.Tensor) -> torch.Tensor:
    """z ~ q(z|x) from standard normal noise (*S, B, *noise_shape): (*S, B, *event_shape), reparameterised."""
    if hasattr(qz, "rsample_with"):
        return qz.rsample_with(noise)
    normal = _normal(qz)
    if normal is None:
        noise_shape(qz)  # raises the explanation
    return normal.loc + normal.scale * noise


def draw_noise(qz: Distribution, sample_shape: tuple[int, ...] = (),
               generator: torch.Generator | None = None, device: torch.device | None = None) -> torch.Tensor:
    """Standard normal noise (*sample_shape, *batch, *noise_shape) for rsample_with. From `generator` on the CPU,
    then moved, so a seed gives the same draws on every device; without one, drawn on the device itself (no
    host-to-device copy in a training step)."""
    shape = torch.Size(sample_shape) + qz.batch_shape + noise_shape(qz)
    device = device or _device(qz)
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=generator).to(device)


def _normal(qz: Distribution) -> Normal | None:
    base = qz.base_dist if isinstance(qz, Independent) else qz
    return base if isinstance(base, Normal) else None


def _device(qz: Distribution) -> torch.device:
    if isinstance(getattr(qz, "device", None), torch.device):
        return qz.device
    for name in ("loc", "mean"):
        value = getattr(qz, name, None)
        if torch.is_tensor(value):
            return value.device
    return torch.device("cpu")


def factors(dist: Distribution) -> Distribution | None:
    """The per-dimension distribution of a factorised latent distribution (Independent over one event dim of a
    univariate family), else None: what KL per dimension needs."""
    if isinstance(dist, Independent) and dist.reinterpreted_batch_ndims == 1 and dist.base_dist.event_shape == ():
        return dist.base_dist
    return None


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of a usage histogram (K,): 1 for one code used, K for K codes used equally (no host sync)."""
    p = counts / counts.sum().clamp_min(1)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-30))).sum())

"""How good is a trained model on data: ELBO and its terms, importance-sampled NLL, active units, KL per dimension."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.distributions import kl_divergence
from tqdm.auto import tqdm

from .distributions import factors, noise_shape, perplexity
from .errors import VaekitError
from .models import Model, held_prior
from .progress import bar_timing

log = logging.getLogger(__name__)

DEFAULT_IW_SAMPLES = 1000  # K of the NLL estimate (Burda et al. 2016 report K = 5000)
MAX_IW_SAMPLES = 1_000_000  # above this one item's draws alone fill gigabytes and take hours
DEFAULT_MAX_ROWS = 4096  # decoder rows per pass (items x samples): fast matmuls, yet cache-sized
ROW_BUDGET_BYTES = 16 * 2**20  # auto max_rows: the decoder's widest activation of one pass about this size
ACTIVE_THRESHOLD = 0.01  # Cov_x(E_q[z_d]) above which a latent dimension counts as active (Burda et al. 2016)
ENCODE_BATCH = 1000


def auto_max_rows(model: Model, x1: torch.Tensor, y1: torch.Tensor | None = None) -> int:
    """Decoder rows per pass so that its widest activation (a conv decoder's feature maps, or its output) stays near
    ROW_BUDGET_BYTES, at most DEFAULT_MAX_ROWS: 4096 for an MLP on 28x28, 512 for the default conv decoder (whose
    evaluation it made 1.8x faster on a 2-core Xeon; memory traffic, not arithmetic, bounds those passes). Probed
    with one item's posterior draw at zero noise, through the path importance_terms decodes by."""
    widest = [1]

    def hook(module, inputs, output):
        if torch.is_tensor(output):
            widest[0] = max(widest[0], output[0].numel() * output.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.inference_mode():
            model.importance_terms(x1, 1, y1, noise=torch.zeros(1, 1, *noise_shape(model.encode(x1, y1)),
                                                                device=x1.device))
    finally:
        for h in handles:
            h.remove()
    rows = max(1, ROW_BUDGET_BYTES // widest[0])
    return int(min(DEFAULT_MAX_ROWS, 2 ** int(math.log2(rows))))


@dataclass(frozen=True)
class SampledBounds:
    """Per-item estimates from the same K importance samples z_k ~ q(z|x) (nats, higher is better)."""

    log_likelihood: torch.Tensor  # (N,) log (1/K) sum_k w_k, the IWAE bound: E <= log p(x), -> log p(x) as K grows
    elbo: torch.Tensor  # (N,) (1/K) sum_k log w_k, the ELBO estimated with the K samples
    kl: torch.Tensor  # (N,) (1/K) sum_k log q(z_k|x) - log p(z_k), the Monte Carlo KL from the same samples
    iw_samples: int


@dataclass(frozen=True)
class Reconstruction:
    """Per-item errors of the reconstruction from the posterior mean, x_hat = E[p(x | z = E_q[z])]."""

    squared_error: torch.Tensor  # (N,) sum over data dims of (x - x_hat)^2
    nll_at_mean: torch.Tensor  # (N,) -log p(x | z = E_q[z]) under the model's own likelihood (nats)
    # A likelihood with columns (a table): per item and column, the nll and the decoded value's error (N, columns)
    column_nll: torch.Tensor | None = None
    column_error: torch.Tensor | None = None


@dataclass(frozen=True)
class Evaluation:
    """Means over the items of a split, nats per example; stderr = standard error of the mean over items."""

    split: str | None
    n_examples: int
    iw_samples: int  # 0: the likelihood metrics were not computed
    elbo: float | None  # E_q[log p(x|z)] - KL, estimated with the iw_samples draws; higher is better
    elbo_stderr: float | None
    recon: float | None  # E_q[-log p(x|z)] = -elbo - kl
    kl: float | None  # KL(q(z|x) || p(z)): closed form where torch has one for the pair, else Monte Carlo
    kl_estimator: str | None  # "closed form" or "monte carlo (K samples)"
    nll: float | None  # -log p(x), importance sampled (IWAE estimator); an upper bound in expectation
    nll_stderr: float | None
    bits_per_dim: float | None  # nll / (D ln 2), where the likelihood is a probability mass on the data
    active_units: int  # code dimensions with Cov_x(code_d) > ACTIVE_THRESHOLD
    latent_dim: int  # size of the code
    kl_per_dim: tuple[float, ...] | None  # sums to kl; near 0 for a collapsed dimension; None where it does not apply
    kl_per_dim_omitted: str | None  # why kl_per_dim is None
    posterior_mean_variance: tuple[float, ...]  # Cov_x(code_d), what active_units thresholds
    squared_error: float  # sum_d (x_d - x_hat_d)^2 with x_hat decoded from the posterior mean
    recon_at_mean: float  # -log p(x | z = E_q[z])
    # A table model's columns: name -> kind, nll_at_mean (nats) and the decoded value's error in the user's units
    # (rmse of a numeric column, accuracy of a binary or categorical one); None for other data.
    columns: dict[str, dict[str, Any]] | None
    # A family with a codebook (vqvae): codes used by the split's items, and the perplexity of their usage (exp of
    # its entropy: the codes used, as if used equally); None for a continuous latent.
    codes_used: int | None
    codebook_perplexity: float | None
    # The family's further per-item measurements, averaged (e.g. prior_nll: -log p(codes) under a learned prior)
    terms: dict[str, float]
    seed: int
    seconds: float
    # A label-conditioned model's: every density above is of x given its label (nll: -log p(x|y)), which a model
    # without the label cannot be compared with as such (the label's information is in the difference)
    given_labels: bool = False
    # A family with stochastic layers beyond the code (hvae): each layer's active units, "code" (the hvae's z1) and
    # the others by name (z2); None for any other family
    active_units_per_layer: dict[str, int] | None = None
    # Per item (N,) float64, in item order: nll, elbo, kl (where computed), recon_at_mean, squared_error; for paired
    # comparisons of two models on the same items (item_lines, paired). Not part of to_dict.
    per_item: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "per_item"}


def mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    """Mean and its standard error over items (sample std / sqrt(N)), in float64."""
    values = values.double()
    if values.numel() < 2:
        return float(values.mean()), math.nan
    return float(values.mean()), float(values.std() / math.sqrt(values.numel()))


def bits_per_dim(nll: float, data_shape: tuple[int, ...]) -> float:
    """nats per example -> bits per data dimension: nll / (D ln 2)."""
    return nll / (math.prod(data_shape) * math.log(2))


def _item_seed(seed: int, index: int) -> int:
    # A stable hash of (seed, item): torch's CPU generator keeps only the low 32 bits of a seed.
    return int.from_bytes(hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=4).digest(), "little")


def _layout(n: int, k: int, max_rows: int) -> tuple[int, int]:
    """(items per pass, samples per pass) with items * samples <= max_rows: whole K per item if it fits."""
    if max_rows < 1:
        raise VaekitError(f"max_rows must be at least 1, got {max_rows}")
    if k >= max_rows:
        return 1, max_rows
    return max(1, min(n, max_rows // k)), k


def _item_noise(seed: int, start: int, items: int, k: int, shape: torch.Size) -> torch.Tensor:
    """Standard normal draws (K, B, *shape), each item's from its own stream: results do not depend on batching."""
    noise = torch.empty(items, k, *shape)
    generator = torch.Generator()
    for offset in range(items):
        generator.manual_seed(_item_seed(seed, start + offset))
        torch.randn(k, *shape, generator=generator, out=noise[offset])
    return noise.transpose(0, 1)


def _labels(y: torch.Tensor | None, start: int, stop: int, device: torch.device) -> torch.Tensor | None:
    return None if y is None else y[start:stop].to(device)


@torch.inference_mode()
def sampled_bounds(
    model: Model,
    x: torch.Tensor,
    k: int = DEFAULT_IW_SAMPLES,
    seed: int = 0,
    max_rows: int | None = None,
    progress: bool = False,
    y: torch.Tensor | None = None,
) -> SampledBounds:
    """IWAE bound, ELBO and Monte Carlo KL per item from K importance samples (Burda et al. 2016, eq. 8), via the
    model's importance_terms; the NLL estimate is -log_likelihood. Memory holds max_rows decoded rows at a time."""
    if not 1 <= k <= MAX_IW_SAMPLES:
        raise VaekitError(f"the number of importance samples must be between 1 and {MAX_IW_SAMPLES:,}, got {k}: "
                          "K = 5000 is the literature's (Burda et al. 2016)")
    n = x.shape[0]
    if max_rows is None:  # (no items: nothing to probe, nor to pass)
        max_rows = auto_max_rows(model, x[:1].to(model.device), _labels(y, 0, 1, model.device)) if n else 1
    items, samples = _layout(n, k, max_rows)
    log_likelihood = torch.empty(n, dtype=torch.float64)
    elbo = torch.empty(n, dtype=torch.float64)
    kl_mc = torch.empty(n, dtype=torch.float64)
    device = model.device
    # one item's noise shape, the same for every item: the posterior's own
    shape = noise_shape(model.encode(x[:1].to(device), _labels(y, 0, 1, device)))
    with tqdm(total=n * k, desc="importance sampling", unit="sample", unit_scale=True, disable=not progress,
              leave=False, dynamic_ncols=True, **bar_timing()) as bar, held_prior(model):
        for start in range(0, n, items):
            xb = x[start : start + items].to(device)
            yb = _labels(y, start, start + items, device)
            batch = xb.shape[0]
            noise = _item_noise(seed, start, batch, k, shape)  # (K, B, *noise_shape)
            log_sum = torch.full((batch,), -math.inf, dtype=torch.float64, device=device)
            total = torch.zeros(batch, dtype=torch.float64, device=device)
            ratio = torch.zeros(batch, dtype=torch.float64, device=device)
            for first in range(0, k, samples):
                eps = noise[first : first + samples].to(device)
                log_px, log_ratio = model.importance_terms(xb, eps.shape[0], yb, noise=eps)  # (K_chunk, B)
                log_w = log_px - log_ratio
                log_sum = torch.logaddexp(log_sum, torch.logsumexp(log_w, 0).double())  # streaming logsumexp
                total += log_w.double().sum(0)
                ratio += log_ratio.double().sum(0)
                bar.update(eps.shape[0] * batch)
            log_likelihood[start : start + batch] = (log_sum - math.log(k)).cpu()
            elbo[start : start + batch] = (total / k).cpu()
            kl_mc[start : start + batch] = (ratio / k).cpu()
    bad = ~torch.isfinite(log_likelihood)
    if bad.any():
        raise VaekitError(
            f"{int(bad.sum())} of {n} items got non-finite importance weights (first: item {int(bad.nonzero()[0])}): "
            "the model outputs NaN/inf or the data lies outside the likelihood's support"
        )
    return SampledBounds(log_likelihood=log_likelihood, elbo=elbo, kl=kl_mc, iw_samples=k)


def _posteriors(model: Model, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = ENCODE_BATCH):
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(model.device)
        yb = _labels(y, start, start + batch_size, model.device)
        yield xb, yb, model.encode(xb, yb)


def kl_per_dim_omitted(model: Model, x: torch.Tensor, y: torch.Tensor | None = None) -> str | None:
    """Why this model has no KL per dimension (None if it has one): it needs a factorised posterior and prior
    of the same dimensions, with a closed-form KL per factor."""
    if not model.has_bound:
        return f"a model of family {model.family!r} has no KL"
    y1 = _labels(y, 0, 1, model.device)
    qz, pz = model.encode(x[:1].to(model.device), y1), model.prior_for(y1, 1)
    for name, dist in (("posterior", qz), ("prior", pz)):
        if factors(dist) is None:
            return (f"the {name} ({type(dist).__name__}) does not factorise over the latent dimensions, "
                    "so the KL has no per-dimension parts")
    try:
        kl_divergence(factors(qz), factors(pz))
    except NotImplementedError:
        return f"torch has no closed-form KL between {type(factors(qz)).__name__} and {type(factors(pz)).__name__}"
    return None


@torch.inference_mode()
def kl_per_item_and_dim(model: Model, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """KL(q(z_d|x) || p(z_d)) in closed form for every item and latent dimension: (N, latent_dim). For a model
    whose distributions factorise (see kl_per_dim_omitted)."""
    reason = kl_per_dim_omitted(model, x, y)
    if reason is not None:
        raise VaekitError(f"no KL per dimension: {reason}")
    rows = [kl_divergence(factors(qz), factors(model.prior_for(yb, xb.shape[0]))).cpu()
            for xb, yb, qz in _posteriors(model, x, y)]  # the prior given each item's label where it takes them
    return torch.cat(rows)


def kl_per_dim(model: Model, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over items of the closed-form KL per latent dimension (nats): (latent_dim,). Sums to the mean KL."""
    return kl_per_item_and_dim(model, x, y).double().mean(0)


@torch.inference_mode()
def codes(model: Model, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Every item's code (posterior mean for a flat latent), flattened: (N, code size)."""
    return torch.cat([model.code(qz).flatten(1).cpu() for _, _, qz in _posteriors(model, x, y)])


def posterior_loc_scale(model: Model, x: torch.Tensor, y: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every item's factorised Gaussian posterior N(loc, scale^2), flattened: two (N, latent size) tensors (what
    `vaekit.disentangle.mig_posterior` takes)."""
    locs, scales = [], []
    with torch.inference_mode():
        for _, _, qz in _posteriors(model, x, y):
            base = factors(qz)
            if not isinstance(base, torch.distributions.Normal):
                raise VaekitError(f"a model of family {model.family!r} has a {type(base or qz).__name__} posterior, "
                                  "not a factorised Gaussian: it has no loc and scale per dimension")
            locs.append(base.loc.flatten(1).cpu())
            scales.append(base.scale.flatten(1).cpu())
    return torch.cat(locs), torch.cat(scales)


def posterior_mean_variance(model: Model, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Cov_x(code_d) per code dimension (unbiased variance over items): (code size,)."""
    if x.shape[0] < 2:
        raise VaekitError(f"the variance of posterior means needs at least 2 items, got {x.shape[0]}")
    return codes(model, x, y).double().var(0)


def active_units(model: Model, x: torch.Tensor, threshold: float = ACTIVE_THRESHOLD,
                 y: torch.Tensor | None = None) -> int:
    """Code dimensions that vary over the data: Cov_x(code_d) > threshold (Burda et al. 2016)."""
    return int((posterior_mean_variance(model, x, y) > threshold).sum())


@torch.inference_mode()
def reconstruction_error(model: Model, x: torch.Tensor, y: torch.Tensor | None = None) -> Reconstruction:
    """Squared error and -log p(x|z) of the decoded code, per item."""
    squared, nll, column_nll, column_error = [], [], [], []
    for xb, yb, qz in _posteriors(model, x, y):
        px = model.decode_code(model.code(qz), yb)
        squared.append((xb - px.mean).flatten(1).square().sum(1).cpu())
        nll.append(-px.log_prob(xb).cpu())
        if hasattr(px, "column_errors"):
            parts = px.column_errors(xb)
            column_nll.append(parts[0].cpu())
            column_error.append(parts[1].cpu())
    return Reconstruction(squared_error=torch.cat(squared), nll_at_mean=torch.cat(nll),
                          column_nll=torch.cat(column_nll) if column_nll else None,
                          column_error=torch.cat(column_error) if column_error else None)


@torch.inference_mode()
def layer_active_units(model: Model, x: torch.Tensor, y: torch.Tensor | None = None, seed: int = 0) -> dict[str, int]:
    """Active units (Cov_x of the posterior mean > ACTIVE_THRESHOLD) of each of the family's stochastic layers beyond
    the code (Model.layer_means), its draws from torch's generator seeded with `seed` (restored after); {} for a
    family without such layers."""
    if type(model).layer_means is Model.layer_means or x.shape[0] < 2:
        return {}
    means: dict[str, list[torch.Tensor]] = {}
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in range(0, x.shape[0], ENCODE_BATCH):
            yb = None if y is None else y[start:start + ENCODE_BATCH].to(model.device)
            for name, value in model.layer_means(x[start:start + ENCODE_BATCH].to(model.device), yb).items():
                means.setdefault(name, []).append(value.flatten(1).double().cpu())
    return {name: int((torch.cat(parts).var(0) > ACTIVE_THRESHOLD).sum()) for name, parts in means.items()}


@torch.inference_mode()
def family_measurements(model: Model, x: torch.Tensor, y: torch.Tensor | None = None,
                        seed: int = 0) -> tuple[torch.Tensor | None, dict[str, float]]:
    """The usage count of each code (a family with discrete codes; else None) and the means of the family's own
    per-item measurements (Model.evaluation_terms), over x in batches of about ENCODE_BATCH (none of one item, which
    has no batch to be measured against, unless x is one item). A family's draws come from torch's generator seeded
    with `seed` (its state restored after)."""
    usage: torch.Tensor | None = None
    sums: dict[str, float] = {}
    counts_of: dict[str, int] = {}
    family = type(model)
    if family.discrete_codes is Model.discrete_codes and family.evaluation_terms is Model.evaluation_terms:
        return usage, sums  # a family with neither: no pass over the data
    starts = list(range(0, x.shape[0], ENCODE_BATCH))
    if len(starts) > 1 and x.shape[0] - starts[-1] == 1:
        starts.pop()  # the last item joins the batch before it
    ends = [*starts[1:], x.shape[0]]
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []  # (manual_seed seeds all)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start, end in zip(starts, ends, strict=True):
            xb = x[start:end].to(model.device)
            yb = _labels(y, start, end, model.device)
            codes = model.discrete_codes(xb, yb)
            if codes is not None:
                counts = torch.bincount(codes.reshape(-1).cpu())
                usage = counts if usage is None else _add_counts(usage, counts)
            for name, values in model.evaluation_terms(xb, yb).items():
                sums[name] = sums.get(name, 0.0) + float(values.double().sum())
                counts_of[name] = counts_of.get(name, 0) + values.numel()
    return usage, {name: total / counts_of[name] for name, total in sums.items()}


def _add_counts(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    size = max(a.numel(), b.numel())
    return F.pad(a, (0, size - a.numel())) + F.pad(b, (0, size - b.numel()))


def column_report(model: Model, reconstruction: Reconstruction) -> dict[str, dict[str, Any]] | None:
    """For a model whose likelihood has columns (a table): per column, -log p(x_c | z = code) in nats (a numeric
    column's density in the user's units) and the error of the decoded value in those units, the RMSE of a numeric
    column or the accuracy of the others. None otherwise."""
    if reconstruction.column_nll is None:
        return None
    nll_sum = reconstruction.column_nll.double().sum(0)
    error_sum = reconstruction.column_error.double().sum(0)
    n = reconstruction.column_nll.shape[0]
    report = {}
    for i, column in enumerate(model.likelihood.schema.columns):
        mean_error = float(error_sum[i]) / n
        entry = {"kind": column.kind, "nll_at_mean": float(nll_sum[i]) / n}
        if column.kind == "numeric":  # a density of the value in the user's units, not the standardised one
            entry["nll_at_mean"] += math.log(column.std)
            entry["rmse"] = math.sqrt(mean_error)
        else:
            entry["accuracy"] = 1.0 - mean_error
        report[column.name] = entry
    return report


@torch.inference_mode()
def closed_form_kl(model: Model, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor | None:
    """KL(q(z|x) || p(z)) per item in closed form (N,), or None where torch has none for the model's pair."""
    rows = []
    for _, yb, qz in _posteriors(model, x, y):
        exact = model._with_labels("closed_form_kl", yb, qz)
        if exact is None:
            return None
        rows.append(exact.cpu())
    return torch.cat(rows)


def evaluate(
    model: Model,
    x: torch.Tensor,
    iw_samples: int | None = None,
    seed: int = 0,
    split: str | None = None,
    image: bool | None = None,
    max_rows: int | None = None,
    progress: bool = False,
    y: torch.Tensor | None = None,
) -> Evaluation:
    """Every metric on x (N, *data_shape), with labels y for a label-conditioned model. iw_samples=0 skips the
    sampled ones (elbo, recon, nll), which a model without a bound (ae, vqvae) requires; None (the default) is
    DEFAULT_IW_SAMPLES where the family bounds the likelihood, else 0. bits/dim is
    reported where the likelihood is a probability mass on x (a Bernoulli on binary data, the discretised
    logistic), never for a density; image=False turns it off."""
    began = time.perf_counter()
    if tuple(x.shape[1:]) != tuple(model.data_shape):
        raise VaekitError(f"the data has items of shape {tuple(x.shape[1:])}, but the model expects {model.data_shape}")
    if x.shape[0] < 2:
        raise VaekitError(f"evaluation needs at least 2 items, got {x.shape[0]}")
    if iw_samples is None:
        iw_samples = DEFAULT_IW_SAMPLES if model.has_bound else 0
    if not 0 <= iw_samples <= MAX_IW_SAMPLES:
        raise VaekitError(f"iw_samples must be between 0 (no NLL) and {MAX_IW_SAMPLES:,}, got {iw_samples}: "
                          "K = 5000 is the literature's (Burda et al. 2016)")
    if model.num_labels and y is None:
        raise VaekitError("this model is conditioned on labels: evaluate it on labelled data (y=...)")
    y = y if model.num_labels else None
    model.likelihood.check_support(x, "the evaluation data")
    was_training = model.training
    model.eval()
    try:
        if iw_samples > 0 and not model.has_bound:
            raise VaekitError(
                f"a model of family {model.family!r} defines no likelihood bound, so no ELBO or NLL: "
                "pass iw_samples=0 (--iw-samples 0) to evaluate its reconstruction and latent space only"
            )
        variance = posterior_mean_variance(model, x, y)
        reconstruction = reconstruction_error(model, x, y)
        columns = column_report(model, reconstruction)
        usage, extra = family_measurements(model, x, y, seed)
        layers = layer_active_units(model, x, y, seed)
        kl_items = kl_dims = estimator = None
        omitted = kl_per_dim_omitted(model, x, y)
        if model.has_bound:
            kl_items = closed_form_kl(model, x, y)
            estimator = "closed form" if kl_items is not None else None
            if omitted is None:
                kl_dims = kl_per_dim(model, x, y)
        elbo_mean = elbo_stderr = recon = nll = nll_stderr = bpd = None
        per_item: dict[str, torch.Tensor] = {}
        # A table's densities are of its rows in the user's units, as its columns' are (column_report), not of the
        # standardised rows the model reads: the standardisation's log-Jacobian. 0 for any other data.
        units = model.likelihood.schema.log_scale if columns is not None else 0.0
        if iw_samples > 0:
            bounds = sampled_bounds(model, x, iw_samples, seed, max_rows, progress, y=y)
            if kl_items is None:  # no closed form: the Monte Carlo KL of the same samples as the ELBO
                kl_items, estimator = bounds.kl, f"monte carlo ({iw_samples} samples)"
            item_elbo, item_nll = bounds.elbo - units, -bounds.log_likelihood + units
            elbo_mean, elbo_stderr = mean_and_stderr(item_elbo)
            recon = float((-item_elbo - kl_items.double()).mean())
            nll, nll_stderr = mean_and_stderr(item_nll)
            per_item = {"nll": item_nll, "elbo": item_elbo, "kl": kl_items.double().cpu()}
            if image is not False and model.likelihood.is_mass_on(x):
                bpd = bits_per_dim(nll, model.data_shape)
    finally:
        model.train(was_training)
    result = Evaluation(
        split=split,
        n_examples=x.shape[0],
        iw_samples=iw_samples,
        elbo=elbo_mean,
        elbo_stderr=elbo_stderr,
        recon=recon,
        kl=None if kl_items is None else float(kl_items.double().mean()),
        kl_estimator=estimator,
        nll=nll,
        nll_stderr=nll_stderr,
        bits_per_dim=bpd,
        active_units=int((variance > ACTIVE_THRESHOLD).sum()),
        latent_dim=int(variance.numel()),
        kl_per_dim=None if kl_dims is None else tuple(kl_dims.tolist()),
        kl_per_dim_omitted=None if kl_dims is not None else omitted or "not computed",
        posterior_mean_variance=tuple(variance.tolist()),
        squared_error=float(reconstruction.squared_error.double().mean()),
        recon_at_mean=float(reconstruction.nll_at_mean.double().mean()) + units,
        columns=columns,
        codes_used=None if usage is None else int((usage > 0).sum()),
        codebook_perplexity=None if usage is None else float(perplexity(usage.double())),
        terms=extra,
        seed=seed,
        seconds=time.perf_counter() - began,
        given_labels=bool(model.num_labels),
        active_units_per_layer=None if not layers else {"code": int((variance > ACTIVE_THRESHOLD).sum()), **layers},
        per_item={**per_item, "recon_at_mean": reconstruction.nll_at_mean.double().cpu() + units,
                  "squared_error": reconstruction.squared_error.double().cpu()},
    )
    log.debug("evaluated %d items in %.1f s", result.n_examples, result.seconds)
    return result


# ---- per-item tables: two models compared on the same items ---------------------------------------------------

ITEM_KEY, DIGEST_KEY, K_KEY = "item", "data_sha256", "iw_samples"
GIVEN_KEY = "given_labels"  # 1 where the measures are of x given its label (a label-conditioned model), else 0
ITEM_MEASURES = ("nll", "elbo", "kl", "recon_at_mean", "squared_error")


def item_digests(x: torch.Tensor) -> list[str]:
    """A short sha256 of each item's values (as float32), so that a comparison can check it has the same items."""
    flat = x.detach().to("cpu", torch.float32).reshape(x.shape[0], -1).contiguous().numpy()
    return [hashlib.sha256(row.tobytes()).hexdigest()[:16] for row in flat]


def item_lines(result: Evaluation, x: torch.Tensor) -> list[str]:
    """The evaluation's per-item values as CSV lines (header first): item, data_sha256, iw_samples, then each of
    ITEM_MEASURES that was computed, in nats (squared_error in the data's units)."""
    names = [m for m in ITEM_MEASURES if m in result.per_item]
    columns = [result.per_item[m].tolist() for m in names]
    lines = [",".join([ITEM_KEY, DIGEST_KEY, K_KEY, *names, GIVEN_KEY])]
    for i, digest in enumerate(item_digests(x)):
        lines.append(",".join([str(i), digest, str(result.iw_samples), *(repr(c[i]) for c in columns),
                               str(int(result.given_labels))]))
    return lines


def read_items(path: str | Path, x: torch.Tensor | None = None) -> dict[str, Any]:
    """A table written by item_lines (vaekit evaluate --per-item): digests, iw_samples and each measure (N,);
    with x, checked to hold x's items in x's order (before an evaluation spends its minutes)."""
    path = Path(path)
    fix = f"write it with vaekit evaluate RUN --per-item {path}"
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise VaekitError(f"{path}: no such file: {fix}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise VaekitError(f"{path} cannot be read as a per-item table ({e}): {fix}") from None
    header = list(rows[0]) if rows else []
    measures = [m for m in ITEM_MEASURES if m in header]
    if not rows or header[:3] != [ITEM_KEY, DIGEST_KEY, K_KEY] or not measures:
        raise VaekitError(f"{path} is not a per-item table of vaekit evaluate (it needs the columns {ITEM_KEY}, "
                          f"{DIGEST_KEY}, {K_KEY} and one of {', '.join(ITEM_MEASURES)}): {fix}")
    try:
        table = {m: torch.tensor([float(r[m]) for r in rows], dtype=torch.float64) for m in measures}
        ks = {int(r[K_KEY]) for r in rows}
        if [int(r[ITEM_KEY]) for r in rows] != list(range(len(rows))):
            raise ValueError("its items are not numbered 0, 1, 2, ...")
    except (TypeError, ValueError) as e:
        raise VaekitError(f"{path} holds a value that is not a number or a missing one ({e}): {fix}") from None
    items = {"path": str(path), "digests": [r[DIGEST_KEY] for r in rows], K_KEY: min(ks), **table,
             GIVEN_KEY: rows[0].get(GIVEN_KEY) == "1"}  # (a table written before the column: no labels given)
    if x is not None:
        _check_items(items, x)
    return items


def _check_items(table: dict[str, Any], x: torch.Tensor) -> None:
    n, other = x.shape[0], table["path"]
    if len(table["digests"]) != n:
        raise VaekitError(f"{other} holds {len(table['digests']):,} items and this evaluation {n:,}: evaluate both "
                          "runs on the same data and split, with the same --n")
    mismatch = next((i for i, (a, b) in enumerate(zip(item_digests(x), table["digests"])) if a != b), None)
    if mismatch is not None:
        raise VaekitError(f"item {mismatch} of {other} is not this evaluation's item {mismatch} (its data differ): "
                          "evaluate both runs on the same data and split, with the same --n")


def paired(result: Evaluation, table: dict[str, Any]) -> dict[str, Any]:
    """This evaluation against another model's per-item table on the same items: for each measure both have, the
    means, their difference (this - other) and its paired standard error (the items' differences' std / sqrt(N)),
    and the share of items on which this one's value is lower (table: read_items(path, x), checked there). Pairing
    removes how hard each item is from the comparison, so the difference's standard error is far smaller than
    either mean's."""
    other, n = table["path"], result.n_examples
    measures = [m for m in ITEM_MEASURES if m in table and m in result.per_item]
    if not measures:
        raise VaekitError(f"{other} and this evaluation share no measure (theirs: "
                          f"{', '.join(m for m in ITEM_MEASURES if m in table)}; --iw-samples 0 computes no nll, "
                          "elbo or kl): evaluate both with --iw-samples K")
    out: dict[str, Any] = {"against": str(other), "items": n, "iw_samples": result.iw_samples,
                           "other_iw_samples": table[K_KEY]}
    if result.given_labels != table[GIVEN_KEY]:
        given, alone = ("this model's", "the other's") if result.given_labels else ("the other model's", "this one's")
        out["note"] = (f"{given} measures are of x given its label (-log p(x|y)), {alone} of x alone: the "
                       "difference includes the information the label gives")
        log.warning("%s", out["note"])
    for m in measures:
        mine, theirs = result.per_item[m], table[m]
        difference, stderr = mean_and_stderr(mine - theirs)
        out[m] = {"this": float(mine.mean()), "other": float(theirs.mean()), "difference": difference,
                  "stderr": stderr, "this_lower": float((mine < theirs).double().mean())}
    return out

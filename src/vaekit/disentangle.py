"""Disentanglement scores of a representation against known generative factors: MIG and the beta-VAE score."""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .errors import VaekitError
from .threads import as_torch

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class MIGResult:
    score: float  # mean over factors of per_factor, in [0, 1]; higher is more disentangled
    per_factor: np.ndarray  # (K,) gap between the two most informative codes, over the factor's entropy
    mutual_info: np.ndarray  # (D, K) I(code_j; factor_k) in nats: binned codes (mig) or posteriors (mig_posterior)
    factor_entropy: np.ndarray  # (K,) H(factor_k) in nats
    mutual_info_se: np.ndarray | None = None  # (D, K) standard error of mutual_info over the items (mig_posterior)


@dataclass(frozen=True)
class BetaVAEResult:
    train_accuracy: float  # of the linear classifier on its own training points
    eval_accuracy: float  # on fresh points: the reported score; chance is 1 / n_factors

    @property
    def score(self) -> float:
        return self.eval_accuracy


def mig(codes: np.ndarray, factors: np.ndarray, n_bins: int = 20) -> MIGResult:
    """Mutual Information Gap (Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs").

    As in disentanglement_lib: each code dimension is discretised into n_bins equal-width bins of its
    histogram; I(code_j; factor_k) is estimated with the plug-in estimate on the N items; for every factor
    the gap between the largest and second largest mutual information is divided by H(factor_k), and the
    gaps are averaged over factors. Factors must be discrete (each distinct value is one class).
    Codes are (N, D) with D >= 2 (typically posterior means), factors (N, K). A code dimension whose posteriors
    have the prior's width but whose means drift a little with a factor holds almost no information about it, yet
    binning stretches that drift over all the bins and credits it; `mig_posterior` does not.

    A factor with more values than n_bins cannot be fully resolved by binned codes, so even a perfect
    code scores about log(n_bins) / log(n_values) on it (on the shapes grid with n_bins=20: about 0.90 in
    all, 0.902 for the factors themselves over 200,000 draws); raise n_bins to the largest factor size (40 for
    shapes) to compare against a ceiling of 1.
    """
    from sklearn.metrics import mutual_info_score  # here, not at import: scikit-learn loads its own thread pools

    if n_bins < 2:
        raise VaekitError(f"n_bins must be at least 2, got {n_bins}")
    codes, classes, factor_entropy = _mig_input(codes, factors)
    binned = _discretise(codes, n_bins)
    mutual_info = np.array([[mutual_info_score(classes[:, k], binned[:, j]) for k in range(classes.shape[1])]
                            for j in range(codes.shape[1])])
    return _gap(mutual_info, factor_entropy)


def mig_posterior(loc: np.ndarray, scale: np.ndarray, factors: np.ndarray, seed: int = 0) -> MIGResult:
    """MIG with each I(z_j; v_k) estimated from the Gaussian posteriors themselves, as Chen et al. (2018) define
    and compute it, rather than from binned posterior means (`mig`).

    With one draw z_i ~ q(z|x_i) per item, the aggregate posterior of code j is the mixture of the N items'
    N(loc_nj, scale_nj^2), and its conditional on factor k taking value v the mixture over the items with that
    value:  H(z_j) = -mean_i log q(z_ij),  H(z_j | v_k) = -mean_i log q(z_ij | v_ik),  I = H(z_j) - H(z_j | v_k),
    all in log space (log-sum-exp over the mixtures' components). A code dimension whose posteriors have the
    prior's width gets almost no information however its means drift; binned means count the drift.
    I is clipped at 0 for the gap, which is divided by the factor's entropy as in `mig`. loc and scale are (N, D)
    with D >= 2, factors (N, K) discrete; `seed` fixes the draws. Cost: N^2 x D log densities, 4M at a time.

    What it estimates is the mutual information of these N items' mixtures: each item's own component is in both
    of its mixtures, as in Chen et al.'s code, and `mutual_info_se` (the standard error over the items' draws) is
    that estimate's Monte Carlo error alone. For the population behind the items it reads high where posteriors
    are narrow and a factor value has few items: a code independent of a 40-valued factor, with posterior scales
    of 0.1 (prior 1), showed 0.036 nats from 10,000 items (250 per value). Use many items per factor value; the
    same call with each factor column shuffled gives this reading for codes with these posteriors and no information.
    """
    loc, classes, factor_entropy = _mig_input(loc, factors)
    scale = np.asarray(scale, dtype=np.float64)
    if scale.shape != loc.shape:
        raise VaekitError(f"loc and scale must have the same shape, got {loc.shape} and {scale.shape}")
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        raise VaekitError("posterior scales must be positive and finite")
    loc_t, scale_t = torch.from_numpy(np.ascontiguousarray(loc)), torch.from_numpy(np.ascontiguousarray(scale))
    generator = torch.Generator().manual_seed(seed)
    z = loc_t + scale_t * torch.randn(loc_t.shape, generator=generator, dtype=torch.float64)
    marginal = _log_mixture(z, loc_t, scale_t)  # (N, D): log q(z_ij)
    n_codes, n_factors = loc.shape[1], classes.shape[1]
    mutual_info, mutual_info_se = np.zeros((n_codes, n_factors)), np.zeros((n_codes, n_factors))
    for k in range(n_factors):
        conditional = torch.empty_like(marginal)  # log q(z_ij | v_ik)
        for value in np.unique(classes[:, k]):
            members = torch.from_numpy(np.flatnonzero(classes[:, k] == value))
            conditional[members] = _log_mixture(z[members], loc_t[members], scale_t[members])
        terms = (conditional - marginal).numpy()  # (N, D): each item's share of I(z_j; v_k)
        mutual_info[:, k] = terms.mean(0)
        mutual_info_se[:, k] = terms.std(0, ddof=1) / np.sqrt(len(terms))
    return dataclasses.replace(_gap(mutual_info, factor_entropy), mutual_info_se=mutual_info_se)


def _mig_input(codes: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked (N, D) codes, the factors as class indices (N, K) (the same partition; sklearn does not mistake
    floats for continuous) and each factor's entropy (K,) in nats."""
    codes, factors = _check_pair(codes, factors)
    if codes.shape[1] < 2:
        raise VaekitError(f"MIG compares the two most informative codes, so it needs at least 2; got {codes.shape[1]}")
    classes = np.stack([np.unique(factors[:, k], return_inverse=True)[1] for k in range(factors.shape[1])], axis=1)
    factor_entropy = np.array([_entropy(classes[:, k]) for k in range(classes.shape[1])])
    constant = np.flatnonzero(factor_entropy <= 0)
    if constant.size:
        raise VaekitError(f"factor columns {constant.tolist()} take a single value: MIG needs every factor to vary")
    return codes, classes, factor_entropy


def _gap(mutual_info: np.ndarray, factor_entropy: np.ndarray) -> MIGResult:
    """Per factor, the gap between the two codes with the most information about it (negative estimates as 0),
    over the factor's entropy; MIG is their mean."""
    top_two = np.sort(np.clip(mutual_info, 0, None), axis=0)[::-1][:2]  # (2, K)
    per_factor = (top_two[0] - top_two[1]) / factor_entropy
    return MIGResult(float(per_factor.mean()), per_factor, mutual_info, factor_entropy)


_BLOCK = 1 << 22  # float64 numbers per (rows, N, D) block of _log_mixture (32 MB per temporary; one row at least)


def _log_mixture(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log (1/N) sum_n N(z_ij; loc_nj, scale_nj^2) for each draw i and code j: (M, D) from z (M, D), loc (N, D)."""
    out = torch.empty_like(z)
    log_norm = scale.log() + 0.5 * math.log(2 * math.pi) + math.log(loc.shape[0])
    rows = max(1, _BLOCK // loc.numel())
    for start in range(0, z.shape[0], rows):
        block = (z[start : start + rows, None, :] - loc[None]) / scale[None]  # (rows, N, D)
        out[start : start + rows] = torch.logsumexp(-0.5 * block.square() - log_norm[None], dim=1)
    return out


def _entropy(classes: np.ndarray) -> float:
    p = np.bincount(classes) / len(classes)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _discretise(codes: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index per item and code dimension, equal-width bins spanning each dimension's range."""
    binned = np.zeros(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], n_bins)[1]
        binned[:, j] = np.digitize(codes[:, j], edges[:-1])
    return binned


def beta_vae_score(
    represent: Callable[[np.ndarray], np.ndarray],
    sample_factors: Callable[[int, np.random.Generator], np.ndarray],
    n_factors: int,
    batch_size: int = 64,
    n_train: int = 5000,
    n_eval: int = 2000,
    seed: int = 0,
) -> BetaVAEResult:
    """The beta-VAE disentanglement metric (Higgins et al. 2017, "beta-VAE: Learning Basic Visual Concepts").

    One point: pick a factor k uniformly, draw batch_size pairs of factor vectors that agree on factor k
    only by construction, represent both sides, and average |code_1 - code_2| over the batch; the label is k.
    A linear classifier (logistic regression, as disentanglement_lib's scikit-learn variant) learns k from
    n_train points; the score is its accuracy on n_eval fresh points. A representation where one code
    tracks factor k alone leaves that code's difference near zero, which a linear model reads off.

    represent maps (M, n_factors) factor values to (M, D) codes, e.g. rendering images and taking the
    posterior means; sample_factors(n, rng) draws (n, n_factors) factor values.
    """
    if n_factors < 2:
        raise VaekitError(f"the beta-VAE score classifies which factor was fixed, so it needs >= 2; got {n_factors}")
    if batch_size < 1 or n_train < 2 or n_eval < 1:
        raise VaekitError(f"need batch_size >= 1, n_train >= 2, n_eval >= 1; got {batch_size}, {n_train}, {n_eval}")
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    train_points, train_labels = _pair_differences(represent, sample_factors, n_factors, batch_size, n_train, rng)
    if np.unique(train_labels).size < 2:
        raise VaekitError(f"all {n_train} training points fixed the same factor: raise n_train")
    # Raw features as in disentanglement_lib; more iterations than sklearn's default so it converges.
    classifier = LogisticRegression(max_iter=2000, random_state=seed)
    with as_torch():
        classifier.fit(train_points, train_labels)
    train_accuracy = float(classifier.score(train_points, train_labels))
    eval_points, eval_labels = _pair_differences(represent, sample_factors, n_factors, batch_size, n_eval, rng)
    eval_accuracy = float(classifier.score(eval_points, eval_labels))
    log.info("beta-VAE score: train accuracy %.3f, eval accuracy %.3f", train_accuracy, eval_accuracy)
    return BetaVAEResult(train_accuracy, eval_accuracy)


def _pair_differences(
    represent: Callable[[np.ndarray], np.ndarray],
    sample_factors: Callable[[int, np.random.Generator], np.ndarray],
    n_factors: int,
    batch_size: int,
    n_points: int,
    rng: np.random.Generator,
    rows_per_call: int = 8192,
) -> tuple[np.ndarray, np.ndarray]:
    """n_points (feature, fixed factor) pairs; represent sees about rows_per_call factor rows at a time."""
    labels = rng.integers(0, n_factors, n_points)
    points_per_call = max(1, rows_per_call // (2 * batch_size))
    features = []
    for start in range(0, n_points, points_per_call):
        fixed = labels[start : start + points_per_call]  # (P,)
        m = len(fixed) * batch_size
        first = _sample(sample_factors, m, n_factors, rng).reshape(len(fixed), batch_size, n_factors)
        second = _sample(sample_factors, m, n_factors, rng).reshape(len(fixed), batch_size, n_factors)
        point = np.arange(len(fixed))
        second[point, :, fixed] = first[point, :, fixed]  # both sides share factor k
        codes = _represent(represent, np.concatenate([first.reshape(m, -1), second.reshape(m, -1)]))  # (2M, D)
        difference = np.abs(codes[:m] - codes[m:]).reshape(len(fixed), batch_size, -1)
        features.append(difference.mean(axis=1))  # (P, D)
    return np.concatenate(features), labels


def _sample(sample_factors: Callable, n: int, n_factors: int, rng: np.random.Generator) -> np.ndarray:
    factors = np.array(sample_factors(n, rng), dtype=np.float64)
    if factors.shape != (n, n_factors):
        raise VaekitError(f"sample_factors({n}, rng) returned shape {factors.shape}, expected ({n}, {n_factors})")
    return factors


def _represent(represent: Callable[[np.ndarray], np.ndarray], factors: np.ndarray) -> np.ndarray:
    codes = np.asarray(represent(factors), dtype=np.float64)
    if codes.ndim != 2 or codes.shape[0] != factors.shape[0]:
        raise VaekitError(f"represent(factors of shape {factors.shape}) returned shape {codes.shape}, expected (M, D)")
    if not np.isfinite(codes).all():
        raise VaekitError("represent returned NaN or infinite codes")
    return codes


def _check_pair(codes: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes, factors = np.asarray(codes, dtype=np.float64), np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2:
        raise VaekitError(f"codes and factors must be 2-D (N, D) and (N, K); got {codes.shape} and {factors.shape}")
    if codes.shape[0] != factors.shape[0]:
        raise VaekitError(f"codes have {codes.shape[0]} rows but factors {factors.shape[0]}: one row per item in both")
    if codes.shape[0] < 2:
        raise VaekitError(f"need at least 2 items, got {codes.shape[0]}")
    if not np.isfinite(codes).all():
        raise VaekitError("codes contain NaN or infinity")
    if factors.dtype.kind in "fc" and not np.isfinite(factors).all():  # np.unique made the NaNs one more value
        raise VaekitError("factors contain NaN or infinity: drop those items, or give their factors")
    return codes, factors

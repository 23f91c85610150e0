"""Pure metrics for comparing generative autoencoders: Fréchet distance, prior holes, interpolation smoothness."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import VaekitError


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix; tiny negative eigenvalues (round-off) clip to 0."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Squared 2-Wasserstein distance between N(mu1, cov1) and N(mu2, cov2) (Dowson & Landau 1982):

    ||mu1 - mu2||^2 + tr(cov1 + cov2 - 2 (cov1^1/2 cov2 cov1^1/2)^1/2),

    the formula behind FID (Heusel et al. 2017). The symmetric form needs only eigendecompositions, no sqrtm.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise VaekitError(
            f"frechet_distance needs means (D,) and covariances (D, D) of one D, got {mu1.shape}, {cov1.shape}, "
            f"{mu2.shape}, {cov2.shape}"
        )
    root1 = _symmetric_sqrt(cov1)
    middle = root1 @ cov2 @ root1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    value = float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * cross)
    return max(value, 0.0)  # round-off can leave -1e-12 for identical inputs


def feature_frechet_distance(features1: np.ndarray, features2: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fit (mean, unbiased covariance) to two feature sets (N, D), (M, D)."""
    a, b = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise VaekitError(f"need two feature sets (N >= 2, D) of one D, got shapes {a.shape} and {b.shape}")
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def nearest_distances(query: np.ndarray, reference: np.ndarray, exclude_self: bool = False,
                      batch_size: int = 2048) -> np.ndarray:
    """Euclidean distance from each query row to its nearest reference row: (N,). exclude_self: query is reference."""
    q, r = torch.as_tensor(np.asarray(query, np.float64)), torch.as_tensor(np.asarray(reference, np.float64))
    out = []
    for start in range(0, len(q), batch_size):
        distances = torch.cdist(q[start:start + batch_size], r)  # (B, M)
        if exclude_self:
            rows = torch.arange(distances.shape[0])
            distances[rows, rows + start] = float("inf")
        out.append(distances.min(1).values)
    return torch.cat(out).numpy()


def _present(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """The values as float64, flat, NaNs (units left out) dropped."""
    v = np.asarray(values, np.float64).ravel()
    return v[~np.isnan(v)]


def standard_error(values: np.ndarray | torch.Tensor) -> float | None:
    """Standard error of the mean of independent values (NaNs left out); None for fewer than two."""
    v = _present(values)
    return float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None


def share_standard_error(flags: np.ndarray | torch.Tensor) -> float | None:
    """Standard error of a share of independent yes/no draws (NaNs left out), the Agresti-Coull way: the share and
    the count with two yeses and two noes added, sqrt(p~ (1 - p~) / (n + 4)), p~ = (yes + 2) / (n + 4). Unlike
    the plain sqrt(p (1 - p) / n) it stays above 0 for a share of exactly 0 or 1 (none of 2000 draws is not a share
    known exactly). None for fewer than two draws."""
    v = _present(flags)
    if len(v) < 2:
        return None
    n = len(v) + 4
    p = (v.sum() + 2) / n
    return float(math.sqrt(p * (1 - p) / n))


def prior_hole_fraction(codes: np.ndarray, z: np.ndarray, quantile: float = 0.99) -> float:
    """Share of latent draws z (M, D) that land where no data is encoded (the mean of hole_flags)."""
    return float(np.mean(hole_flags(codes, z, quantile)))


def hole_flags(codes: np.ndarray, z: np.ndarray, quantile: float = 0.99) -> np.ndarray:
    """Whether each latent draw z (M, D) lands where no data is encoded: (M,) bool.

    A draw is in a hole when its distance to the nearest code (N, D) exceeds r, the `quantile` of the codes'
    own nearest-neighbour distances: farther from the data than all but 1 - quantile of the codes are from
    each other. With z drawn from the prior this is the prior mass outside the aggregate posterior; when
    the codes fill the prior it is about 1 - quantile, when they sit apart from it, about 1.
    """
    codes, z = np.asarray(codes, np.float64), np.asarray(z, np.float64)
    if codes.ndim != 2 or z.ndim != 2 or codes.shape[1] != z.shape[1] or len(codes) < 2 or len(z) < 1:
        raise VaekitError(f"need codes (N >= 2, D) and draws (M >= 1, D) of one D, got {codes.shape} and {z.shape}")
    if not 0 < quantile < 1:
        raise VaekitError(f"quantile must be in (0, 1), got {quantile}")
    radius = np.quantile(nearest_distances(codes, codes, exclude_self=True), quantile)
    return nearest_distances(z, codes) > radius


@dataclass(frozen=True)
class InterpolationSmoothness:
    """Image-space steps along interpolation paths, relative to each path's end-to-end distance, mean over paths.

    An even straight path scores 1 / (steps - 1) on both; a detour raises mean_jump, a sudden change max_jump
    (up to 1 when the whole change happens in one step).
    """

    mean_jump: float  # mean over steps of ||x_{t+1} - x_t|| / ||x_last - x_first||
    max_jump: float  # largest single step / ||x_last - x_first||
    steps: int  # images per path
    paths: int  # paths averaged

    @property
    def even(self) -> float:
        """The score of a perfectly even straight path."""
        return 1 / (self.steps - 1)


def interpolation_smoothness(paths: torch.Tensor | np.ndarray, min_distance: float = 1e-6) -> InterpolationSmoothness:
    """paths: (P, steps, ...) decoded interpolations. Paths whose endpoints coincide (< min_distance) are skipped."""
    mean_jumps, max_jumps = path_jumps(paths, min_distance)
    keep = ~np.isnan(mean_jumps)
    return InterpolationSmoothness(mean_jump=float(mean_jumps[keep].mean()), max_jump=float(max_jumps[keep].mean()),
                                   steps=int(np.shape(paths)[1]), paths=int(keep.sum()))


def path_jumps(paths: torch.Tensor | np.ndarray, min_distance: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Each path's mean and largest step relative to its end-to-end distance: two (P,) arrays, NaN for a path whose
    endpoints coincide (< min_distance). interpolation_smoothness averages them over the paths."""
    x = torch.as_tensor(np.asarray(paths, np.float64) if not torch.is_tensor(paths) else paths).double().cpu()
    if x.ndim < 3 or x.shape[1] < 2:
        raise VaekitError(f"paths must be (paths, steps >= 2, ...), got shape {tuple(x.shape)}")
    x = x.flatten(2)  # (P, S, F)
    jumps = (x[:, 1:] - x[:, :-1]).norm(dim=2)  # (P, S - 1)
    span = (x[:, -1] - x[:, 0]).norm(dim=1)  # (P,)
    keep = span > min_distance
    if not bool(keep.any()):
        raise VaekitError("every path starts and ends at the same image: pick pairs of different items")
    ratios = jumps / span.clamp_min(min_distance)[:, None]
    mean_jumps, max_jumps = ratios.mean(1).numpy(), ratios.max(1).values.numpy()
    mean_jumps[~keep.numpy()] = max_jumps[~keep.numpy()] = np.nan
    return mean_jumps, max_jumps

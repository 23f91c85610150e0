"""Operations in latent space, on posterior means: encode a data set, interpolate, and more."""
from __future__ import annotations

import torch

from .errors import VaekitError
from .models import Model


@torch.no_grad()
def encode_dataset(model: Model, x: torch.Tensor, batch_size: int = 1000, sample: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Posterior means (or one draw each with sample=True) for every item: (N, latent_dim)."""
    codes = []
    for start in range(0, x.shape[0], batch_size):
        qz = model.encode(x[start:start + batch_size].to(model.device))
        if sample:
            noise = torch.randn(qz.mean.shape, generator=generator).to(model.device)
            codes.append((qz.mean + qz.stddev * noise).cpu())
        else:
            codes.append(qz.mean.cpu())
    return torch.cat(codes) if codes else torch.empty(0, model.latent_dim)


def lerp(z1: torch.Tensor, z2: torch.Tensor, steps: int) -> torch.Tensor:
    t = torch.linspace(0, 1, steps, dtype=z1.dtype, device=z1.device).unsqueeze(1)
    return (1 - t) * z1 + t * z2  # (steps, D)


def slerp(z1: torch.Tensor, z2: torch.Tensor, steps: int) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985) of direction, with the norm interpolated linearly."""
    t = torch.linspace(0, 1, steps, dtype=z1.dtype, device=z1.device).unsqueeze(1)
    n1, n2 = z1.norm(), z2.norm()
    u1, u2 = z1 / n1.clamp_min(1e-12), z2 / n2.clamp_min(1e-12)
    omega = torch.arccos((u1 * u2).sum().clamp(-1.0, 1.0))
    if float(omega) < 1e-6:  # parallel codes: the great circle is undefined and lerp is exact
        return lerp(z1, z2, steps)
    direction = (torch.sin((1 - t) * omega) * u1 + torch.sin(t * omega) * u2) / torch.sin(omega)
    return direction * ((1 - t) * n1 + t * n2)


@torch.no_grad()
def interpolate(model: Model, x1: torch.Tensor, x2: torch.Tensor, steps: int = 10, method: str = "lerp") -> torch.Tensor:
    """Decoded path between the posterior means of two items: (steps, *data_shape), endpoints included."""
    if steps < 2:
        raise VaekitError(f"--steps must be at least 2 (the two endpoints), got {steps}")
    paths = {"lerp": lerp, "slerp": slerp}
    if method not in paths:
        raise VaekitError(f"unknown interpolation {method!r}: use lerp or slerp")
    batch = torch.stack([x1, x2]).to(model.device)
    z = model.encode(batch).mean
    return model.decode(paths[method](z[0], z[1], steps)).mean

"""Pictures of results: image grids and captioned panels, written as PNG."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import VaekitError

MIN_CELL = 56  # small images (8x8 digits) are enlarged, nearest-neighbour, to at least this many pixels


def to_uint8_images(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] -> (N, H, W, C) uint8; clips what a Gaussian decoder overshoots."""
    array = images.detach().cpu().float().numpy() if torch.is_tensor(images) else np.asarray(images, dtype=np.float32)
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise VaekitError(
            f"cannot draw data of shape {tuple(array.shape[1:])} as images (need 1 or 3 channels): write .npy instead"
        )
    return (np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)


def image_grid(images: torch.Tensor | np.ndarray, ncol: int | None = None, pad: int = 2) -> Image.Image:
    """Tile images row-major into one picture, ncol per row (default: about square)."""
    tiles = to_uint8_images(images)
    n, h, w, c = tiles.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    zoom = max(1, math.ceil(MIN_CELL / max(h, w))) if max(h, w) < MIN_CELL else 1
    canvas = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = tiles[i]
    picture = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    if zoom > 1:
        picture = picture.resize((picture.width * zoom, picture.height * zoom), Image.NEAREST)
    return picture


def save_images(images: torch.Tensor | np.ndarray, path: str | Path, ncol: int | None = None) -> Path:
    """.png: a grid; .npy: the raw array (N, *data_shape), as every image-writing command accepts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        array = images.detach().cpu().numpy() if torch.is_tensor(images) else np.asarray(images)
        np.save(path, array)
    elif path.suffix.lower() == ".png":
        image_grid(images, ncol).save(path)
    else:
        raise VaekitError(f"cannot write {path.name}: --out must end in .png (a picture) or .npy (the arrays)")
    return path


def captioned_panels(panels: list[tuple[str, torch.Tensor]], path: str | Path, ncol: int | None = None) -> Path:
    """Several grids side by side, each under its caption (e.g. VAE vs AE prior samples)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grids = [np.asarray(image_grid(images, ncol)) for _, images in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6), squeeze=False)
    for ax, (title, _), grid in zip(axes[0], panels, grids):
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=12)
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

"""Procedural dSprites-like shapes: binary images of a square, an ellipse or a heart with known factors."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..config import DataConfig
from ..errors import VaekitError
from . import Dataset, register_dataset
from .safe import check_memory

# The factors as dSprites defines them (Matthey et al. 2017), in this column order everywhere.
# x moves the shape right, y moves it down; orientation turns it counter-clockwise as displayed.
FACTOR_NAMES = ("shape", "scale", "orientation", "x", "y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPE_NAMES = ("square", "ellipse", "heart")

DEFAULT_IMAGE_SIZE = 64
N_TRAIN, N_TEST = 20_000, 2_000
SEED = 0

# Every shape fits the unit disk of its own frame (u, v), so one radius bounds it at any orientation.
RADIUS = 0.2  # of the image side, at scale 1
SQUARE_HALF_SIDE = 1 / math.sqrt(2)  # corners on the unit circle
ELLIPSE_AXES = (1.0, 0.5)  # a != b, so orientation shows
# The heart (x^2 + y^2 - 1)^3 <= x^2 y^3 has its centroid at (0, 0.2935) (numerical integration) and its
# tip (0, -1) farthest from it; turning about the centroid keeps the centre of mass at the position.
HEART_CENTROID_Y = 0.2935
HEART_RADIUS = 1 + HEART_CENTROID_Y

_CHUNK = 1024  # images per vectorised step: bounds the temporary (chunk, S, S) arrays to a few MB


def factor_grid() -> dict[str, np.ndarray]:
    """The discrete values of each factor, a fresh copy per call: shape 0/1/2, scale, orientation, x, y."""
    return {
        "shape": np.arange(3, dtype=np.float64),
        "scale": np.linspace(0.5, 1.0, 6),
        "orientation": np.linspace(0.0, 2 * math.pi, 40),  # as in dSprites, 0 and 2 pi both appear
        "x": np.linspace(0.0, 1.0, 32),
        "y": np.linspace(0.0, 1.0, 32),
    }


def factors_from_indices(indices: np.ndarray) -> np.ndarray:
    """(N, 5) integer grid indices -> (N, 5) factor values."""
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.shape[1] != len(FACTOR_NAMES):
        raise VaekitError(f"factor indices must be (N, {len(FACTOR_NAMES)}), got shape {indices.shape}")
    grid = factor_grid()
    columns = []
    for k, name in enumerate(FACTOR_NAMES):
        column = indices[:, k]
        if column.size and (column.min() < 0 or column.max() >= FACTOR_SIZES[k]):
            raise VaekitError(
                f"factor {name} index outside 0..{FACTOR_SIZES[k] - 1}: got {column.min()}..{column.max()}"
            )
        columns.append(grid[name][column])
    return np.stack(columns, axis=1)


def sample_factors(n: int, rng: np.random.Generator) -> np.ndarray:
    """n factor combinations, each factor uniform over its grid, independently: (n, 5) values."""
    indices = np.stack([rng.integers(0, size, n) for size in FACTOR_SIZES], axis=1)
    return factors_from_indices(indices)


def render(factors: np.ndarray, image_size: int = DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """(N, 5) factor values -> float32 (N, 1, S, S) images of exactly 0 and 1.

    A pixel is on when its centre, turned and scaled into the shape's frame, lies inside the shape.
    Values between the grid points are allowed (scale in (0, 1], x and y in [0, 1], any orientation).
    """
    factors = _check_factors(factors)
    if image_size < 4:
        raise VaekitError(f"image_size must be at least 4, got {image_size}")
    n, size = len(factors), int(image_size)
    images = np.zeros((n, 1, size, size), dtype=np.float32)
    centre_x, centre_y = _centres(factors[:, 3], size), _centres(factors[:, 4], size)
    pixel = ((np.arange(size) + 0.5) / size).astype(np.float32)  # pixel centres in [0, 1]
    for shape_index, inside in enumerate((_inside_square, _inside_ellipse, _inside_heart)):
        members = np.flatnonzero(factors[:, 0] == shape_index)
        for start in range(0, len(members), _CHUNK):
            index = members[start : start + _CHUNK]
            radius = (RADIUS * factors[index, 1]).astype(np.float32)[:, None, None]
            angle = factors[index, 2]
            cos = np.cos(angle).astype(np.float32)[:, None, None]
            sin = np.sin(angle).astype(np.float32)[:, None, None]
            dx = (pixel[None, None, :] - centre_x[index, None, None]) / radius  # (B, 1, S)
            dy = (centre_y[index, None, None] - pixel[None, :, None]) / radius  # (B, S, 1), up is positive
            # Rotate the image offset by -orientation into the shape's frame.
            u = cos * dx + sin * dy  # (B, S, S)
            v = cos * dy - sin * dx
            images[index, 0] = inside(u, v)
    return images


def _check_factors(factors: np.ndarray) -> np.ndarray:
    factors = np.asarray(factors, dtype=np.float64)
    if factors.ndim != 2 or factors.shape[1] != len(FACTOR_NAMES):
        raise VaekitError(
            f"factors must be an (N, {len(FACTOR_NAMES)}) array with columns {', '.join(FACTOR_NAMES)}; "
            f"got shape {factors.shape}"
        )
    if not np.isfinite(factors).all():
        raise VaekitError("factors contain NaN or infinity")
    shape, scale, position = factors[:, 0], factors[:, 1], factors[:, 3:]
    if not np.isin(shape, (0, 1, 2)).all():
        raise VaekitError(f"factor shape must be 0 (square), 1 (ellipse) or 2 (heart); got {np.unique(shape)}")
    if scale.size and (scale.min() <= 0 or scale.max() > 1):
        raise VaekitError(f"factor scale must be in (0, 1], got {scale.min():g}..{scale.max():g}")
    if position.size and (position.min() < 0 or position.max() > 1):
        raise VaekitError(f"factors x and y must be in [0, 1], got {position.min():g}..{position.max():g}")
    return factors


def _centres(position: np.ndarray, size: int) -> np.ndarray:
    """Map a position in [0, 1] to the interior band, so a scale-1 shape keeps one empty pixel of border."""
    margin = RADIUS + 1.0 / size
    return (margin + position * (1 - 2 * margin)).astype(np.float32)


def _inside_square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= SQUARE_HALF_SIDE


def _inside_ellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    a, b = ELLIPSE_AXES
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def _inside_heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    x = u * HEART_RADIUS
    y = v * HEART_RADIUS + HEART_CENTROID_Y
    x2 = x * x
    q = x2 + y * y - 1
    return q * q * q <= x2 * y * y * y


def make_shapes(
    n_train: int = N_TRAIN,
    n_test: int = N_TEST,
    image_size: int = DEFAULT_IMAGE_SIZE,
    seed: int = SEED,
    limit: int | None = None,
) -> Dataset:
    """Distinct factor combinations drawn uniformly from the grid (no item is in both splits), then rendered.

    limit keeps the first training items only; they are the same items as without a limit.
    """
    total = math.prod(FACTOR_SIZES)
    if n_train < 1 or n_test < 1 or n_train + n_test > total:
        raise VaekitError(f"shapes needs n_train, n_test >= 1 and n_train + n_test <= {total}; got {n_train}, {n_test}")
    rng = np.random.default_rng(seed)
    flat = rng.choice(total, size=n_train + n_test, replace=False)
    factors = factors_from_indices(np.stack(np.unravel_index(flat, FACTOR_SIZES), axis=1))
    train, test = factors[:n_train][:limit], factors[n_train:]
    # float32 images of both splits (with torch's copy) and one chunk's float64 work
    check_memory((len(train) + len(test)) * image_size ** 2 * 8 + _CHUNK * image_size ** 2 * 8 * 4,
                 f"{len(train) + len(test):,} shapes of {image_size}x{image_size}", "choose a smaller --image-size "
                 f"(the default is {DEFAULT_IMAGE_SIZE}), or fewer items with --limit")
    return Dataset(
        name="shapes",
        x_train=torch.from_numpy(render(train, image_size)),
        x_test=torch.from_numpy(render(test, image_size)),
        y_train=torch.from_numpy(train[:, 0].astype(np.int64)),
        y_test=torch.from_numpy(test[:, 0].astype(np.int64)),
        label_names=SHAPE_NAMES,
        attributes_train=_attributes(train),
        attributes_test=_attributes(test),
        is_image=True,
        binary=True,
    )


def _attributes(factors: np.ndarray) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(factors[:, k].astype(np.float32)) for k, name in enumerate(FACTOR_NAMES)}


@register_dataset(
    "shapes",
    f"procedural dSprites-like square/ellipse/heart with known factors ({N_TRAIN:,} train / {N_TEST:,} test), "
    f"{DEFAULT_IMAGE_SIZE}x{DEFAULT_IMAGE_SIZE}; data.image_size=32 for a fast variant",
    sized=True,
)
def load_shapes(cfg: DataConfig) -> Dataset:
    # Rendering only the kept prefix gives what the registry's limit would keep, without the cost.
    return make_shapes(image_size=cfg.image_size or DEFAULT_IMAGE_SIZE, limit=cfg.limit)


def area(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """Sum of pixel intensities per image: (N, [1,] S, S) -> (N,)."""
    pixels = _as_stack(images)
    return pixels.sum(axis=(1, 2))


def centre_of_mass(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """Intensity-weighted mean pixel centre per image, as (x, y) fractions of the side: (N, 2).

    x grows to the right and y downwards, as the factors do; an empty image gives NaN.
    """
    pixels = _as_stack(images)
    size_y, size_x = pixels.shape[1:]
    mass = pixels.sum(axis=(1, 2))
    column = (np.arange(size_x) + 0.5) / size_x
    row = (np.arange(size_y) + 0.5) / size_y
    with np.errstate(invalid="ignore", divide="ignore"):
        x = (pixels.sum(axis=1) * column).sum(axis=1) / mass
        y = (pixels.sum(axis=2) * row).sum(axis=1) / mass
    return np.stack([x, y], axis=1)


def _as_stack(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """(N, S, S) or single-channel (N, 1, S, S) images as float64 (N, S, S)."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    pixels = np.asarray(images, dtype=np.float64)
    if pixels.ndim == 4 and pixels.shape[1] == 1:
        pixels = pixels[:, 0]
    if pixels.ndim != 3:
        raise VaekitError(f"expected images of shape (N, S, S) or (N, 1, S, S), got {pixels.shape}")
    return pixels

"""Operations in latent space, on posterior means: encode, interpolate, traverse, attribute vectors, maps.

Every operation encodes items to the mean of q(z|x) (never a draw, except `vary`, whose point is the draws)
and shows codes through the decoder's likelihood mean.
"""
from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .distributions import PointMass
from .errors import VaekitError
from .models import Model

log = logging.getLogger(__name__)


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


def item_code(model: Model, x_item: torch.Tensor, what: str = "item") -> torch.Tensor:
    """The posterior mean of one item (shape = the model's data shape): (latent_dim,)."""
    if tuple(x_item.shape) != tuple(model.data_shape):
        raise VaekitError(f"{what} has shape {tuple(x_item.shape)}, expected one item of shape {tuple(model.data_shape)}")
    return encode_dataset(model, x_item[None])[0]


@torch.no_grad()
def decode_mean(model: Model, z: torch.Tensor) -> torch.Tensor:
    """Codes (B, D) -> likelihood means (B, *data_shape), on the CPU."""
    return model.decode(z.to(model.device)).mean.cpu()


# ---- paths between two items ------------------------------------------------------------------------------


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


# ---- one item's posterior ---------------------------------------------------------------------------------


@torch.no_grad()
def vary(model: Model, x_item: torch.Tensor, n: int = 8, generator: torch.Generator | None = None) -> torch.Tensor:
    """n decoded draws z ~ q(z|x) of one item: (n, *data_shape). An AE's posterior is one point: n equal images.

    z = mean + stddev * eps with eps ~ N(0, I) from `generator`, which is exact for the location-scale
    posteriors of every family here (diagonal Gaussian, point mass).
    """
    if n < 1:
        raise VaekitError(f"--n must be at least 1, got {n}")
    if tuple(x_item.shape) != tuple(model.data_shape):
        raise VaekitError(f"item has shape {tuple(x_item.shape)}, expected one item of shape {tuple(model.data_shape)}")
    qz = model.encode(x_item[None].to(model.device))
    eps = torch.randn((n, model.latent_dim), generator=generator).to(model.device)
    return decode_mean(model, qz.mean + qz.stddev * eps)  # (n, D) codes, broadcast from (1, D)


# ---- traversals -------------------------------------------------------------------------------------------


@torch.no_grad()
def dimension_scores(model: Model, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """How much each latent dimension is used, over items x: (latent_dim,).

    A VAE: the mean over items of KL(q(z_d|x) || p(z_d)) per dimension (a collapsed dimension scores ~0).
    An AE has no KL (its posterior is a point): the variance of its codes per dimension instead.
    """
    from . import metrics  # the evaluator's own estimators, so the ranking and the report agree

    if x.shape[0] < 2:
        raise VaekitError(f"ranking latent dimensions needs at least 2 items, got {x.shape[0]}")
    if isinstance(model.encode(x[:1].to(model.device)), PointMass):
        return metrics.posterior_mean_variance(model, x).float()
    return metrics.kl_per_dim(model, x).float()


@dataclass(frozen=True)
class Traversal:
    """Decoded codes of one item with one dimension at a time set to each of `values`, the others kept."""

    images: torch.Tensor  # (n_dims, n_values, *data_shape)
    dims: tuple[int, ...]  # the varied dimension of each row
    values: torch.Tensor  # (n_values,) absolute values the varied dimension takes
    code: torch.Tensor  # (latent_dim,) the item's posterior mean

    def grid(self) -> torch.Tensor:
        """(n_dims * n_values, *data_shape): one row per dimension, as image_grid(ncol=n_values) draws it."""
        return self.images.flatten(0, 1)


def traverse(
    model: Model,
    x: torch.Tensor,
    dims: Sequence[int] | None = None,
    top_n: int | None = None,
    values: torch.Tensor | Sequence[float] | None = None,
    data: torch.Tensor | None = None,
) -> Traversal:
    """Vary one latent dimension at a time over `values`, the others fixed at the item x's posterior mean.

    `values` are absolute code values (default -3..3 in 9 steps), not offsets from the item's code: for a
    VAE they are measured in prior standard deviations, so every row spans the region of N(0, 1) the
    decoder was trained on, whatever the item. (An AE's codes have no fixed scale: choose values from them.)
    dims picks the dimensions; top_n instead picks the n most used ones over `data` (see dimension_scores),
    most used first; neither gives every dimension in order.
    """
    values = torch.linspace(-3, 3, 9) if values is None else torch.as_tensor(values, dtype=torch.float32).flatten()
    if values.numel() < 1 or not torch.isfinite(values).all():
        raise VaekitError(f"traversal values must be finite numbers, got {values.tolist()}")
    chosen = _traversal_dims(model, dims, top_n, data)
    code = item_code(model, x)
    z = code.repeat(len(chosen), len(values), 1)  # (n_dims, n_values, D)
    for row, dim in enumerate(chosen):
        z[row, :, dim] = values
    images = decode_mean(model, z.flatten(0, 1)).unflatten(0, (len(chosen), len(values)))
    return Traversal(images=images, dims=chosen, values=values, code=code)


def _traversal_dims(model: Model, dims: Sequence[int] | None, top_n: int | None, data: torch.Tensor | None) -> tuple[int, ...]:
    d = model.latent_dim
    if dims is not None and top_n is not None:
        raise VaekitError("give the dimensions to traverse (--dims) or how many of the most used (--top), not both")
    if top_n is not None:
        if not 1 <= top_n <= d:
            raise VaekitError(f"--top must be between 1 and the latent size {d}, got {top_n}")
        if data is None:
            raise VaekitError("top_n ranks dimensions over a batch of items: pass data=")
        return tuple(int(i) for i in torch.argsort(dimension_scores(model, data), descending=True)[:top_n])
    if dims is None:
        return tuple(range(d))
    dims = tuple(int(i) for i in dims)
    bad = [i for i in dims if not 0 <= i < d]
    if not dims or bad or len(set(dims)) != len(dims):
        raise VaekitError(f"--dims must be distinct latent dimensions in 0..{d - 1}, got {','.join(map(str, dims))}")
    return dims


# ---- attribute vectors ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttributeGroups:
    """Two disjoint groups of items: with the attribute (mask) and what it is compared against (versus)."""

    name: str
    mask: torch.Tensor  # (N,) bool
    versus: torch.Tensor  # (N,) bool
    description: str  # e.g. "scale > median 0.8 (1203 items) vs < 0.8 (1180 items)"


def attribute_vector(model: Model, x: torch.Tensor, mask: torch.Tensor, versus: torch.Tensor | None = None) -> torch.Tensor:
    """Mean code of the items in mask minus the mean code of those in versus (default: all others): (D,).

    Adding it to a code adds the attribute (White 2016, "smile vector"); its sign points towards mask.
    """
    mask = torch.as_tensor(mask)
    versus = ~mask if versus is None else torch.as_tensor(versus)
    for name, group in (("mask", mask), ("versus", versus)):
        if group.dtype != torch.bool or tuple(group.shape) != (x.shape[0],):
            raise VaekitError(f"{name} must be a bool tensor of shape ({x.shape[0]},), got {group.dtype} {tuple(group.shape)}")
    if (mask & versus).any():
        raise VaekitError(f"{int((mask & versus).sum())} item(s) are in both groups: the groups must be disjoint")
    if not mask.any() or not versus.any():
        raise VaekitError(
            f"an attribute vector needs items in both groups, got {int(mask.sum())} with and {int(versus.sum())} without"
        )
    return encode_dataset(model, x[mask]).mean(0) - encode_dataset(model, x[versus]).mean(0)


@torch.no_grad()
def apply_attribute(model: Model, x_item: torch.Tensor, vector: torch.Tensor,
                    strengths: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Decoded code + s * vector for each strength s: (len(strengths), *data_shape). s = 0 is the reconstruction."""
    strengths = torch.as_tensor(strengths, dtype=torch.float32).flatten()
    if vector.shape != (model.latent_dim,):
        raise VaekitError(f"attribute vector has shape {tuple(vector.shape)}, expected ({model.latent_dim},)")
    code = item_code(model, x_item)
    return decode_mean(model, code + strengths[:, None] * vector.cpu().float())


def groups_from_values(values: torch.Tensor, name: str) -> AttributeGroups:
    """A 0/1 attribute: 1 vs 0. A continuous one: above its median vs below (items at the median in neither)."""
    values = torch.as_tensor(values).double().flatten()
    if torch.isin(values, torch.tensor([0.0, 1.0], dtype=values.dtype)).all():
        mask, versus = values == 1, values == 0
        description = f"{name} ({int(mask.sum())} items) vs not {name} ({int(versus.sum())} items)"
    else:
        median = float(np.median(values.numpy()))
        mask, versus = values > median, values < median
        description = f"{name} > median {median:g} ({int(mask.sum())} items) vs < {median:g} ({int(versus.sum())} items)"
    if not mask.any() or not versus.any():
        raise VaekitError(f"attribute {name} has only one group in these items ({description}): choose another attribute")
    return AttributeGroups(name, mask, versus, description)


def groups_from_labels(y: torch.Tensor, label: str | int, versus: str | int | None = None,
                       label_names: Sequence[str] | None = None) -> AttributeGroups:
    """Items of class `label` (a class name or index) vs items of class `versus`, or vs all other classes."""
    y = torch.as_tensor(y).flatten()
    n_classes = len(label_names) if label_names else int(y.max()) + 1 if y.numel() else 0
    positive = _class_index(label, label_names, n_classes)
    mask = y == positive
    name = _class_name(positive, label_names)
    if versus is None:
        other, description_other = ~mask, "all other classes"
    else:
        negative = _class_index(versus, label_names, n_classes)
        if negative == positive:
            raise VaekitError(f"--versus names the same class as --attr ({name}): choose another class")
        other, description_other = y == negative, _class_name(negative, label_names)
    description = f"class {name} ({int(mask.sum())} items) vs {description_other} ({int(other.sum())} items)"
    if not mask.any() or not other.any():
        raise VaekitError(f"attribute {name} has only one group in these items ({description}): choose other classes")
    return AttributeGroups(name, mask, other, description)


def _class_name(index: int, label_names: Sequence[str] | None) -> str:
    return label_names[index] if label_names else str(index)


def _class_index(label: str | int, label_names: Sequence[str] | None, n_classes: int) -> int:
    text = str(label)
    if label_names and text in label_names:
        return list(label_names).index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < n_classes:
        return int(text)
    options = list(label_names) if label_names else [str(i) for i in range(n_classes)]
    close = difflib.get_close_matches(text, options, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise VaekitError(f"unknown class {text!r}: {hint}classes are {', '.join(options)} (or their index 0..{n_classes - 1})")


def find_attribute(dataset, split: str, name: str, versus: str | None = None,
                   table: str | Path | None = None) -> AttributeGroups:
    """Resolve an attribute by name for the items of one split of a data.Dataset.

    In order: a column of `table` (a CSV / CelebA attribute file, see data.user.load_attribute_table), a
    named attribute of the data set (e.g. shapes' scale, x), a class (name or index, optionally --versus
    another class). Table rows are matched to items by order: a Dataset records no file names yet.
    """
    x, y = dataset.split(split).x, dataset.split(split).y
    attributes = dataset.attributes_train if split == "train" else dataset.attributes_test
    if table is not None:
        from .data.user import load_attribute_table

        keys, columns = load_attribute_table(table)
        if name not in columns:
            raise VaekitError(f"{table} has no attribute {name!r}: {_hint(name, list(columns))}")
        if len(keys) != len(x):
            raise VaekitError(
                f"{table} has {len(keys)} rows but the {split} split has {len(x)} items: rows are matched to items by "
                "order (the data set records no file names), so give one row per item of the split, in order"
            )
        log.warning("matching %s rows to the %s items by order, not by file name", table, split)
        attributes = {name: columns[name]}
    if versus is not None and name in attributes:
        raise VaekitError(f"--versus compares two classes, but {name} is an attribute: drop --versus")
    if name in attributes:
        return groups_from_values(attributes[name], name)
    if y is not None:
        try:
            return groups_from_labels(y, name, versus, dataset.label_names)
        except VaekitError:
            if versus is not None or _is_class(name, dataset.label_names, y):
                raise
    classes = list(dataset.label_names or ([] if y is None else [str(i) for i in range(int(y.max()) + 1)]))
    known = list(attributes) + classes
    if not known:
        raise VaekitError(f"{dataset.name} has no attributes or class labels: give an attribute table with --attr-file")
    raise VaekitError(f"{dataset.name} has no attribute or class {name!r}: {_hint(name, known)}")


def _is_class(name: str, label_names: Sequence[str] | None, y: torch.Tensor) -> bool:
    return bool(label_names and name in label_names) or (name.isdigit() and int(name) <= int(y.max()))


def _hint(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    listed = ", ".join(options[:40]) + (", ..." if len(options) > 40 else "")
    return (f"did you mean {', '.join(close)}? " if close else "") + f"known: {listed}"


# ---- arithmetic and neighbours ----------------------------------------------------------------------------


def arithmetic(model: Model, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The decoded code z_a - z_b + z_c of three items ("a is to b as ? is to c"): (*data_shape)."""
    z = torch.stack([item_code(model, item, f"item {name}") for name, item in zip("abc", (a, b, c))])
    return decode_mean(model, (z[0] - z[1] + z[2])[None])[0]


@dataclass(frozen=True)
class Neighbours:
    indices: torch.Tensor  # (k,) or (Q, k) rows of `codes`, nearest first
    distances: torch.Tensor  # same shape, Euclidean


def nearest_neighbours(codes: torch.Tensor, query: torch.Tensor, k: int = 8) -> Neighbours:
    """The k codes nearest (Euclidean) to query (D,) or to each of queries (Q, D), nearest first."""
    if codes.dim() != 2 or query.shape[-1] != codes.shape[1] or query.dim() not in (1, 2):
        raise VaekitError(f"codes (N, D) and query (D,) or (Q, D) must share D, got {tuple(codes.shape)} and {tuple(query.shape)}")
    if not 1 <= k <= codes.shape[0]:
        raise VaekitError(f"--k must be between 1 and the number of items {codes.shape[0]}, got {k}")
    queries = query.reshape(-1, codes.shape[1]).to(codes)
    distances, indices = torch.cdist(queries.double(), codes.double()).topk(k, dim=1, largest=False, sorted=True)
    if query.dim() == 1:
        distances, indices = distances[0], indices[0]
    return Neighbours(indices=indices, distances=distances.to(codes.dtype))


# ---- a 2-D map of the codes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatentMap:
    """Codes placed in a plane: the code itself for a 2-D latent, else its two leading principal components."""

    points: np.ndarray  # (N, 2) = (codes - center) @ axes.T
    labels: np.ndarray | None  # (N,) class ids or attribute values, for colour
    projection: str  # "latent" | "pca"
    explained_variance: tuple[float, float]  # share of the codes' total variance along each plotted axis
    center: np.ndarray  # (D,) the code at the plot's origin: zeros for "latent", the mean code for "pca"
    axes: np.ndarray  # (2, D) orthonormal latent directions of the plot's axes

    def to_codes(self, points: np.ndarray) -> np.ndarray:
        """Plot coordinates (M, 2) back to codes (M, D) on the plotted plane (for decoding a manifold)."""
        return self.center + np.asarray(points, dtype=np.float64) @ self.axes


def latent_map(model: Model, x: torch.Tensor, labels: torch.Tensor | np.ndarray | None = None,
               method: str = "auto") -> LatentMap:
    """Project the posterior means of x into 2-D: method "latent" (needs latent_dim <= 2), "pca", or "auto"."""
    d = model.latent_dim
    if method not in ("auto", "latent", "pca"):
        raise VaekitError(f"unknown latent map method {method!r}: use auto, latent or pca")
    projection = ("latent" if d <= 2 else "pca") if method == "auto" else method
    if projection == "latent" and d > 2:
        raise VaekitError(f"the latent has {d} dimensions: a 'latent' map needs at most 2, use pca")
    if projection == "pca" and d < 2:
        raise VaekitError(f"the latent has {d} dimension: PCA to 2-D needs at least 2, use the 'latent' map")
    if x.shape[0] < 2:
        raise VaekitError(f"a latent map needs at least 2 items, got {x.shape[0]}")
    if labels is not None:
        labels = labels.cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
        if labels.shape != (x.shape[0],):
            raise VaekitError(f"labels have shape {labels.shape}, expected ({x.shape[0]},): one per item")
    codes = encode_dataset(model, x).double().numpy()  # (N, D)
    if projection == "latent":
        center, axes = np.zeros(d), np.eye(2, d)
    else:
        center = codes.mean(0)
        _, _, vt = np.linalg.svd(codes - center, full_matrices=False)
        axes = vt[:2] * np.sign(vt[:2, [0]] + (vt[:2, [0]] == 0))  # a fixed sign: first coordinate >= 0
    points = (codes - center) @ axes.T  # (N, 2)
    total = float(((codes - codes.mean(0)) ** 2).sum()) or 1.0
    share = ((points - points.mean(0)) ** 2).sum(0) / total
    return LatentMap(points.astype(np.float32), labels, projection, (float(share[0]), float(share[1])), center, axes)

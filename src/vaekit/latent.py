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

from .distributions import draw_noise, rsample_with
from .errors import VaekitError
from .models import Model, draw_prior

log = logging.getLogger(__name__)

MAX_CODE_VALUE = 1e6  # a code value beyond this is far outside anything a model was trained on


def check_code_values(codes: torch.Tensor | np.ndarray, what: str) -> None:
    """Codes a model can decode: finite, and within +-MAX_CODE_VALUE (beyond, float32 overflows or the decoder
    answers with noise)."""
    values = torch.as_tensor(codes, dtype=torch.float64)
    if values.numel() and (not bool(torch.isfinite(values).all()) or float(values.abs().max()) > MAX_CODE_VALUE):
        raise VaekitError(f"{what} holds values that are not finite or beyond +-{MAX_CODE_VALUE:g}: codes must be "
                          "finite numbers within that")


@torch.no_grad()
def encode_dataset(model: Model, x: torch.Tensor, batch_size: int = 1000, sample: bool = False,
                   generator: torch.Generator | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
    """Every item's code (N, *code_shape); with sample=True one draw z ~ q(z|x) each instead, its noise from
    `generator`. y: the labels of a label-conditioned model."""
    codes = []
    for start in range(0, x.shape[0], batch_size):
        yb = None if y is None else y[start:start + batch_size]
        qz = model.encode(x[start:start + batch_size].to(model.device), yb)
        if sample:
            codes.append(model.draw_code(rsample_with(qz, draw_noise(qz, generator=generator))).cpu())
        else:
            codes.append(model.code(qz).cpu())
    return torch.cat(codes) if codes else torch.empty(0, *model.code_shape)


@torch.no_grad()
def point_codes(model: Model, x: torch.Tensor, y: torch.Tensor | None = None) -> bool:
    """Whether the encoder gives items one code each, with no spread to draw from (a plain AE's, a VQ-VAE's, a
    Wasserstein AE's), rather than a posterior whose mean is the code: two seeded draws of a few items equal their
    codes."""
    x, y = x[:8], None if y is None else y[:8]
    code = encode_dataset(model, x, y=y)
    return all(torch.equal(code, encode_dataset(model, x, sample=True, generator=torch.Generator().manual_seed(seed),
                                                y=y)) for seed in (0, 1))


def item_code(model: Model, x_item: torch.Tensor, what: str = "item", y: int | torch.Tensor | None = None) -> torch.Tensor:
    """The code of one item (shape = the model's data shape): (*code_shape)."""
    if tuple(x_item.shape) != tuple(model.data_shape):
        raise VaekitError(f"{what} has shape {tuple(x_item.shape)}, expected one item of shape {tuple(model.data_shape)}")
    return encode_dataset(model, x_item[None], y=_one_label(y))[0]


@torch.no_grad()
def decode_mean(model: Model, z: torch.Tensor, y: int | torch.Tensor | None = None) -> torch.Tensor:
    """Codes (B, *code_shape) -> likelihood means (B, *data_shape), on the CPU. y: one label for all, or one each."""
    return model.decode_code(z.to(model.device), y).mean.cpu()


def _one_label(y: int | torch.Tensor | None) -> torch.Tensor | None:
    """One item's label as a (1,) tensor (more than one is refused: the rest were dropped in silence)."""
    if y is None:
        return None
    try:
        y = torch.as_tensor(y) if not isinstance(y, (str, bytes, bool)) else y
    except (TypeError, ValueError, RuntimeError):
        pass  # (not numbers: the model refuses it, naming it)
    if torch.is_tensor(y) and y.numel() != 1:
        raise VaekitError(f"one item takes one label, got {y.numel()}: give the item's class index")
    return y.reshape(1) if torch.is_tensor(y) else y  # (anything else: refused by the model, naming it)


def code_size(model: Model) -> int:
    return int(np.prod(model.code_shape))


# ---- paths between two items ------------------------------------------------------------------------------


def lerp(z1: torch.Tensor, z2: torch.Tensor, steps: int) -> torch.Tensor:
    return lerp_at(z1, z2, torch.linspace(0, 1, steps, dtype=z1.dtype, device=z1.device))  # (steps, D)


def slerp(z1: torch.Tensor, z2: torch.Tensor, steps: int) -> torch.Tensor:
    return slerp_at(z1, z2, torch.linspace(0, 1, steps, dtype=z1.dtype, device=z1.device))


def lerp_at(z1: torch.Tensor, z2: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The points of the straight path from z1 (D,) to z2 at fractions t (T,): (T, D)."""
    t = t.to(z1).reshape(-1, 1)
    return (1 - t) * z1 + t * z2


def slerp_at(z1: torch.Tensor, z2: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985) of direction, with the norm interpolated linearly, at fractions t."""
    t = t.to(z1).reshape(-1, 1)
    n1, n2 = z1.norm(), z2.norm()
    u1, u2 = z1 / n1.clamp_min(1e-12), z2 / n2.clamp_min(1e-12)
    cosine = float((u1 * u2).sum().clamp(-1.0, 1.0))
    # Parallel codes: lerp is exact. Opposite codes (any two of opposite sign for a 1-D code): no one great circle
    # joins them, and sin(omega) ~ 0 would divide rounding noise into the path; the straight line is the path.
    if z1.numel() < 2 or cosine > 1 - 1e-12 or cosine < -1 + 1e-6:
        return lerp_at(z1, z2, t)
    omega = torch.arccos(torch.tensor(cosine, dtype=z1.dtype, device=z1.device))
    direction = (torch.sin((1 - t) * omega) * u1 + torch.sin(t * omega) * u2) / torch.sin(omega)
    return direction * ((1 - t) * n1 + t * n2)


@torch.no_grad()
def interpolate(model: Model, x1: torch.Tensor, x2: torch.Tensor, steps: int = 10, method: str = "lerp",
                y1: int | torch.Tensor | None = None, y2: int | torch.Tensor | None = None,
                label: int | torch.Tensor | None = None) -> torch.Tensor:
    """Decoded path between the codes of two items: (steps, *data_shape), endpoints included. A label-conditioned
    model encodes each item with its label (y1, y2) and decodes the path with `label` (default y1)."""
    if steps < 2:
        raise VaekitError(f"--steps must be at least 2 (the two endpoints), got {steps}")
    paths = {"lerp": lerp, "slerp": slerp}
    if method not in paths:
        raise VaekitError(f"unknown interpolation {method!r}: use lerp or slerp")
    z1, z2 = item_code(model, x1, "item 1", y1).flatten(), item_code(model, x2, "item 2", y2).flatten()
    path = paths[method](z1, z2, steps).reshape(steps, *model.code_shape)
    return decode_mean(model, path, _one_label(label if label is not None else y1))


# ---- one item's posterior ---------------------------------------------------------------------------------


@torch.no_grad()
def vary(model: Model, x_item: torch.Tensor, n: int = 8, generator: torch.Generator | None = None,
         y: int | torch.Tensor | None = None) -> torch.Tensor:
    """n decoded draws z ~ q(z|x) of one item: (n, *data_shape). An AE's posterior is one point: n equal images.
    The posterior draws its own noise, from `generator`."""
    if n < 1:
        raise VaekitError(f"--n must be at least 1, got {n}")
    if tuple(x_item.shape) != tuple(model.data_shape):
        raise VaekitError(f"item has shape {tuple(x_item.shape)}, expected one item of shape {tuple(model.data_shape)}")
    label = _one_label(y)
    qz = model.encode(x_item[None].to(model.device), label)
    z = rsample_with(qz, draw_noise(qz, (n,), generator=generator))[:, 0]  # (n, *event)
    return model.decode(z, label).mean.cpu()


# ---- traversals -------------------------------------------------------------------------------------------


@torch.no_grad()
def dimension_scores(model: Model, x: torch.Tensor, batch_size: int = 1000, y: torch.Tensor | None = None) -> torch.Tensor:
    """How much each code dimension is used, over items x: (code size,).

    Where the KL factorises (a VAE): the mean over items of KL(q(z_d|x) || p(z_d)) per dimension (a collapsed
    dimension scores ~0). Otherwise (an AE, a mixture prior, a hierarchy): the variance of the codes per dimension.
    """
    from . import metrics  # the evaluator's own estimators, so the ranking and the report agree

    if x.shape[0] < 2:
        raise VaekitError(f"ranking latent dimensions needs at least 2 items, got {x.shape[0]}")
    if metrics.kl_per_dim_omitted(model, x, y) is None and tuple(model.prior().event_shape) == tuple(model.code_shape):
        return metrics.kl_per_dim(model, x, y).float()
    return metrics.posterior_mean_variance(model, x, y).float()


def prior_moments(model: Model, draws: int = 10_000,
                  y: int | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The prior's mean and standard deviation per code dimension, flattened: exact where the distribution
    knows them, else from `draws` seeded prior samples (given the label y, one for all, where the prior takes
    labels; without one, the prior over every class: its draws for each class in turn)."""
    y = _one_label(y) if model.prior_takes_labels and y is not None else None
    pz = model.prior() if y is None else model.prior_given(model.label_indices(y, 1))  # the class's own prior
    try:
        mean, std = pz.mean, pz.stddev
    except NotImplementedError:
        given = y
        if y is None and model.prior_takes_labels:  # no class chosen: every class in turn, an equal share each
            given = torch.arange(draws) % model.num_labels
        z = model.draw_code(draw_prior(model, draws, torch.Generator().manual_seed(0), given)).flatten(1).double()
        mean, std = z.mean(0), z.std(0)
    mean, std = mean.detach().flatten().float().cpu(), std.detach().flatten().float().cpu()
    if mean.numel() != code_size(model):
        raise VaekitError(f"the prior has {mean.numel()} dimensions but the code {code_size(model)}: traverse this "
                          "family's code with absolute values (absolute=True)")
    return mean, std


@dataclass(frozen=True)
class Traversal:
    """Decoded codes of one item with one dimension at a time set to each of `values`, the others kept."""

    images: torch.Tensor  # (n_dims, n_values, *data_shape)
    dims: tuple[int, ...]  # the varied dimension of each row (of the flattened code)
    values: torch.Tensor  # (n_values,) as given: prior standard deviations from the prior mean, or absolute
    positions: torch.Tensor  # (n_dims, n_values) the code value each cell decodes
    code: torch.Tensor  # (*code_shape) the item's code

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
    y: int | torch.Tensor | None = None,
    data_labels: torch.Tensor | None = None,
    absolute: bool = False,
) -> Traversal:
    """Vary one code dimension at a time over `values`, the others fixed at the item x's code.

    `values` (default -3..3 in 9 steps) are measured in the prior's standard deviations from the prior's mean,
    dimension by dimension (for a standard normal prior, the code values themselves), so every row spans the
    region the decoder was trained on, whatever the item and whatever the family's prior (a family without a
    likelihood bound, such as the ae or vqvae: the mean and spread of the codes of `data`, where given); absolute=True takes
    them as code values instead (an AE's codes have no fixed scale: choose values from them). dims picks the
    dimensions; top_n instead picks the n most used ones over `data` (see dimension_scores), most used first;
    neither gives every dimension in order. y: the item's label for a label-conditioned model.
    """
    values = torch.linspace(-3, 3, 9) if values is None else torch.as_tensor(values, dtype=torch.float32).flatten()
    if values.numel() < 1 or not torch.isfinite(values).all():
        raise VaekitError(f"traversal values must be finite numbers, got {values.tolist()}")
    chosen = _traversal_dims(model, dims, top_n, data, data_labels)
    code = item_code(model, x, y=y)
    index = torch.tensor(chosen)
    if absolute:
        positions = values.repeat(len(chosen), 1)
    else:
        if not model.codes_follow_prior and data is not None:  # an autoencoder's prior is nominal (a vqvae's is
            # learned later, over discrete codes): the codes' own spread over the data, as the explorer's sliders use
            codes = encode_dataset(model, data, y=data_labels).flatten(1).double()
            mean, std = codes.mean(0).float(), codes.std(0).float()
        else:
            mean, std = prior_moments(model, y=y)
        positions = mean[index, None] + std[index, None] * values  # (n_dims, n_values)
    z = code.flatten().repeat(len(chosen), len(values), 1)  # (n_dims, n_values, code size)
    for row, dim in enumerate(chosen):
        z[row, :, dim] = positions[row]
    z = z.flatten(0, 1).reshape(-1, *model.code_shape)
    images = decode_mean(model, z, _one_label(y)).unflatten(0, (len(chosen), len(values)))
    return Traversal(images=images, dims=chosen, values=values, positions=positions, code=code)


def _traversal_dims(model: Model, dims: Sequence[int] | None, top_n: int | None, data: torch.Tensor | None,
                    data_labels: torch.Tensor | None = None) -> tuple[int, ...]:
    d = code_size(model)
    if dims is not None and top_n is not None:
        raise VaekitError("give the dimensions to traverse (--dims) or how many of the most used (--top), not both")
    if top_n is not None:
        if not 1 <= top_n <= d:
            raise VaekitError(f"--top must be between 1 and the latent size {d}, got {top_n}")
        if data is None:
            raise VaekitError("top_n ranks dimensions over a batch of items: pass data=")
        scores = dimension_scores(model, data, y=data_labels)
        return tuple(int(i) for i in torch.argsort(scores, descending=True)[:top_n])
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


def attribute_vector(model: Model, x: torch.Tensor, mask: torch.Tensor, versus: torch.Tensor | None = None,
                     y: torch.Tensor | None = None) -> torch.Tensor:
    """Mean code of the items in mask minus the mean code of those in versus (default: all others): (*code_shape).
    y: the items' labels, for a label-conditioned model.

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
    with_y, versus_y = (None, None) if y is None else (y[mask], y[versus])
    return encode_dataset(model, x[mask], y=with_y).mean(0) - encode_dataset(model, x[versus], y=versus_y).mean(0)


@torch.no_grad()
def apply_attribute(model: Model, x_item: torch.Tensor, vector: torch.Tensor,
                    strengths: torch.Tensor | Sequence[float], y: int | torch.Tensor | None = None) -> torch.Tensor:
    """Decoded code + s * vector for each strength s: (len(strengths), *data_shape). s = 0 is the reconstruction."""
    strengths = torch.as_tensor(strengths, dtype=torch.float32).flatten()
    if tuple(vector.shape) != tuple(model.code_shape):
        raise VaekitError(f"attribute vector has shape {tuple(vector.shape)}, expected {tuple(model.code_shape)}")
    code = item_code(model, x_item, y=y)
    shaped = strengths.reshape(-1, *([1] * len(model.code_shape)))
    return decode_mean(model, code + shaped * vector.cpu().float(), _one_label(y))


def groups_from_values(values: torch.Tensor, name: str) -> AttributeGroups:
    """A 0/1 attribute: 1 vs 0. A continuous one: above its median vs below (items at the median in neither)."""
    values = torch.as_tensor(values).double().flatten()
    if torch.isin(values, torch.tensor([0.0, 1.0], dtype=values.dtype)).all():
        mask, versus = values == 1, values == 0
        description = f"{name} = 1 ({int(mask.sum())} items) vs {name} = 0 ({int(versus.sum())} items)"
    else:
        median = float(np.median(values.numpy()))
        mask, versus = values > median, values < median
        description = f"{name} > median {median:g} ({int(mask.sum())} items) vs < {median:g} ({int(versus.sum())} items)"
    if not mask.any() or not versus.any():
        raise VaekitError(f"attribute {name} has only one group in these items ({description}): choose another attribute")
    return AttributeGroups(name, mask, versus, description)


def groups_from_labels(y: torch.Tensor, label: str | int, versus: str | int | None = None,
                       label_names: Sequence[str] | None = None, where: str = "these items") -> AttributeGroups:
    """Items of class `label` (a class name or index) vs items of class `versus`, or vs all other classes.
    where: the items in words, for the message when a group is empty (e.g. "the train split")."""
    y = torch.as_tensor(y).flatten()
    n_classes = len(label_names) if label_names else int(y.max()) + 1 if y.numel() else 0
    present = torch.unique(y).tolist()  # what the messages list: the classes here, not every index below the largest
    positive = _class_index(label, label_names, n_classes, present)
    mask = y == positive
    name = _class_name(positive, label_names)
    if versus is None:
        other, description_other = ~mask, "all other classes"
    else:
        negative = _class_index(versus, label_names, n_classes, present)
        if negative == positive:
            raise VaekitError(f"--versus names the same class as --attr ({name}): choose another class")
        other, description_other = y == negative, _class_name(negative, label_names)
    description = f"class {name} ({int(mask.sum())} items) vs {description_other} ({int(other.sum())} items)"
    if not mask.any() or not other.any():
        raise VaekitError(f"attribute {name} has only one group in {where} ({description}): choose classes that "
                          f"{where} holds (a data set whose splits keep classes apart, as Olivetti keeps people, has "
                          "none in both)")
    return AttributeGroups(name, mask, other, description)


def _class_name(index: int, label_names: Sequence[str] | None) -> str:
    return label_names[index] if label_names else str(index)


def _class_index(label: str | int, label_names: Sequence[str] | None, n_classes: int,
                 present: Sequence[int] = ()) -> int:
    text = str(label)
    if label_names and text in label_names:
        return list(label_names).index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < n_classes:
        return int(text)
    options = list(label_names) if label_names else [str(i) for i in present]
    close = difflib.get_close_matches(text, options[:1000], n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    listed = ", ".join(options[:40]) + (", ..." if len(options) > 40 else "")
    raise VaekitError(f"unknown class {text!r}: {hint}classes are {listed} (or their index 0..{n_classes - 1})")


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
            return groups_from_labels(y, name, versus, dataset.label_names, where=f"the {split} split")
        except VaekitError:
            if versus is not None or _is_class(name, dataset.label_names, y):
                raise
    # the classes present in the split, not every index up to the largest (a label of 2^31 - 1 would list two billion)
    # nor every name (Olivetti's test people have no training items)
    present = [] if y is None else torch.unique(y).tolist()
    classes = [dataset.label_names[i] if dataset.label_names and i < len(dataset.label_names) else str(i)
               for i in present]
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


def arithmetic(model: Model, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
               labels: Sequence[int | None] | None = None) -> torch.Tensor:
    """The decoded code z_a - z_b + z_c of three items ("a is to b as ? is to c"): (*data_shape). labels: the
    three items' labels for a label-conditioned model; the result is decoded with c's."""
    labels = list(labels) if labels is not None else [None, None, None]
    z = torch.stack([item_code(model, item, f"item {name}", label) for name, item, label in zip("abc", (a, b, c), labels)])
    return decode_mean(model, (z[0] - z[1] + z[2])[None], _one_label(labels[2]))[0]


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
               method: str = "auto", y: torch.Tensor | None = None) -> LatentMap:
    """Project the codes of x into 2-D: method "latent" (needs a code of at most 2 numbers), "pca", or "auto".
    labels colour the points; y are the class labels a label-conditioned model encodes with."""
    d = code_size(model)
    if method not in ("auto", "latent", "pca"):
        raise VaekitError(f"unknown latent map method {method!r}: use auto, latent or pca")
    projection = ("latent" if d <= 2 else "pca") if method == "auto" else method
    if projection == "latent" and d > 2:
        raise VaekitError(f"the latent has {d} dimensions: a 'latent' map needs at most 2: use --method pca")
    if projection == "pca" and d < 2:
        raise VaekitError(f"the latent has {d} dimension: PCA to 2-D needs at least 2: use --method latent")
    if x.shape[0] < 2:
        raise VaekitError(f"a latent map needs at least 2 items, got {x.shape[0]}")
    if labels is not None:
        labels = labels.cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
        if labels.shape != (x.shape[0],):
            raise VaekitError(f"labels have shape {labels.shape}, expected ({x.shape[0]},): one per item")
    codes = encode_dataset(model, x, y=y).flatten(1).double().numpy()  # (N, D)
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

"""Attribute edits measured, not hoped for: a direction in latent space, a judge independent of the model, and the
share of held-out items the edit moves the way it claims."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .config import EDIT_METHODS
from .errors import VaekitError
from .latent import AttributeGroups, _one_label, decode_mean, encode_dataset, find_attribute, item_code
from .models import Model
from .threads import as_torch

log = logging.getLogger(__name__)

METHODS = EDIT_METHODS
LOCAL_NEIGHBOURS = 100  # per group, as Upchurch et al. 2017
LOCAL_STEPS = 4  # path steps per unit of strength
LOCAL_MAX_STRENGTH = 100.0  # a walk of 400 steps at most


def check_local_strengths(strengths: Sequence[float], steps: int = LOCAL_STEPS) -> None:
    """A local edit's strengths within +-LOCAL_MAX_STRENGTH (its walk takes `steps` steps per unit)."""
    for strength in strengths:
        if abs(strength) > LOCAL_MAX_STRENGTH:
            raise VaekitError(f"a local edit walks {steps} steps per unit of strength: use strengths within "
                              f"+-{LOCAL_MAX_STRENGTH:g}, got {strength:g}")


def attribute_direction(codes: torch.Tensor, groups: AttributeGroups, method: str = "mean-diff") -> torch.Tensor:
    """The edit direction from the codes of one split (N, *code_shape).

    mean-diff: mean code with the attribute minus mean code without (White 2016, the "smile vector").
    linear: the normal of a logistic regression separating the two groups in latent space, as long as the mean
    difference, so that the two methods are compared at equal distances in latent space.
    """
    if method not in METHODS:
        raise VaekitError(f"unknown --method {method!r}: use one of {', '.join(METHODS)}")
    if method == "local":
        raise VaekitError("--method local has a direction per code, not one vector: use attribute_edit")
    flat = codes.reshape(len(codes), -1).double()
    difference = flat[groups.mask].mean(0) - flat[groups.versus].mean(0)
    if method == "mean-diff":
        return difference.float().reshape(codes.shape[1:])
    from sklearn.linear_model import LogisticRegression

    both = groups.mask | groups.versus
    # Fitted on the codes as they are (not standardised): its weights are the boundary's normal in code space, and
    # the L2 penalty keeps a dimension the encoder barely uses (a tiny spread would need a huge weight) out of it.
    with as_torch():
        fit = LogisticRegression(max_iter=5000).fit(flat[both].numpy(), groups.mask[both].numpy())
    normal = torch.from_numpy(fit.coef_[0])
    if not (torch.isfinite(normal).all() and float(normal.norm()) > 0 and float(difference @ normal) != 0):
        raise VaekitError("--method linear found no direction: the codes of the two groups cannot be told apart (the "
                          "encoder gives them the same codes); train the model longer, or use --method mean-diff")
    normal = normal / normal.norm() * torch.sign(difference @ normal)  # pointing towards the attribute
    return (normal * difference.norm()).float().reshape(codes.shape[1:])


class AttributeEdit:
    """An attribute edit, `edit(codes, strength)` -> the edited codes (N, *code_shape) -> (N, *code_shape).

    mean-diff and linear add strength times one vector (`vector`) to every code. local follows the attribute where
    each code is (Deep Feature Interpolation, Upchurch et al. 2017, here in latent space): the direction at a code is
    the mean of its `neighbours` nearest training codes with the attribute (all, where fewer) minus the mean of its
    nearest without, and the edit walks it in `steps` steps per unit of strength, finding the neighbours again after
    each step, so that it can bend where the encoder folded the attribute into other factors. Its `vector` is the
    mean difference (the local direction with every code as a neighbour), for display only.
    """

    def __init__(self, method: str, vector: torch.Tensor, codes: torch.Tensor | None = None,
                 groups: AttributeGroups | None = None, neighbours: int = LOCAL_NEIGHBOURS, steps: int = LOCAL_STEPS):
        if method not in METHODS:
            raise VaekitError(f"unknown --method {method!r}: use one of {', '.join(METHODS)}")
        self.method, self.vector = method, vector
        self.steps = steps
        if method == "local":
            if codes is None or groups is None:
                raise VaekitError("a local edit needs the training codes and their groups: use attribute_edit")
            if neighbours < 1 or steps < 1:
                raise VaekitError(f"local edits need at least one neighbour and one step, got {neighbours}, {steps}")
            flat = codes.flatten(1).float()
            self._with, self._without = flat[groups.mask], flat[groups.versus]
            if not len(self._with) or not len(self._without):
                raise VaekitError(f"a local edit needs codes in both groups, got {len(self._with)} with the "
                                  f"attribute and {len(self._without)} without: choose an attribute both groups have")
            self.neighbours = (min(neighbours, len(self._with)), min(neighbours, len(self._without)))

    def __call__(self, codes: torch.Tensor, strength: float) -> torch.Tensor:
        strength = float(strength)
        if not math.isfinite(strength):
            raise VaekitError(f"an edit's strength must be a finite number, got {strength}")
        if self.method != "local":
            return codes + strength * self.vector.to(codes)
        check_local_strengths([strength], self.steps)
        n = math.ceil(abs(strength) * self.steps)
        z = codes.flatten(1).float()
        for _ in range(n):
            z = z + strength / n * self.direction(z)
        return z.reshape(codes.shape).to(codes.dtype)

    def direction(self, z: torch.Tensor, chunk: int = 512) -> torch.Tensor:
        """local: the direction at each of the codes z (N, D): the mean of the nearest codes with the attribute minus
        the mean of the nearest without."""
        if self.method != "local":
            return self.vector.flatten().to(z).expand(len(z), -1).clone()
        parts = []
        chunk = max(1, chunk * 64 // max(64, z.shape[1]))  # the neighbours gathered: (chunk, 100, D) at a time
        groups = [group.to(z.device) for group in (self._with, self._without)]
        for i in range(0, len(z), chunk):
            part = z[i:i + chunk]
            near = [group[torch.cdist(part, group).topk(k, largest=False).indices].mean(1)
                    for group, k in zip(groups, self.neighbours)]
            parts.append(near[0] - near[1])
        return torch.cat(parts) if parts else torch.zeros_like(z)


def attribute_edit(codes: torch.Tensor, groups: AttributeGroups, method: str = "mean-diff",
                   neighbours: int = LOCAL_NEIGHBOURS, steps: int = LOCAL_STEPS) -> AttributeEdit:
    """The edit of an attribute from the codes of one split (N, *code_shape): see AttributeEdit."""
    vector = attribute_direction(codes, groups, "mean-diff" if method == "local" else method)
    return AttributeEdit(method, vector, codes, groups, neighbours, steps)


@torch.no_grad()
def apply_edit(model: Model, x_item: torch.Tensor, edit: AttributeEdit, strengths: Sequence[float],
               y: int | torch.Tensor | None = None) -> torch.Tensor:
    """One item decoded after the edit at each strength: (len(strengths), *data_shape); strength 0 is the
    reconstruction."""
    code = item_code(model, x_item, y=y)[None]
    edited = torch.cat([edit(code, s) for s in strengths])
    return decode_mean(model, edited, _one_label(y))


# ---- judges: what an image shows, measured without the model -----------------------------------------------

@dataclass(frozen=True)
class Judge:
    """Reads the attribute off images (N, *data_shape) -> (N,) values that grow with it (a measurement, or a
    classifier's log-odds). `accuracy`: a classifier's accuracy on the test split's real images (None for a
    measurement); `threshold`: values above it are judged to have a 0/1 attribute. `others`: further measurements
    an edit should leave alone (name -> function)."""

    description: str
    read: Callable[[torch.Tensor], np.ndarray]
    accuracy: float | None = None
    threshold: float | None = None
    others: dict[str, Callable[[torch.Tensor], np.ndarray]] = field(default_factory=dict)


def shapes_judge(name: str) -> Judge | None:
    """The ground truth for procedural shapes: area for scale, centre of mass for x and y."""
    from .data.shapes import area, centre_of_mass

    measures = {"scale": lambda x: area(x), "x": lambda x: centre_of_mass(x)[:, 0],
                "y": lambda x: centre_of_mass(x)[:, 1]}
    if name not in measures:
        return None
    descriptions = {"scale": "area (sum of intensities)", "x": "centre of mass, x", "y": "centre of mass, y"}
    others = {k: v for k, v in measures.items() if k != name}
    return Judge(f"measured {descriptions[name]}", measures[name], others=others)


def classifier_judge(train_x: torch.Tensor, train_groups: AttributeGroups, test_x: torch.Tensor,
                     test_groups: AttributeGroups, components: int = 128, seed: int = 0) -> Judge:
    """A logistic regression on the pixels (through PCA), trained on the training split's real images of the two
    groups; its accuracy is measured on the test split's."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    both = train_groups.mask | train_groups.versus
    pixels = train_x[both].reshape(int(both.sum()), -1).numpy()
    n = min(components, pixels.shape[0] - 1, pixels.shape[1])
    model = make_pipeline(PCA(n, random_state=seed), StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    with as_torch():
        model.fit(pixels, train_groups.mask[both].numpy())

    def read(x: torch.Tensor) -> np.ndarray:
        return model.decision_function(x.reshape(len(x), -1).numpy())

    held = test_groups.mask | test_groups.versus
    accuracy = float(((read(test_x[held]) > 0) == test_groups.mask[held].numpy()).mean())
    return Judge(f"logistic regression on {n} principal components of the pixels, trained on {int(both.sum())} "
                 f"training images", read, accuracy=accuracy, threshold=0.0)


# ---- the score ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AttributeScore:
    """How well adding `strength * direction` to held-out codes does what it claims, per strength.

    moved: the share of items whose judged attribute moved from the reconstruction's (strength 0) in the requested
    direction. monotone: the share whose judged value rises strictly along the strengths; ends: the share whose
    value at the largest strength is above that at the smallest (rises end to end, whatever happens between: an item
    at the edge of a factor's range, pushed past it, may stall or turn back there). For a 0/1 attribute,
    flipped: the share of items without it (positive strengths) judged to have it after the edit, or of items with
    it (negative strengths) judged not to; best_strength: the smallest positive strength within a point of the most
    flips (None where no strength flips more than a point above the baseline: no edit works); baseline: the share
    of items without it judged to have it at strength 0 (the reconstruction: the judge's false alarms), and missed:
    the share of items with it judged not to have it there. change: mean
    absolute pixel change from the reconstruction, and outside: the same over the pixels where the two groups'
    mean images differ least (the half of the image away from the attribute), so an edit that replaces the whole
    item shows. others: mean absolute change of the judge's other measurements (shapes).
    """

    attribute: str
    method: str
    groups: str
    judge: str
    judge_accuracy: float | None
    items: int
    strengths: tuple[float, ...]
    moved: tuple[float | None, ...]
    monotone: float
    ends: float
    flipped: tuple[float | None, ...] | None
    baseline: float | None
    missed: float | None
    best_strength: float | None
    change: tuple[float, ...]
    outside: tuple[float, ...]
    others: dict[str, tuple[float, ...]]

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    def summary(self) -> str:
        lines = [f"{self.attribute} ({self.method}) on {self.items} held-out items; judge: {self.judge}"
                 + ("" if self.judge_accuracy is None else f", {self.judge_accuracy:.1%} accurate on test images")]
        header = "strength " + " ".join(f"{s:>7g}" for s in self.strengths)
        lines.append(header)
        lines.append("moved    " + " ".join("      -" if m is None else f"{m:7.1%}" for m in self.moved))
        if self.flipped is not None:
            lines.append("flipped  " + " ".join("      -" if f is None else f"{f:7.1%}" for f in self.flipped))
        lines.append("change   " + " ".join(f"{c:7.3f}" for c in self.change))
        lines.append("outside  " + " ".join(f"{c:7.3f}" for c in self.outside))
        for name, values in self.others.items():
            lines.append(f"{name:<8} " + " ".join(f"{v:7.3f}" for v in values))
        lines.append(f"monotone for {self.monotone:.1%} of items (end to end: {self.ends:.1%})"
                     + ("" if self.best_strength is None else f"; best strength {self.best_strength:g}")
                     + ("" if self.baseline is None else f"; before any edit, {self.baseline:.1%} of the items without it "
                        f"are judged to have it and {self.missed:.1%} of those with it not to"))
        for share, which, sign in ((self.baseline, "without it as having it", "positive"),
                                   (self.missed, "with it as not having it", "negative")):
            if share is not None and share >= 0.5:  # the flips then say more about the judge than about the edit
                lines.append(f"warning: the judge reads {share:.0%} of the unedited items {which}, so the flips at "
                             f"{sign} strengths say little about the edit")
        return "\n".join(lines)


@torch.no_grad()
def score_attribute(model: Model, dataset, name: str, strengths: Sequence[float] = (-2, -1, 0, 1, 2),
                    method: str = "mean-diff", versus: str | None = None, items: int | None = None,
                    seed: int = 0, judge: Judge | None = None,
                    train_codes: torch.Tensor | None = None) -> AttributeScore:
    """Score the edit of attribute `name` of a data.Dataset (method: see AttributeEdit; a run's own choice is its
    config's edits.method): the edit made from the training split's codes, applied to the test split's items (all,
    or a random sample of `items`), judged by `judge` (default: the shapes' measurements where they exist, else a
    pixel classifier trained on the training split). train_codes: the training split's codes, where the caller has
    them already (else they are encoded here)."""
    strengths = tuple(float(s) for s in strengths)
    if 0.0 not in strengths or len(strengths) < 2:
        raise VaekitError(f"--strengths must include 0 (the reconstruction) and another value, got {strengths}")
    if any(b <= a for a, b in zip(strengths, strengths[1:])):
        raise VaekitError(f"--strengths must be in increasing order, each once, got {strengths}")
    if dataset.table is not None:
        raise VaekitError("scoring attribute edits needs images: tables are not scored yet")
    train_groups = find_attribute(dataset, "train", name, versus=versus)
    test_groups = find_attribute(dataset, "test", name, versus=versus)
    train, test = dataset.split("train"), dataset.split("test")
    conditioned = model.config.condition == "label"
    codes = encode_dataset(model, train.x, y=train.y if conditioned else None) if train_codes is None else train_codes
    if len(codes) != len(train.x):
        raise VaekitError(f"train_codes has {len(codes)} codes for {len(train.x)} training items: give one per item")
    edit = attribute_edit(codes, train_groups, method)
    if judge is None:
        judge = (shapes_judge(name) if dataset.name == "shapes" else None) or classifier_judge(
            train.x, train_groups, test.x, test_groups, seed=seed)
    binary = judge.threshold is not None and _is_binary(dataset, name, versus)
    # a 0/1 attribute: the items of either group; a measured one: every test item, not only those off its median
    pool = torch.nonzero(test_groups.mask | test_groups.versus if binary else
                         torch.ones(len(test.x), dtype=torch.bool)).flatten()
    if items is not None and items < len(pool):
        pool = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:items]].sort().values
    x = test.x[pool]
    y = test.y[pool] if conditioned and test.y is not None else None
    item_codes = encode_dataset(model, x, y=y)
    decoded = torch.stack([_decode(model, edit(item_codes, s), y) for s in strengths])  # (S, N, *data_shape)
    values = np.stack([judge.read(images) for images in decoded])  # (S, N)
    zero = strengths.index(0.0)
    moved: list[float | None] = []
    for k, s in enumerate(strengths):
        if s == 0:
            moved.append(None)
            continue
        step = (values[k] - values[zero]) * np.sign(s)
        moved.append(float(np.mean(np.nan_to_num(step, nan=-1.0) > 0)))
    with np.errstate(invalid="ignore"):
        rising = np.all(np.diff(values, axis=0) > 0, axis=0)
        ends = values[-1] > values[0]
    flipped, best, baseline, missed = None, None, None, None
    if binary:
        has = test_groups.mask[pool].numpy()
        flipped = []
        for k, s in enumerate(strengths):
            if s > 0:
                flipped.append(float(np.mean(values[k][~has] > judge.threshold)) if (~has).any() else None)
            elif s < 0:
                flipped.append(float(np.mean(values[k][has] <= judge.threshold)) if has.any() else None)
            else:
                flipped.append(None)
        baseline = float(np.mean(values[zero][~has] > judge.threshold)) if (~has).any() else None
        missed = float(np.mean(values[zero][has] <= judge.threshold)) if has.any() else None
        positive = [(f, s) for f, s in zip(flipped, strengths) if s > 0 and f is not None]
        top = max((f for f, _ in positive), default=None)
        if top is not None and top > (baseline or 0.0) + 0.01:  # the gentlest edit within a point of the most flips,
            best = min(s for f, s in positive if f >= top - 0.01)  # where some edit flips more than none does
    region = _away_from_attribute(train.x, train_groups)
    change = tuple(float((decoded[k] - decoded[zero]).abs().mean()) for k in range(len(strengths)))
    outside = tuple(float((decoded[k] - decoded[zero]).abs()[..., region].mean()) for k in range(len(strengths)))
    others = {other: tuple(float(np.nanmean(np.abs(read(decoded[k]) - read(decoded[zero]))))
                           for k in range(len(strengths))) for other, read in judge.others.items()}
    return AttributeScore(
        attribute=name, method=method, groups=train_groups.description, judge=judge.description,
        judge_accuracy=judge.accuracy, items=len(pool), strengths=strengths, moved=tuple(moved),
        monotone=float(rising.mean()), ends=float(ends.mean()), flipped=None if flipped is None else tuple(flipped), baseline=baseline, missed=missed,
        best_strength=best,
        change=change, outside=outside, others=others)


def _decode(model: Model, codes: torch.Tensor, y: torch.Tensor | None, batch_size: int = 500) -> torch.Tensor:
    parts = [decode_mean(model, codes[i:i + batch_size], None if y is None else y[i:i + batch_size])
             for i in range(0, len(codes), batch_size)]
    return torch.cat(parts)


def _is_binary(dataset, name: str, versus: str | None) -> bool:
    attributes = dataset.attributes_test
    if name in attributes:
        return bool(torch.isin(attributes[name], torch.tensor([0.0, 1.0])).all())
    return True  # a class against the others or against another class


def _away_from_attribute(x: torch.Tensor, groups: AttributeGroups) -> torch.Tensor:
    """(H, W) bool: the half of the pixels where the two groups' mean images differ least."""
    difference = (x[groups.mask].mean(0) - x[groups.versus].mean(0)).abs().sum(0)  # (H, W), channels summed
    return difference <= difference.flatten().median()

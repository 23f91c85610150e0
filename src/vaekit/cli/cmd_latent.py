"""Exploring the latent space of a trained run: traverse, attribute, vary, arithmetic, neighbours, latent-map."""
from __future__ import annotations

import argparse
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import torch

from .. import edits, latent, viz
from ..errors import VaekitError
from ..files import atomic_write, write_text
from ..data.pictures import read_picture
from ..data.tables import model_table
from .common import (
    add_data_flags, add_label, add_out, add_seed, add_split, add_threads, decoded_count, load_run, parse_label, pick,
    run_dataset, save_output, split_labels, warn_untrained_labels,
)

log = logging.getLogger(__name__)
TRAVERSE_ALL = 64  # traverse sweeps every number of a code this size or smaller by default
TRAVERSE_TOP = 16  # ... and the most used of a larger one

# argparse takes "-2,-1,0" for an option unless it looks like a negative number: anything starting "-digit" does
# here (as in Python 3.13), so --strengths -2,-1,0 and --range -3,3 read as values; no option starts that way.
_NUMBER_LIST = re.compile(r"^-\.?\d")


def register(sub: argparse._SubParsersAction) -> None:
    p = _parser(sub, "traverse", "decode one item's code with one latent dimension at a time swept over a range")
    p.add_argument("--item", type=int, default=0, help="index of the item in --split")
    dims = p.add_mutually_exclusive_group()
    dims.add_argument("--dims", help=f"dimensions to sweep, e.g. 0,3 (default: all; a code of more than {TRAVERSE_ALL} "
                      f"numbers: the {TRAVERSE_TOP} most used, as --top {TRAVERSE_TOP})")
    dims.add_argument("--top", type=int, metavar="N", help="the N most used dimensions (largest mean KL per "
                      "dimension where the KL factorises; otherwise, as for an AE or a mixture or two-layer prior, "
                      "the largest variance of the codes)")
    p.add_argument("--range", default="-3,3", help="values swept, LOW,HIGH, in the prior's standard deviations from "
                   "its mean (a family whose codes do not follow its prior, such as ae or vqvae: the codes' own, over "
                   "the data) (default -3,3)")
    p.add_argument("--steps", type=int, default=9, help="values per dimension")
    add_out(p, help=".png grid (one row per dimension) or .npy (n_dims, steps, *data_shape)")
    p.set_defaults(func=traverse)

    p = _parser(sub, "attribute", "add an attribute vector (from the training split's codes) to items' codes; "
                "--score measures the edit on the test split with an independent judge")
    p.add_argument("--attr", required=True, help="attribute name (e.g. scale, smile, glasses) or class name/index")
    p.add_argument("--versus", help="with a class --attr: the class to compare against (default: all others)")
    p.add_argument("--attr-file", help="CSV or CelebA list_attr_celeba.txt table, one row per item of --split, in order "
                   "(the vector then comes from --split's codes)")
    p.add_argument("--method", choices=edits.METHODS, help="the direction: mean code with minus without, the normal "
                   "of a linear classifier in latent space, or local: at each code, its nearest training codes with "
                   "minus its nearest without, followed step by step (default: the run's config edits.method, "
                   "mean-diff unless its recipe chose another)")
    p.add_argument("--apply-to", metavar="I,J,...", help="indices of the items of --split to edit, "
                   "one row each (default 0)")
    p.add_argument("--pictures", nargs="+", metavar="FILE", help="pictures of your own to edit instead (PNG, JPEG, "
                   "GIF, BMP, WebP, TIFF), one row each: made grey or RGB as the model's items are, cropped about the "
                   "centre to their shape and resized, as the explorer reads an upload")
    p.add_argument("--strengths", default="-2,-1,0,1,2", help="multiples of the vector to add, e.g. -2,-1,0,1,2")
    p.add_argument("--score", action="store_true", help="score the edit on every test item (or --items N of them): "
                   "moved / flipped shares by an independent judge, pixel change; --out: a .json")
    p.add_argument("--items", type=int, metavar="N", help="with --score: a random sample of N test items")
    p.add_argument("--out", help=".png grid (a row per item, a column per strength) or .npy "
                   "(n_strengths, *data_shape) for one item, (n_items, n_strengths, *data_shape) for several; with "
                   "--score, .json")
    p.set_defaults(func=attribute, out_is_file=True)

    p = _parser(sub, "vary", "decode draws from one item's posterior q(z|x) (an AE gives copies of one image)")
    p.add_argument("--item", type=int, default=0, help="index of the item in --split (default 0)")
    p.add_argument("--n", type=int, default=8, help="how many draws from q(z|x) of the item (default 8)")
    add_seed(p)
    add_out(p)
    p.set_defaults(func=vary)

    p = _parser(sub, "arithmetic", "decode z_a - z_b + z_c")
    for name in ("a", "b", "c"):
        p.add_argument(f"--{name}", type=int, required=True, metavar="I", help=f"index of item {name}")
    add_out(p, help=".png (a, b, c, then the result) or .npy of the result (1, *data_shape)")
    p.set_defaults(func=arithmetic)

    p = _parser(sub, "neighbours", "the items whose codes are nearest to an item's code")
    p.add_argument("--item", type=int, default=0, help="index of the query item in --split (default 0)")
    p.add_argument("--k", type=int, default=8, help="how many nearest items (default 8)")
    add_out(p, help=".png (the item, then its k neighbours) or .npy of the neighbours (k, *data_shape)")
    p.set_defaults(func=neighbours)

    p = _parser(sub, "latent-map", "scatter of the codes (2-D latent, else PCA), coloured by class; decoded grid")
    p.add_argument("--n", type=int, default=2000, help="the first N items of --split")
    p.add_argument("--method", choices=["auto", "latent", "pca"], default="auto")
    p.add_argument("--color-by", help="an attribute to colour by (default: the class label, if any)")
    p.add_argument("--no-manifold", action="store_true", help="only the scatter, no decoded grid")
    add_label(p, help="class the decoded grid is decoded with, for a label-conditioned model (default: the first)")
    add_out(p, help=".png picture or .npy of the 2-D points (N, 2)")
    p.set_defaults(func=latent_map)


def _parser(sub: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p._negative_number_matcher = _NUMBER_LIST  # so that --strengths -2,-1,0 and --range -3,3 read as values
    p.add_argument("run", help="run folder")
    add_split(p)
    add_data_flags(p)
    add_threads(p)
    return p


_EXAMPLES = {"--range": "-3,3", "--dims": "0,3"}  # each flag's own example (else the strengths')


def parse_numbers(text: str, flag: str) -> list[float]:
    """'-2,-1,0.5' -> [-2.0, -1.0, 0.5], or a VaekitError naming the flag."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise VaekitError(f"{flag} must be comma-separated numbers, e.g. {_EXAMPLES.get(flag, '-2,-1,0,1,2')}; got "
                          f"{text!r}")
    if max(abs(v) for v in values) > latent.MAX_CODE_VALUE:  # code values, or steps in them, past any model's
        raise VaekitError(f"{flag} must be numbers within +-{latent.MAX_CODE_VALUE:g}; got {text!r}")
    return values


def _load(args: argparse.Namespace):
    """The model, its data set, the split's items and their labels (for a label-conditioned model, else None). A
    table model's rows go to a .csv or .npy: another --out is refused now, not after the work."""
    model = load_run(args.run)
    rows = args.func in (traverse, vary, arithmetic, neighbours) or (args.func is attribute and not args.score)
    if rows and model_table(model.config) is not None and args.out and \
            not args.out.lower().endswith((".csv", ".npy")):
        raise VaekitError(f"cannot write {args.out}: a table model writes rows to a .csv (or .npy) file")
    dataset = run_dataset(args.run, args)
    return model, dataset, dataset.split(args.split).x, split_labels(model, dataset, args.split)


def _label(model, y, index: int):
    """An item's own label (a label-conditioned model's, else None), said where the run had no training items of
    its class."""
    if y is None:
        return None
    warn_untrained_labels(model, [int(y[index])])
    return y[index]


def _save(model, items: torch.Tensor, out: str, ncol: int | None = None, described: dict[str, list] | None = None,
          y: torch.Tensor | int | None = None, **labels) -> Path:
    """Pictures or arrays; for a table model, rows in the user's units (items in order, one row each), a CSV's first
    columns saying what each row is (`described`) and, for a label-conditioned model, the class it was decoded with
    (`y`: one, or one per row). `labels`: what a picture says it shows (viz.labelled_grid's captions, row_labels,
    title)."""
    if model_table(model.config) is not None:
        return save_output(model, items.reshape(-1, *model.data_shape), out, y=y, described=described)
    return viz.labelled_grid(items, out, ncol=ncol, **labels)


def _number(value: float) -> str:
    return f"{value:+.3g}" if value else "0"


def _positive(n: int, flag: str) -> int:
    if n < 1:
        raise VaekitError(f"{flag} must be at least 1, got {n}")
    return n


def traverse(args: argparse.Namespace) -> int:
    low_high = parse_numbers(args.range, "--range")
    if len(low_high) != 2 or low_high[0] == low_high[1]:
        raise VaekitError(f"--range must be two different numbers LOW,HIGH, e.g. -3,3; got {args.range!r}")
    if args.steps < 2:
        raise VaekitError(f"--steps must be at least 2, got {args.steps}")
    model, _, x, y = _load(args)
    dims = None
    if args.dims is not None:
        numbers = parse_numbers(args.dims, "--dims")
        if not all(v.is_integer() for v in numbers):
            raise VaekitError(f"--dims must be whole numbers, e.g. 0,3; got {args.dims!r}")
        dims = [int(v) for v in numbers]
    if args.top is not None and not 1 <= args.top <= latent.code_size(model):  # before the rows it would give
        raise VaekitError(f"--top must be between 1 and the latent size {latent.code_size(model)}, got {args.top}")
    size = latent.code_size(model)
    if dims is None and args.top is None and size > TRAVERSE_ALL:  # a spatial code (a vqvae's 7x7 grid of vectors):
        # a row per number was a picture of hundreds of rows
        args.top = TRAVERSE_TOP
        log.info("the %d most used of the code's %d numbers (--top N for more, --dims for others)", TRAVERSE_TOP, size)
    rows = len(dims) if dims is not None else min(args.top or size, size)
    decoded_count(model, args.steps, "--steps", per=rows)
    item = pick(x, args.item)
    # the data: for --top, and for a family whose codes are not trained towards its prior (ae, vqvae), whose steps
    # are measured in the codes' spread over it (its prior is nominal, or learned over discrete codes), as the
    # explorer's sliders
    wants_data = args.top is not None or not model.codes_follow_prior
    result = latent.traverse(model, item, dims=dims, top_n=args.top, values=torch.linspace(*low_high, args.steps),
                             data=x[:2000] if wants_data else None, y=_label(model, y, args.item),
                             data_labels=None if y is None else y[:2000])
    names = [model.code_number_name(d) for d in result.dims]
    log.info("rows: latent dimensions %s; columns: values %g..%g", ", ".join(names), *low_high)
    plain = args.out.lower().endswith(".npy") or model_table(model.config) is not None
    values = torch.linspace(*low_high, args.steps).tolist()
    unit = "the prior's SD" if model.codes_follow_prior else "the codes' SD over the data"  # as latent.traverse
    print(_save(model, result.images if plain else result.grid(), args.out, ncol=args.steps,
                described={"dimension": [name for name in names for _ in values],
                           "value": [f"{v:.6g}" for v in values] * len(names)},
                y=_label(model, y, args.item),
                captions=[_number(v) for v in values] * len(result.dims),
                row_labels=names,
                title=f"item {args.item}: one latent dimension per row, swept from {low_high[0]:g} to "
                      f"{low_high[1]:g} (in {unit})"))
    return 0


def attribute(args: argparse.Namespace) -> int:
    strengths = parse_numbers(args.strengths, "--strengths")
    model, dataset, x, y = _load(args)
    if args.method is None:
        args.method = model.run_config.edits.method
    # what can be said before the training split is encoded (seconds on large data)
    if args.method == "local":
        edits.check_local_strengths(strengths)
    suffixes = (".json",) if args.score else (".csv", ".npy") if model_table(model.config) is not None else \
        (".png", ".npy")
    if args.out is not None and not args.out.lower().endswith(suffixes):
        raise VaekitError(f"cannot write {args.out}: --out must end in {' or '.join(suffixes)}"
                          + (" with --score" if args.score else ""))
    if args.score:
        if args.attr_file:
            raise VaekitError("--score reads the attribute of the data set's own splits: drop --attr-file")
        if args.items is not None and args.items < 1:
            raise VaekitError(f"--items must be at least 1, got {args.items}")
        if args.apply_to is not None or args.split != "test" or args.pictures:
            raise VaekitError("--score edits every test item: drop --apply-to, --pictures and --split (or use "
                              "--items N)")
        if model.num_labels:
            _warn_conditioned(model, latent.find_attribute(dataset, "train", args.attr, versus=args.versus))
        score = edits.score_attribute(model, dataset, args.attr, strengths, method=args.method, versus=args.versus,
                                      items=args.items)
        print(score.summary())
        if args.out:
            print(write_text(args.out, json.dumps(score.to_dict(), indent=2) + "\n"))
        return 0
    if args.items is not None:
        raise VaekitError("--items chooses the items --score edits: add --score, or drop --items")
    if args.out is None:
        raise VaekitError("--out is needed for the edited images (.png or .npy), unless --score")
    if args.pictures:
        decoded_count(model, len(args.pictures), "--pictures", per=len(strengths))
        items = _pictures(model, args.pictures, args.apply_to)
        names = [Path(path).name for path in args.pictures]
        if len(set(names)) < len(names):  # (a/x.png and b/x.png: each named by its path as given)
            names = list(args.pictures)
        indices = [None] * len(items)
    else:
        try:
            numbers = [float(v) for v in (args.apply_to or "0").split(",") if v.strip()]
        except ValueError:
            numbers = []
        if not numbers or not all(v.is_integer() for v in numbers):
            raise VaekitError(f"--apply-to takes item indices, e.g. 0,5,9; got {args.apply_to!r}")
        indices = [int(v) for v in numbers]
        decoded_count(model, len(indices), "--apply-to", per=len(strengths))  # items x strengths decoded at once
        items = [pick(x, index) for index in indices]
        names = [f"item {i}" for i in indices]
    if args.attr_file:  # a table's rows belong to --split's items
        groups = latent.find_attribute(dataset, args.split, args.attr, versus=args.versus, table=args.attr_file)
        codes = latent.encode_dataset(model, x, y=y)
    else:
        groups = latent.find_attribute(dataset, "train", args.attr, versus=args.versus)
        codes = latent.encode_dataset(model, dataset.x_train, y=split_labels(model, dataset, "train"))
    log.info("attribute vector (%s): %s", args.method, groups.description)
    _warn_conditioned(model, groups)
    edit = edits.attribute_edit(codes, groups, args.method)
    images = torch.stack([edits.apply_edit(model, item, edit, strengths,
                                           y=None if index is None else _label(model, y, index))
                          for item, index in zip(items, indices)])
    if not args.out.lower().endswith(".npy") or len(indices) == 1:  # one item: (n_strengths, *data_shape), as before
        images = images.flatten(0, 1)
    print(_save(model, images, args.out, ncol=len(strengths),
                described={"item": [i for i in indices for _ in strengths],
                           "strength": [f"{v:.6g}" for v in strengths] * len(indices)},
                y=None if y is None or args.pictures else torch.stack([y[i] for i in indices for _ in strengths]),
                captions=[("0\nunedited" if s == 0 else _number(s)) for s in strengths] * len(indices),
                row_labels=names,
                title=f"{args.method} attribute vector: {groups.description}; strength in each column"))
    return 0


MAX_PICTURE_BYTES = 64 * 2**20  # a phone's photo is a few MB; its pixels are checked from its header too


def _pictures(model, paths: list[str], apply_to: str | None) -> list[torch.Tensor]:
    """The user's own pictures (attribute --pictures) as items of the model."""
    if apply_to is not None:
        raise VaekitError("--pictures are the items to edit: drop --apply-to (it picks items of the data set)")
    if model_table(model.config) is not None or len(model.data_shape) != 3:
        raise VaekitError("--pictures is for models of images, and this model's items are not pictures: edit its "
                          "items with --apply-to")
    if model.num_labels:
        raise VaekitError("this model is conditioned on the label, which a picture does not carry: edit items of "
                          "the data set with --apply-to (their labels go with them)")
    items = []
    for path in map(Path, paths):
        if not path.is_file():
            raise VaekitError(f"no picture at {path}: check the path" if not path.exists() else
                              f"{path} is not a file: give picture files (PNG, JPEG, ...)")
        if path.stat().st_size > MAX_PICTURE_BYTES:
            raise VaekitError(f"{path} is {path.stat().st_size / 2**20:,.0f} MB, more than the "
                              f"{MAX_PICTURE_BYTES // 2**20} MB a picture may be: give a smaller one")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise VaekitError(f"cannot read {path} ({exc.strerror or exc}): check its permissions") from None
        items.append(read_picture(data, model.data_shape, path=str(path), verb="give"))
    return items


def _warn_conditioned(model, groups) -> None:
    if model.num_labels and groups.description.startswith("class "):
        log.warning("this model is conditioned on the classes: its decoder takes the class from the label, so the "
                    "codes carry little of it and a class's attribute vector changes little; decode with another "
                    "--label (sample, decode, interpolate) to change the class")


def vary(args: argparse.Namespace) -> int:
    model, _, x, y = _load(args)
    item = pick(x, args.item)
    images = latent.vary(model, item, decoded_count(model, args.n, "--n"), torch.Generator().manual_seed(args.seed),
                         y=_label(model, y, args.item))
    picture = not args.out.lower().endswith(".npy") and model_table(model.config) is None
    shown = torch.cat([item[None], images]) if picture else images  # the item itself first, to compare against
    print(_save(model, shown, args.out, ncol=min(len(shown), viz.WRAP),
                described={"draw": list(range(1, len(images) + 1))}, y=_label(model, y, args.item),
                captions=[f"item {args.item}"] + [f"draw {i + 1}" for i in range(len(images))],
                title=f"decoded draws from q(z|x) of item {args.item}"))
    return 0


def arithmetic(args: argparse.Namespace) -> int:
    model, _, x, y = _load(args)
    a, b, c = pick(x, args.a, "--a"), pick(x, args.b, "--b"), pick(x, args.c, "--c")
    result = latent.arithmetic(model, a, b, c, labels=[_label(model, y, i) for i in (args.a, args.b, args.c)])[None]
    images = result if args.out.lower().endswith(".npy") else torch.cat([torch.stack([a, b, c]), result])
    roles = [f"a: item {args.a}", f"b: item {args.b}", f"c: item {args.c}", "a - b + c"][-len(images):]
    classes = None if y is None else torch.stack([y[args.a], y[args.b], y[args.c], y[args.c]])[-len(images):]
    print(_save(model, images, args.out, ncol=len(images), described={"row": roles}, y=classes,
                captions=[f"a: item {args.a}", f"b: item {args.b}", f"c: item {args.c}", "decoded a - b + c"],
                title="latent arithmetic: the code of a, minus b's, plus c's, decoded"))
    return 0


def neighbours(args: argparse.Namespace) -> int:
    model, _, x, y = _load(args)
    item = pick(x, args.item)
    k = _positive(args.k, "--k")
    if k >= len(x):
        raise VaekitError(f"--k must be below the number of items in the split ({len(x)}), got {k}")
    if y is not None:  # every item is encoded with its own label
        warn_untrained_labels(model, y.unique().tolist())
    codes = latent.encode_dataset(model, x, y=y).flatten(1)
    found = latent.nearest_neighbours(codes, codes[args.item], k + 1)
    own = args.item % len(x)
    keep = [(int(i), float(d)) for i, d in zip(found.indices, found.distances) if int(i) != own][:k]
    print(f"nearest to item {own} (item, distance): " + ", ".join(f"{i} ({d:.3g})" for i, d in keep))
    found_items = x[[i for i, _ in keep]]
    images = found_items if args.out.lower().endswith(".npy") else torch.cat([item[None], found_items])
    shown = ([(own, 0.0)] if len(images) > len(keep) else []) + keep  # the query first, where it is shown
    print(_save(model, images, args.out, ncol=min(len(images), viz.WRAP),
                described={"item": [i for i, _ in shown], "distance": [f"{d:.6g}" for _, d in shown]},
                y=None if y is None else y[[i for i, _ in shown]],
                captions=[f"item {own}\nquery"] + [f"item {i}\nd={d:.2g}" for i, d in keep],
                title=f"the {k} items whose codes are nearest to item {own}'s, with their distances"))
    return 0


def latent_map(args: argparse.Namespace) -> int:
    model, dataset, x, y = _load(args)
    n = _positive(args.n, "--n")
    grid_label = parse_label(model, args.label)  # said before the work
    split = dataset.split(args.split)
    labels, names = split.y, dataset.label_names
    if args.color_by is not None:
        attributes = dataset.attributes_train if args.split == "train" else dataset.attributes_test
        if args.color_by not in attributes:
            known = ", ".join(attributes) or "none"
            raise VaekitError(f"{dataset.name} has no attribute {args.color_by!r} to colour by: attributes are {known}")
        labels = attributes[args.color_by]
        values = torch.as_tensor(labels)
        whole = bool((values == values.round()).all()) and len(values) and 0 <= float(values.min())
        # a discrete attribute's legend names it (smile=0, smile=1), where plain numbers said nothing
        names = tuple(f"{args.color_by}={v}" for v in range(int(values.max()) + 1)) if whole and \
            float(values.max()) < 20 else None
    labels = None if labels is None else labels[:n]
    if y is not None:  # every item is encoded with its own label
        warn_untrained_labels(model, y[:n].unique().tolist())
    result = latent.latent_map(model, x[:n], labels=labels, method=args.method, y=None if y is None else y[:n])
    if args.out.lower().endswith(".npy"):
        print(atomic_write(args.out, lambda tmp: np.save(tmp, result.points)))
        return 0
    if not args.out.lower().endswith(".png"):
        raise VaekitError(f"cannot write {args.out}: --out must end in .png (a picture) or .npy (the 2-D points)")
    manifold = None if args.no_manifold or not dataset.is_image else model
    print(viz.plot_latent_map(result, args.out, label_names=names, manifold=manifold, split=args.split,
                              codes="codes" if latent.point_codes(model, x, y) else "posterior means",
                              manifold_label=grid_label))
    return 0

"""Using a trained model: sample, reconstruct, interpolate, encode, decode."""
from __future__ import annotations

import argparse
import logging

import numpy as np
import torch

from .. import latent, viz
from ..compare import CompareOptions
from ..errors import VaekitError
from ..files import atomic_write
from .common import (
    add_data_flags, add_label, add_out, add_seed, add_split, add_threads, decoded_count, load_array, load_run,
    parse_label, pick, run_dataset, save_output, split_labels, warn_untrained_labels,
)
from ..data.tables import model_table

log = logging.getLogger(__name__)
MIXTURE_ITEMS = 10_000  # training items whose codes `sample --sampler mixture` fits by default


RECONSTRUCT_ROW = 16  # items per row of reconstruct's picture


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="decode draws from the prior")
    p.add_argument("run")
    p.add_argument("--n", type=int, default=64, help="how many draws (default %(default)s)")
    add_seed(p)
    add_label(p, help="class label of every draw, for a label-conditioned model (default: each class in turn)")
    p.add_argument("--draw", action=argparse.BooleanOptionalAction, default=None,
                   help="draw each value from p(x|z) as well (a category by its probability, a number with its "
                        "spread), so that the rows vary as the data does; --no-draw writes the decoder's mean or most "
                        "likely value. Default: drawn for a table model, the mean for pictures and arrays")
    p.add_argument("--sampler", choices=["prior", "mixture"], default="prior",
                   help="prior: the model's own prior; mixture: a full-covariance Gaussian mixture fitted to the codes "
                        "of the run's training items (Ghosh et al. 2020; as vaekit compare draws for the AE), which "
                        "lets a family whose prior is nominal (ae) or not yet trained (a vqvae before train-prior) "
                        "generate (a label-conditioned vqvae, whose codes carry the class: one mixture per class "
                        "drawn, fitted to that class's codes). Default: prior")
    p.add_argument("--components", type=int, default=CompareOptions().gmm_components,
                   help="the mixture's components (--sampler mixture; default %(default)s)")
    p.add_argument("--fit-items", type=int, default=MIXTURE_ITEMS, metavar="N",
                   help="training items whose codes the mixture is fitted to, chosen at random by --seed where the "
                        "split has more (default %(default)s)")
    add_out(p, help=".png picture or .npy arrays (a table model: .csv rows in your units)")
    add_threads(p)
    p.set_defaults(func=sample)

    p = sub.add_parser("reconstruct", help="inputs (top) and their reconstructions (below)")
    p.add_argument("run")
    p.add_argument("--n", type=int, default=16, help="the split's first N items (all of them if it has fewer); "
                   f"a picture shows them {RECONSTRUCT_ROW} to a row, each row of inputs above its reconstructions")
    add_split(p)
    add_data_flags(p)
    add_out(p)
    add_threads(p)
    p.set_defaults(func=reconstruct)

    p = sub.add_parser("interpolate", help="decode a path between the codes of two items")
    p.add_argument("run")
    p.add_argument("--from", dest="source", type=int, default=0, help="index of the first item")
    p.add_argument("--to", dest="target", type=int, default=1, help="index of the second item")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--slerp", action="store_true", help="spherical instead of linear interpolation")
    add_label(p, help="class label to decode the path with, for a label-conditioned model (default: the first item's)")
    add_split(p)
    add_data_flags(p)
    add_out(p)
    add_threads(p)
    p.set_defaults(func=interpolate)

    p = sub.add_parser("encode", help="posterior means (or draws) of a data set, as .npy")
    p.add_argument("run")
    p.add_argument("--sample", action="store_true", help="one draw from q(z|x) per item instead of its mean")
    add_seed(p)
    p.add_argument("--split", choices=["train", "test", "all"], default="test",
                   help="which split to encode; all: every item (a table's every row in the file's order, the run's "
                        "own file too; other data: the training items, then the test items)")
    add_data_flags(p)
    add_out(p, help=".npy file of codes (N, latent_dim)")
    add_threads(p)
    p.set_defaults(func=encode)

    p = sub.add_parser("decode", help="decode codes from a .npy file")
    p.add_argument("run")
    p.add_argument("codes", help=".npy of shape (N, latent_dim)")
    add_label(p, help="class label to decode with, required by a label-conditioned model")
    add_out(p)
    add_threads(p)
    p.set_defaults(func=decode)


def sample(args: argparse.Namespace) -> int:
    model = load_run(args.run)
    n = decoded_count(model, args.n, "--n")
    label = parse_label(model, args.label)
    y = None
    if model.num_labels:  # one label for all, or each class in turn
        y = torch.full((n,), label) if label is not None else torch.arange(n) % model.num_labels
        if label is None:  # (a chosen one is said by parse_label)
            warn_untrained_labels(model, y.unique().tolist())
    draw = args.draw if args.draw is not None else model_table(model.config) is not None
    if args.sampler == "mixture":
        images = _mixture_sample(args, model, n, y, draw)
    else:
        if not model.codes_follow_prior and not model.stages:  # an AE's N(0, I) is nominal, as the explorer says
            log.warning("note: the %s family's codes were never trained towards its prior, which it draws from, "
                        "so its draws fall where few codes lie; --sampler mixture draws from a mixture fitted to the "
                        "codes", model.family)
        images = model.sample(n, y=y, generator=torch.Generator().manual_seed(args.seed), draw=draw)
    cycled = model.num_labels and label is None  # each class in turn: one column per class
    print(save_output(model, images.cpu(), args.out, ncol=model.num_labels if cycled else None, y=y))
    return 0


@torch.no_grad()
def _mixture_sample(args: argparse.Namespace, model, n: int, y: torch.Tensor | None, draw: bool) -> torch.Tensor:
    """n codes drawn from a Gaussian mixture fitted to the codes of (up to --fit-items of) the run's training items,
    decoded: the likelihood's mean, or (draw) x ~ p(x|code), seeded by --seed. A model whose prior takes the label
    (a label-conditioned vqvae, whose codes carry the class) gets one mixture per class drawn, fitted to the codes of
    that class's items."""
    from ..compare import class_mixture_draws, fit_mixture, mixture_draws

    if args.components < 1 or args.fit_items < 2:
        raise VaekitError(f"--components must be at least 1 and --fit-items at least 2, got {args.components} and "
                          f"{args.fit_items}")
    train = run_dataset(args.run, args).split("train")
    chosen = torch.randperm(len(train.x), generator=torch.Generator().manual_seed(args.seed))[:args.fit_items]
    chosen = chosen.sort().values
    if args.components > len(chosen):
        raise VaekitError(f"--components {args.components} exceeds the {len(chosen)} training items fitted: use fewer "
                          "components")
    labels = None
    if model.num_labels:
        if train.y is None:
            raise VaekitError("the model is conditioned on labels, but its training data has none: give labelled data")
        labels = train.y[chosen]
    codes = latent.encode_dataset(model, train.x[chosen], y=labels).flatten(1)
    if model.prior_takes_labels:  # its codes carry the class (labels and y are given: it is conditioned)
        z = class_mixture_draws(codes, labels, y, args.components, args.seed, model.config.label_names)
    else:
        log.info("fitting a %d-component Gaussian mixture to the %d-number codes of %d training items ...",
                 args.components, codes.shape[1], len(codes))
        z = mixture_draws(fit_mixture(codes, args.components, args.seed), n, args.seed)
    px = model.decode_code(z.reshape(n, *model.code_shape).to(model.device), y)
    if not draw:
        return px.mean
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(args.seed)
        return px.sample()


def reconstruct(args: argparse.Namespace) -> int:
    model = load_run(args.run)
    if args.n < 1:
        raise VaekitError(f"--n must be at least 1, got {args.n}")
    dataset = run_dataset(args.run, args)
    x = dataset.split(args.split).x[:args.n]
    n = decoded_count(model, len(x), "--n", per=2)  # the items and their reconstructions
    if args.n > n:
        log.warning("note: the %s split has %d items: reconstructing all of them", args.split, n)
    y = split_labels(model, dataset, args.split)
    if y is not None:
        warn_untrained_labels(model, y[:n].unique().tolist())
    recon = model.reconstruct(x.to(model.device), None if y is None else y[:n]).cpu()
    if args.out.lower().endswith(".npy") or model_table(model.config) is not None:
        # a table's reconstructions: rows in the user's units, each with its item's index (and class)
        print(save_output(model, recon, args.out, y=None if y is None else y[:n], described={"item": list(range(n))}))
    else:
        print(viz.save_images(paired_rows(x, recon, RECONSTRUCT_ROW), args.out, ncol=min(n, RECONSTRUCT_ROW)))
    return 0


def paired_rows(x: torch.Tensor, recon: torch.Tensor, width: int) -> torch.Tensor:
    """Items and their reconstructions in rows of `width`: each row of items above its row of reconstructions (a
    last, short row filled out with white)."""
    width = min(len(x), width)
    blank = torch.ones((-len(x) % width, *x.shape[1:]), dtype=x.dtype)
    x, recon = torch.cat([x, blank]), torch.cat([recon.to(x.dtype), blank])
    return torch.cat([part for i in range(0, len(x), width) for part in (x[i:i + width], recon[i:i + width])])


def interpolate(args: argparse.Namespace) -> int:
    model = load_run(args.run)
    decoded_count(model, args.steps, "--steps")
    dataset = run_dataset(args.run, args)
    x = dataset.split(args.split).x
    y = split_labels(model, dataset, args.split)
    label = parse_label(model, args.label, dataset.label_names)
    source, target = pick(x, args.source), pick(x, args.target)
    if y is not None:  # the items' own labels encode them (and, without --label, the first's decodes the path)
        warn_untrained_labels(model, [int(y[args.source]), int(y[args.target])])
    method = "slerp" if args.slerp else "lerp"
    path = latent.interpolate(model, source, target, args.steps, method=method,
                              y1=None if y is None else y[args.source], y2=None if y is None else y[args.target],
                              label=label)
    if args.out.lower().endswith(".png") and model_table(model.config) is None:
        # the two items themselves at the ends, to compare the decoded path against
        shown = torch.cat([source[None].cpu(), path.cpu(), target[None].cpu()])
        steps = [f"t={t:.2g}" for t in torch.linspace(0, 1, args.steps).tolist()]
        on = "" if label is None else f", decoded as class {label}"
        print(viz.labelled_grid(shown, args.out, ncol=min(len(shown), viz.WRAP),
                                captions=[f"item {args.source}", *steps, f"item {args.target}"],
                                title=f"{method} between the codes of items {args.source} and {args.target} (the "
                                      f"items themselves at the ends){on}"))
    else:
        decoded_with = label if label is not None else None if y is None else y[args.source]  # latent.interpolate's
        print(save_output(model, path.cpu(), args.out, ncol=args.steps, y=decoded_with,
                          described={"t": [f"{t:.6g}" for t in torch.linspace(0, 1, args.steps).tolist()]}))
    return 0


def encode(args: argparse.Namespace) -> int:
    if not args.out.lower().endswith(".npy"):
        raise VaekitError(f"encode writes codes as .npy: got --out {args.out}")
    model = load_run(args.run)
    whole = args.split == "all"
    dataset = run_dataset(args.run, args, whole=whole)
    if whole and model_table(model.config) is None:  # the training items, then the test items
        x = torch.cat([dataset.x_train, dataset.x_test])
        y = None if not model.num_labels else torch.cat([split_labels(model, dataset, name)
                                                         for name in ("train", "test")])
    else:
        split = "test" if whole else args.split  # (a table read whole: either split is every row, in order)
        x, y = dataset.split(split).x, split_labels(model, dataset, split)
    codes = latent.encode_dataset(model, x, sample=args.sample, generator=torch.Generator().manual_seed(args.seed),
                                  y=y)
    array = codes.numpy()
    atomic_write(args.out, lambda tmp: np.save(tmp, array))
    print(args.out)
    return 0


def decode(args: argparse.Namespace) -> int:
    model = load_run(args.run)
    codes = load_array(args.codes)
    shape = tuple(model.code_shape)
    given = codes.shape
    if shape == (1,) and codes.ndim == 1:
        codes = codes[:, None]  # a 1-D code: a plain list of numbers is one code each
    elif codes.ndim == len(shape):
        codes = codes[None]
    if tuple(codes.shape[1:]) != shape or codes.shape[0] < 1:
        raise VaekitError(f"{args.codes} has shape {given}, but this model's codes have shape "
                          f"({', '.join(map(str, shape))}): give an array of shape (N, {', '.join(map(str, shape))})")
    if not np.issubdtype(codes.dtype, np.number):
        raise VaekitError(f"{args.codes} holds non-numeric values: codes must be finite numbers")
    if np.iscomplexobj(codes):  # a cast would drop the imaginary parts in silence
        raise VaekitError(f"{args.codes} holds complex numbers: codes are real numbers (save the real part, or the "
                          "codes vaekit encode wrote)")
    latent.check_code_values(codes, str(args.codes))
    decoded_count(model, len(codes), f"{args.codes} (its codes)")
    label = parse_label(model, args.label)
    if model.num_labels and label is None:
        raise VaekitError(f"this model is conditioned on labels: pass --label 0..{model.num_labels - 1}")
    images = latent.decode_mean(model, torch.from_numpy(codes.astype(np.float32)),
                                None if label is None else torch.tensor([label]))
    print(save_output(model, images, args.out, y=None if label is None else torch.full((len(codes),), label)))
    return 0

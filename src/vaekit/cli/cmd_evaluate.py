"""vaekit evaluate: ELBO (recon + KL), importance-sampled NLL, bits/dim, active units, KL per dimension and
reconstruction error of a trained run on a data split, printed as JSON (and written with --out).

A family with no likelihood bound (a plain autoencoder, ae; the VQ-VAE, vqvae) has no ELBO or NLL: for it the
evaluation skips them by default (reconstruction, latent and the family's own measurements); asking it for an NLL
with --iw-samples K > 0 is an error.

To compare two models, write one's per-item values (--per-item FILE.csv: item, a digest of its data, K, then
nll, elbo, kl, recon_at_mean, squared_error) and evaluate the other on the same split with --compare-to FILE.csv:
"paired" then gives each measure's difference (this - other) with its paired standard error, which leaves out how
hard each item is and so is far smaller than either mean's own.
"""
from __future__ import annotations

import argparse
import json
import logging
import os

from .. import checkpoint, metrics
from ..data import hold_out, validation_items
from ..errors import VaekitError
from ..files import check_target, write_text
from ..train import resolve_device
from .common import (add_data_flags, add_seed, add_split, add_threads, no_labels, own_data, run_dataset,
                     run_folder, split_labels, warn_untrained_labels)

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="ELBO, importance-sampled NLL, active units, KL per dim, reconstruction error",
                       description=__doc__)
    p.add_argument("run", help="a run folder written by vaekit train")
    add_split(p, validation=True)
    add_data_flags(p)
    p.add_argument("--iw-samples", type=int, metavar="K",
                   help=f"importance samples per item for the NLL (default {metrics.DEFAULT_IW_SAMPLES}, or 0 for a "
                        "family with no likelihood bound: ae, vqvae; 0 skips ELBO and NLL)")
    p.add_argument("--n", type=int, help="evaluate only the first N items of the split")
    add_seed(p, "seed of the posterior samples (same seed, same numbers; default 0)")
    p.add_argument("--max-rows", type=int, default=None,
                   help="decoded samples held at once (memory; default: as many as keep the decoder's widest "
                        "activation near 16 MB, at most 4096); results do not depend on it")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"], help="where to run (default cpu)")
    add_threads(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", help="also write the results to this JSON file")
    p.add_argument("--per-item", metavar="FILE.csv", help="also write each item's nll, elbo, kl, recon_at_mean and "
                   "squared_error to this CSV (for --compare-to, or your own analysis)")
    p.add_argument("--compare-to", metavar="FILE.csv", help="a --per-item CSV of another run on the same items: "
                   "adds each measure's paired difference (this - other) with its standard error")
    p.set_defaults(func=run)


def _split(args: argparse.Namespace, model, dataset) -> tuple:
    """The items of --split and their labels (a label-conditioned model's): of the run's own data, where the run held
    out training items to judge its epochs, train is the items it trained on (it counted the held-out ones too) and
    validation the held-out ones, as the run judged them."""
    cfg = checkpoint.load_config(run_folder(args.run))
    own = own_data(cfg, args)
    held = own and args.split != "test" and validation_items(cfg.data, len(dataset.x_train),
                                                              cfg.train.early_stopping is not None) > 0
    if args.split == "validation" and not held:
        why = ("items of another data set have no validation split" if not own else
               "this run held out no training items (--validation, or --early-stopping, does)")
        raise VaekitError(f"--split validation: {why}: use --split test or --split train")
    if not held:
        y = split_labels(model, dataset, args.split)
        if y is not None:
            warn_untrained_labels(model, y.unique().tolist())
        return dataset.split(args.split).x, y
    trained, validation = hold_out(dataset, cfg.data, cfg.train.early_stopping is not None)
    items = validation if args.split == "validation" else trained.split("train")
    if model.num_labels and items.y is None:
        raise no_labels(model, dataset)
    return items.x, items.y if model.num_labels else None


def run(args: argparse.Namespace) -> int:
    if args.n is not None and args.n < 2:
        raise VaekitError(f"--n must be at least 2, got {args.n}")
    device = resolve_device(args.device)  # a GPU this machine lacks is named before anything is read
    for target in (args.out, args.per_item):  # before the evaluation's minutes, not after them
        if target:
            check_target(target)
    named = [(flag, path) for flag, path in (("--out", args.out), ("--per-item", args.per_item),
                                             ("--compare-to", args.compare_to)) if path]
    for index, (flag, path) in enumerate(named):  # one file for two of them: one would be lost to the other
        for other, other_path in named[index + 1:]:
            if os.path.abspath(path) == os.path.abspath(other_path):
                raise VaekitError(f"{flag} and {other} name the same file, {path}, and writing one would lose the "
                                  "other: give them different files")
    model = checkpoint.load(run_folder(args.run), device=device)
    dataset = run_dataset(args.run, args)
    x, y = _split(args, model, dataset)
    if args.n is not None:
        if args.n > len(x):
            log.warning("note: the %s split has %d items: evaluating all of them", args.split, len(x))
        x, y = x[: args.n], None if y is None else y[: args.n]
    # a missing table, or one of other items, fails before the evaluation's minutes, not after them
    other = metrics.read_items(args.compare_to, x) if args.compare_to else None
    result = metrics.evaluate(
        model, x, iw_samples=args.iw_samples, seed=args.seed, split=args.split, image=dataset.is_image,
        max_rows=args.max_rows, progress=not args.no_progress, y=y,
    )
    summary = {"run": str(args.run), "data": dataset.name, **result.to_dict()}
    if args.per_item:
        write_text(args.per_item, "".join(line + "\n" for line in metrics.item_lines(result, x)))
    if other is not None:
        summary["paired"] = metrics.paired(result, other)
    if args.out:
        write_text(args.out, json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0

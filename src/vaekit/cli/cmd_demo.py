"""vaekit demo: a VAE and a plain AE on the embedded MNIST subset, pictures of what each can do."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from .. import latent, runs, viz
from ..config import DataConfig, ModelConfig, RunConfig, TrainConfig, validate
from ..data import load_dataset
from ..errors import VaekitError
from ..files import write_text
from .common import add_seed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train a VAE and an AE on mnist-10k and draw what each can do")
    p.add_argument("--out", default="runs/demo", help="folder for the runs and the pictures")
    p.add_argument("--data", default="mnist-10k")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--latent-dim", type=int, default=16)
    add_seed(p, "seed of the training and the draws (default 0)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="replace runs in --out/vae and --out/ae that an earlier "
                   "demo did not write (the demo's own are replaced anyway)")
    p.set_defaults(func=run)


MARK = "demo.json"  # in --out: the folder is the demo's, whose runs a new demo replaces; then its final metrics


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.epochs < 1:
        raise VaekitError(f"--epochs must be at least 1, got {args.epochs}")
    others = [out / family for family in ("vae", "ae") if (out / family).exists()]
    if others and not (out / MARK).is_file() and not args.overwrite:
        raise VaekitError(f"{others[0]} exists and no earlier demo wrote it: choose another --out, or pass --overwrite "
                          "to replace it")
    base = validate(RunConfig(
        data=DataConfig(name=args.data),
        model=ModelConfig(latent_dim=args.latent_dim),
        train=TrainConfig(epochs=args.epochs, seed=args.seed, progress=not args.no_progress),
    ))
    dataset = load_dataset(base.data)
    if not dataset.is_image:
        raise VaekitError(f"the demo draws pictures, and {dataset.name} is not images: give an image data set (e.g. "
                          "--data mnist-10k), or compare models on it with vaekit compare")
    write_text(out / MARK, json.dumps({"demo": True, "finished": False}) + "\n")
    trained = {}
    for family in ("vae", "ae"):
        cfg = replace(base, model=replace(base.model, family=family))
        print(f"training the {family.upper()} ({args.epochs} epoch{'' if args.epochs == 1 else 's'} on "
              f"{dataset.name}) ...", file=sys.stderr, flush=True)  # a log line: stdout holds the results
        trained[family] = runs.train(cfg, out=out / family, overwrite=True, dataset=dataset)
    x_test = dataset.x_test
    vae, ae = trained["vae"].model, trained["ae"].model
    pictures = {
        "reconstructions": viz.captioned_panels(
            [("input", x_test[:16]), ("VAE reconstruction", vae.reconstruct(x_test[:16])),
             ("AE reconstruction", ae.reconstruct(x_test[:16]))], out / "reconstructions.png", ncol=4),
        "prior_samples": viz.captioned_panels(
            [("VAE: decoded draws from N(0, I)", vae.sample(64, generator=torch.Generator().manual_seed(args.seed))),
             ("AE: decoded draws from N(0, I)", ae.sample(64, generator=torch.Generator().manual_seed(args.seed)))],
            out / "prior_samples.png", ncol=8),
        "interpolation": viz.captioned_panels(
            [("VAE: test item 0 -> 1 (linear)", latent.interpolate(vae, x_test[0], x_test[1], 10)),
             ("AE: test item 0 -> 1 (linear)", latent.interpolate(ae, x_test[0], x_test[1], 10))],
            out / "interpolation.png", ncol=10),
    }
    print("\npictures:")
    for name, path in pictures.items():
        print(f"  {name:16s} {path}")
    print("\nfinal metrics (test split, nats per image):")
    final = {}
    for family, result in trained.items():
        last = result.history[-1]
        final[family] = {"train_loss": round(last.train_loss, 2),
                         **{f"val_{name}": round(value, 2) for name, value in (last.val or {}).items()},
                         "images_per_s": round(last.images_per_s)}
        print(f"  {family.upper():3s} {json.dumps(final[family])}  run: {result.directory}")
    write_text(out / MARK, json.dumps({"demo": True, "finished": True, "metrics": final}, indent=2) + "\n")
    return 0

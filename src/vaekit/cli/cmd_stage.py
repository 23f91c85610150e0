"""vaekit train-prior: the second training stage of a family with a learned prior over its codes (vqvae), from a
finished run folder: the model frozen, its prior trained on the codes of the run's training data, the run's model
file rewritten with it after every epoch. Then `vaekit sample RUN` draws from it. A family of one's own may name its
later stages otherwise (Model.stages): --stage NAME trains one of them, by default its only one."""
from __future__ import annotations

import argparse
import json
import signal
import sys

from .. import checkpoint, runs
from ..errors import Interrupted, VaekitError
from ..models import MODEL_FAMILIES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-prior", help="train the prior over a vqvae's codes (its second stage), so it samples",
                       description=__doc__)
    p.add_argument("run", help="a finished run folder of a family with a learned prior (vqvae)")
    p.add_argument("--epochs", type=int, default=10, help="passes over the training data (default 10)")
    p.add_argument("--batch-size", type=int, help="items per step (default: the run's)")
    p.add_argument("--lr", type=float, help="learning rate (default: the run's)")
    p.add_argument("--grad-clip", type=float, help="clip the gradient's norm to this (default: the run's)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], help="where to train (default: the run's)")
    p.add_argument("--threads", type=int, help="CPU threads for torch, numpy, SciPy and scikit-learn (default: one "
                   "per core)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--data", metavar="FILE", help="where the run's own data file has moved (checked to be it)")
    p.add_argument("--stage", help="which later stage of the family to train (default: its only one, e.g. the "
                                   "vqvae's prior)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.epochs < 1:
        raise VaekitError(f"--epochs must be at least 1, got {args.epochs}")
    stage = args.stage or _only_stage(args.run)
    try:
        result = runs.train_stage(args.run, stage, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                  device=args.device, threads=args.threads, grad_clip=args.grad_clip,
                                  progress=False if args.no_progress else None, data=args.data)
    except Interrupted as stop:
        name = signal.Signals(stop.signum).name
        what = "prior" if stage == "prior" else f"{stage} stage"
        saved = f"the {what} as it was then is saved in the run" if stop.saved else f"the last epoch's {what} is kept"
        if stop.finished:
            saved = f"the {what}'s training had ended, and it is saved in the run"
        again = " ".join([f"vaekit train-prior {args.run}", *(["--stage", stage] if args.stage else []),
                          *(["--data", args.data] if args.data else [])])
        sys.stderr.write(f"vaekit: stopped by {name} after step {stop.step}; {saved}: train it further with "
                         f"{again}\n")
        raise SystemExit(128 + stop.signum) from None
    last = result.history[-1]
    print(json.dumps({"run": str(args.run), "stage": stage, "epochs": last.epoch,
                      "train_prior_nll": round(last.train_loss, 4),
                      "val_prior_nll": None if last.val_loss is None else round(last.val_loss, 4),
                      "images_per_s": round(last.images_per_s, 1)}))
    return 0


def _only_stage(run: str) -> str:
    """The family's one later stage; several are named with --stage; none is said by runs.train_stage."""
    family = MODEL_FAMILIES.get(checkpoint.load_config(run).model.family)
    stages = family.stages if family is not None else ()
    if len(stages) > 1:
        raise VaekitError(f"the {family.family} family trains in stages {', '.join(stages)} after its own: name the "
                          "one to train with --stage")
    return stages[0] if stages else "prior"

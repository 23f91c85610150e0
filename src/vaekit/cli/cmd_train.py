"""vaekit train: a run from flags, a YAML config or a recipe; --resume continues one."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys

from .. import runs
from ..config import RunConfig
from ..errors import Interrupted, VaekitError
from .common import add_config_flags, config_from_args, recipes, set_flags

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train a model of any family (vae, iwae, ae, ...)",
                            description=__doc__ + f" Recipes: {', '.join(recipes())}.")
    add_config_flags(parser)
    parser.add_argument("--out", help="run folder to write (config.json, model.safetensors, metrics.jsonl)")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in this folder (--epochs sets a new total)")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and stop")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.resume:
        allowed = {"--epochs", "--device", "--threads", "--no-progress"}
        fixed = [flag for flag in set_flags(args) if flag not in allowed]
        fixed += [f"--{name}" for name in ("config", "recipe", "out") if getattr(args, name, None)]
        if fixed or args.set:
            raise VaekitError(f"--resume continues a run as it was configured; {', '.join(fixed or ['--set'])} "
                              "cannot change it (only --epochs, --device, --threads, --no-progress): "
                              "start a new run with --out instead")
        with _stopped(args.resume):
            result = runs.resume(args.resume, epochs=args.cfg__train__epochs, device=args.cfg__train__device,
                                 threads=args.cfg__train__threads, progress=args.cfg__train__progress)
    else:
        cfg: RunConfig = config_from_args(args)
        if args.print_config:
            print(cfg.to_json())
            return 0
        if not args.out:
            raise VaekitError("vaekit train needs --out RUN_DIR (where the model and metrics are written)")
        with _stopped(args.out):
            result = runs.train(cfg, out=args.out, overwrite=args.overwrite)
    last = result.history[-1] if result.history else None
    summary = {"run": str(result.directory)}
    if last is not None:
        summary.update(epoch=last.epoch, train_loss=round(last.train_loss, 4),
                       val_loss=None if last.val_loss is None else round(last.val_loss, 4),
                       images_per_s=round(last.images_per_s, 1))
    print(json.dumps(summary))
    return 0


@contextlib.contextmanager
def _stopped(run: str):
    """A stop signal ends training after a step and a checkpoint: one line on how to go on, exit 128 + signal."""
    try:
        yield
    except Interrupted as stop:
        name = signal.Signals(stop.signum).name
        if stop.saved:
            sys.stderr.write(f"vaekit: stopped by {name} after step {stop.step}, saved: continue with "
                             f"vaekit train --resume {run}\n")
        else:
            sys.stderr.write(f"vaekit: stopped at once by a second {name}: continue from the last checkpoint with "
                             f"vaekit train --resume {run}\n")
        raise SystemExit(128 + stop.signum) from None

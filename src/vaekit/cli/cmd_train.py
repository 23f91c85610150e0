"""vaekit train: a run from flags, a YAML config or a recipe; --resume continues one."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys

from pathlib import Path

from .. import checkpoint, distributed, runs
from ..data import load_dataset
from ..config import RunConfig
from ..errors import Interrupted, VaekitError
from ..models import check_launchable, check_processes
from ..train import json_number, kept_index
from .common import add_config_flags, config_from_args, recipe_summaries, set_flags

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train a model of any family (vae, iwae, ae, ...)", description=__doc__,
                            epilog=recipe_summaries(), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser)
    parser.add_argument("--out", help="run folder to write (config.json, model.safetensors, metrics.jsonl)")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in this folder (--epochs sets a new total; "
                        "--data FILE where the run's own data has moved)")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and stop")
    parser.add_argument("--nproc", type=_processes, metavar="N",
                        help="train in N processes on this machine (torchrun; gloo on CPUs, NCCL on GPUs): each takes "
                             "an equal share of every batch (--batch-size is their total); a run may resume with "
                             "another N")
    parser.set_defaults(func=run)


def _processes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"--nproc takes a number of processes from 1 to 1024, got {text!r}")
    return value


def _without_nproc(argv: list[str]) -> list[str]:
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item.split("=")[0] == "--nproc":  # (flags are taken only as spelled: no abbreviations)
            skip = "=" not in item
        else:
            kept.append(item)
    return kept


# And --nproc. The last two switch on (a run keeps them); --minutes is a new limit for all of the run's training.
# --data: where the run's own data has moved (checked to be the same items).
RESUMABLE = ("--epochs", "--minutes", "--device", "--threads", "--no-progress", "--compile", "--tensorboard", "--data")


def _check_resume(args: argparse.Namespace) -> None:
    fixed = [flag for flag in set_flags(args) if flag not in RESUMABLE]
    if args.print_config:
        raise VaekitError(f"--print-config prints a new run's settings; a run's own are in {args.resume}/config.json: "
                          "drop --resume to print a new run's, or read that file")
    if args.overwrite:
        raise VaekitError("--overwrite starts a run afresh and --resume continues it: drop one of them")
    fixed += [f"--{name}" for name in ("config", "recipe", "out") if getattr(args, name, None)]
    if fixed or args.set:
        raise VaekitError(f"--resume continues a run as it was configured; {', '.join(fixed or ['--set'])} "
                          f"cannot change it (only {', '.join(RESUMABLE)}, --nproc): start a new run with --out "
                          "instead")


def run(args: argparse.Namespace) -> int:
    if args.resume:
        _check_resume(args)
    if args.nproc and args.nproc > 1 and not args.print_config:
        return _launch(args)
    if args.resume:
        with _stopped(args.resume):
            result = runs.resume(args.resume, epochs=args.cfg__train__epochs, device=args.cfg__train__device,
                                 threads=args.cfg__train__threads, progress=args.cfg__train__progress,
                                 compile=args.cfg__train__compile, tensorboard=args.cfg__train__tensorboard,
                                 minutes=args.cfg__train__minutes, data=args.cfg__data__name)
    else:
        cfg: RunConfig = config_from_args(args)
        if args.print_config:
            print(cfg.to_json())
            return 0
        if not args.out:
            raise VaekitError("vaekit train needs --out RUN_DIR (where the model and metrics are written)")
        with _stopped(args.out):
            result = runs.train(cfg, out=args.out, overwrite=args.overwrite)
    if not distributed.world().main:
        return 0
    summary = {"run": str(result.directory)}
    if result.history:  # the epoch whose weights the run holds (early stopping's kept one), and how many ran
        last = result.history[kept_index([row.judged for row in result.history],
                                         result.config.train.early_stopping)]
        if last is not result.history[-1]:
            summary["epochs_trained"] = result.history[-1].epoch
        summary.update(epoch=last.epoch, train_loss=json_number(round(last.train_loss, 4)),
                       val_loss=None if last.val_loss is None else json_number(round(last.val_loss, 4)),
                       **({"val_bound": json_number(round(last.val["bound"], 4))}
                          if last.val and "bound" in last.val else {}),
                       images_per_s=round(last.images_per_s, 1))
    print(json.dumps(summary))
    return 0


def _launch(args: argparse.Namespace) -> int:
    """--nproc N: the mistakes found here, once, rather than by every process (the settings, the run folder, the
    data, the batch's split); then the same command in N processes."""
    if distributed.world().size > 1:
        raise VaekitError("--nproc starts torchrun, but this process already runs under it: drop --nproc")
    cfg = checkpoint.load_config(args.resume) if args.resume else config_from_args(args)
    check_processes(cfg.model, args.nproc)
    check_launchable(cfg.model, args.nproc)
    if cfg.train.batch_size % args.nproc:
        raise VaekitError(f"--batch-size {cfg.train.batch_size} is the batch of all {args.nproc} processes together "
                          f"and must split evenly between them: use a multiple of {args.nproc}")
    if not args.resume:
        if not args.out:
            raise VaekitError("vaekit train needs --out RUN_DIR (where the model and metrics are written)")
        runs.prepare_out(Path(args.out), args.overwrite)
        runs.resolve_config(cfg, load_dataset(cfg.data))
    code = distributed.launch(_without_nproc(args.argv), args.nproc)
    if code not in (0, 2) and code < 128:  # (a mistake is said once above, in one line; at a stop signal, process
        # 0 has said where it stopped and how to go on)
        sys.stderr.write(f"vaekit: training in {args.nproc} processes ended with exit code {code} (see above)\n")
    return code


@contextlib.contextmanager
def _stopped(run: str):
    """A stop signal ends training after a step and a checkpoint: one line on how to go on, exit 128 + signal."""
    try:
        yield
    except Interrupted as stop:
        name = signal.Signals(stop.signum).name
        if not distributed.world().main:
            raise SystemExit(128 + stop.signum) from None
        if stop.finished:
            sys.stderr.write(f"vaekit: stopped by {name} as the run ended, after step {stop.step}: it is saved whole "
                             f"(vaekit train --resume {run} --epochs N trains further)\n")
        elif stop.saved:
            sys.stderr.write(f"vaekit: stopped by {name} after step {stop.step}, saved: continue with "
                             f"vaekit train --resume {run}\n")
        else:
            sys.stderr.write(f"vaekit: stopped at once by a second {name}: continue from the last checkpoint with "
                             f"vaekit train --resume {run}\n")
        raise SystemExit(128 + stop.signum) from None

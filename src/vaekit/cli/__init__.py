"""The `vaekit` command: argparse -> library calls. Each `cmd_*.py` module here adds one subcommand."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
import warnings

from .. import __version__
from ..errors import FollowerStop, Interrupted, VaekitError
from ..files import check_target, inputs_kept
from .common import check_output_folders, command_inputs, set_threads


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit code 2, and a flag is taken only as spelled
    (argparse's abbreviations took `--label 3` on a command without --label as --label-column 3, in silence)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        """Arguments no command takes are named with the command's own help (argparse names the top level's)."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            prog = getattr(parsed, "command_prog", None) or self.prog
            sys.stderr.write(f"{prog}: error: unrecognized arguments: {' '.join(extras)} (see '{prog} --help')\n")
            raise SystemExit(2)
        return parsed


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaekit", description="Autoencoders and VAEs: train, evaluate, explore the latent space.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in load_commands():
        module.register(sub)
    _name_commands(parser)
    return parser


def load_commands() -> list:
    """The command modules (cmd_*.py), imported: each adds one subcommand (its `register`)."""
    package = importlib.import_module(__name__)
    return [importlib.import_module(f"{__name__}.{info.name}")
            for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name)
            if info.name.startswith("cmd_")]


def _name_commands(parser: argparse.ArgumentParser) -> None:
    """Each command (and subcommand: `vaekit data get`) records its name, for the unrecognized-arguments message."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                command.set_defaults(command_prog=command.prog)
                _name_commands(command)


def _flush_denormals() -> None:
    """float32 numbers below 1.2e-38 count as 0 in this process, set before any torch work so that the CPU threads
    torch starts for its parallel operations inherit it (a thread takes its creator's floating-point mode: set at the
    start of training instead, it reached only that thread and the run stayed slow). Arithmetic on such denormal numbers is many times
    slower, and Adam's moments of units that get no gradient (dead ReLUs, always-black pixels) decay into them: the
    fast recipe on MNIST went from 2.0 s per epoch to 3.5 s by epoch 460, and back to 2.0 s with this."""
    import torch

    torch.set_flush_denormal(True)
    # numpy 1.x then warns, on its first look at float32's limits, that the smallest subnormal is zero: as it now is
    warnings.filterwarnings("ignore", message="The value of the smallest subnormal", category=UserWarning)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given: what --nproc hands on to torchrun
    _flush_denormals()
    # Under torchrun, process 0 speaks for the run; the others say only what goes wrong.
    quiet = os.environ.get("RANK", "0") not in ("", "0")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO, format="%(message)s",
        stream=sys.stderr,
    )
    try:
        set_threads(getattr(args, "threads", None))  # the commands on a run that take --threads (train: its config's)
        with inputs_kept(command_inputs(args)):  # no output replaces a file the command reads
            if getattr(args, "out_is_file", False) and getattr(args, "out", None):
                check_target(args.out)  # a folder, a run's own file or an input: said before minutes of work
            check_output_folders(args)  # compare's, demo's and export's folders: not inside a data folder
            code = args.func(args)
    except FollowerStop:
        return 2  # process 0 says why
    except VaekitError as exc:
        from .. import distributed

        if not distributed.leave_error(str(exc)):  # under --nproc the launcher says it, once for all processes
            sys.stderr.write(f"vaekit: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("vaekit: interrupted\n")
        return 130
    except Interrupted as stop:  # a stop signal in a command that trains on the way (compare, demo): one line
        import signal

        name = signal.Signals(stop.signum).name
        again = stop.again or f"vaekit train --resume {stop.run} continues it"  # (compare's: its own --resume)
        saved = "" if stop.run is None else (
            f": the run in {stop.run} is saved whole" if stop.finished else
            f": the run in {stop.run} is saved, and {again}" if stop.saved
            else f": the run in {stop.run} keeps its last checkpoint")
        if stop.run is not None and stop.again and not (stop.saved and not stop.finished):
            saved += f"; {stop.again}"
        sys.stderr.write(f"vaekit: stopped by {name} after step {stop.step}{saved}\n")
        return 128 + stop.signum
    except RuntimeError as exc:  # under torchrun, another process's failure reaches this one as a broken collective
        from .. import distributed

        here = distributed.world()
        if here.size == 1 or not distributed.broken_collective(exc):
            raise
        reason = str(exc).splitlines()[0][:160] if str(exc) else "a collective failed"
        which = "another process went away: see the line naming it" if here.main else "see process 0's message"
        sys.stderr.write(f"vaekit: process {here.rank} stopped ({reason}): {which}\n")
        return 1
    except BrokenPipeError:  # the reader went away (| head): nothing left to say, and nothing to say it to
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (so the interpreter's final flush cannot fail either)
        return 0
    finally:
        from .. import distributed

        distributed.shutdown()  # under torchrun: leave the process group before the interpreter exits
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())

"""The `vaekit` command's entry point (the console script, and `python -m vaekit`).

Loading torch and the commands takes about a second. A Ctrl-C in that second used to break an import midway: a
traceback of dozens of lines, at times a crash (RecursionError, SIGABRT), or an interrupt swallowed by the import so
that the command ran on to its end. While they load, a Ctrl-C is now only noted; once they are loaded the command
stops, with the one line and the exit code (130) of a Ctrl-C at any later time. vaekit's package init loads nothing
(see vaekit/__init__.py), so this runs before torch does."""
from __future__ import annotations

import signal
import sys


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv) == ["--version"]:  # at once: it needs none of the commands
        from . import __version__

        print(f"vaekit {__version__}")
        return 0
    noted: list[int] = []
    previous = None
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # ignored (a script's background job): left so
        try:
            previous = signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
        except ValueError:  # not the main thread (a caller's own thread): load as is
            previous = None
    try:
        from .cli import load_commands, main as run

        load_commands()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if noted:
        sys.stderr.write("vaekit: interrupted\n")
        return 130
    return run(argv)

"""python -m vaekit: the vaekit command (torchrun -m vaekit train ... starts it in each process)."""
import os
import sys

from .entry import main

code = main()
if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
    # A process of a torchrun run: its work is written and it has left the process group (main's finally). It exits
    # without the interpreter's teardown, where C++ objects of torch.distributed were sometimes destroyed with their
    # threads still running and aborted the process ('terminate called without an active exception', about one run
    # in 30 here, after the run had finished).
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader gone away, a stream closed: nothing more to say
            pass
    os._exit(code)
sys.exit(code)

"""The child process of tests/test_faults.py: `vaekit train` whose os.replace SIGKILLs the process just before or
just after its kill_at-th call.

It runs in a process forked from a multiprocessing fork server that imported torch and vaekit but never ran them,
not forked from the pytest process itself: that one has run earlier tests' thread pools (torch's, ONNX Runtime's),
and a child forked from it once spun for 18 minutes before its first step and hung a CI run."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import sklearn.datasets  # noqa: F401  (the digits' loader, and torch's compiler that Adam imports: loaded once by
import torch  # the fork server, not again by each of the ~70 children, which took 5 of each child's 7 s)
import torch._dynamo  # noqa: F401

from vaekit.cli import main


def run(argv: list[str], kill_at: int | None, when: str, log: str | None) -> None:
    """The process's target: exits with main's code, or dies of SIGKILL at the chosen write. `log` gets the names
    replaced, in order."""
    torch.set_num_threads(1)  # the resuming test process computes alike, bit for bit
    real, names = os.replace, []

    def replace(src, dst):
        names.append(Path(dst).name)
        if len(names) == kill_at and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst)
        if len(names) == kill_at and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
    code = main(argv)
    if log is not None:
        Path(log).write_text("\n".join(names))
    sys.exit(code)

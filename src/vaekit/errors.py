"""The one exception type for users' mistakes: the CLI turns it into one line and exit code 2."""


class VaekitError(Exception):
    """A problem the user can fix: the message names it and says how."""


class FollowerStop(VaekitError):
    """Under --nproc, a process other than 0 stopping because process 0 failed at a step only it takes: process 0
    prints why, this process nothing (exit code 2 all the same)."""


class Interrupted(Exception):
    """Training stopped on a signal (SIGINT, SIGTERM) after finishing a step and saving: resume to continue."""

    def __init__(self, signum: int, step: int, saved: bool = True, finished: bool = False) -> None:
        super().__init__(f"stopped by signal {signum} after step {step}")
        self.signum, self.step, self.saved = signum, step, saved  # saved=False: a second signal, no checkpoint
        self.finished = finished  # the signal came as the run ended: it is saved whole, and what follows is not done
        self.run: str | None = None  # the run folder it stopped, where known (vaekit.runs sets it)
        self.again: str | None = None  # the command that continues it, where not `vaekit train --resume RUN`

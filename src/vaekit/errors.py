"""The one exception type for users' mistakes: the CLI turns it into one line and exit code 2."""


class VaekitError(Exception):
    """A problem the user can fix: the message names it and says how."""


class Interrupted(Exception):
    """Training stopped on a signal (SIGINT, SIGTERM) after finishing a step and saving: resume to continue."""

    def __init__(self, signum: int, step: int, saved: bool = True) -> None:
        super().__init__(f"stopped by signal {signum} after step {step}")
        self.signum, self.step, self.saved = signum, step, saved  # saved=False: a second signal, no checkpoint

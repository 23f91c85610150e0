"""The one exception type for users' mistakes: the CLI turns it into one line and exit code 2."""


class VaekitError(Exception):
    """A problem the user can fix: the message names it and says how."""

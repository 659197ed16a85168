"""The one exception type a user is meant to see.

Anything raised as :class:`UserError` is printed by the CLI as a single line
(``raydistill: error: ...``) and exits with code 2; it never shows a traceback.
Raise it for bad input (files, flags, search spaces), never for bugs — and for a full disk
(:class:`DiskFull`), which the user fixes as they fix bad input.

:class:`RunFailed` is the work itself failing although its input was good (every trial of a
search failed): one line too, exit code 1, so that a job submitted with ``ray job submit``
shows the failure in its status.
"""


class UserError(Exception):
    """Bad input from the user: a clear one-line message, exit code 2."""


class DiskFull(UserError):
    """A write failed for lack of space (or quota): the message names the file, the space the
    write needed and the space free (``raydistill.utils.atomic_write``)."""


class RunFailed(Exception):
    """The work failed (not the input): a one-line message, exit code 1."""

"""The one exception type a user is meant to see.

Anything raised as :class:`UserError` is printed by the CLI as a single line
(``raydistill: error: ...``) and exits with code 2; it never shows a traceback.
Raise it for bad input (files, flags, search spaces), never for bugs.
"""


class UserError(Exception):
    """Bad input from the user: a clear one-line message, exit code 2."""

"""The one line between the user's mistakes and skiplab's own.

:class:`UserError` is what the validation paths raise for input skiplab cannot take (a
spec or flag, a dataset, a file, a store): the command line prints its message as one
line and exits 2. Any other exception is a bug inside skiplab: exit 1, one line naming a
log file that holds the traceback (``skiplab.cli.main``). It is a ValueError, so code
that catches ValueError around the library still catches it.
"""

from __future__ import annotations


class UserError(ValueError):
    """Input skiplab cannot take, said in one line that names it."""

"""The one base of the errors a user can fix: `VaelabError`.

Every error vaelab raises for a mistake in a command, a config, a file, the data or a model that
breaks the contract derives from it, so `cli.main` can print those as one line (exit 2) and let
any other exception (a bug, in vaelab or in a model or plugin of the user's) keep its traceback.
Each subclass also derives from the built-in exception it derived from before (ValueError,
OSError, RuntimeError), so code that catches those goes on catching them.
"""

from __future__ import annotations


class VaelabError(Exception):
    """Something the user can fix; the message says what, and where it can, how."""

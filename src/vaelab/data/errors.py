"""Exceptions and warnings raised by the data layer."""

from __future__ import annotations

from ..errors import VaelabError


class DataError(VaelabError, ValueError):
    """A data fault: missing, unreadable, malformed or unverified data.

    The message always names the file, URL or source and the fault.
    """


class SourceUnavailable(DataError):
    """A source holds no copy of the data set (absent, offline, not installed).

    Unlike a plain :class:`DataError`, this is not a sign of bad data, so
    :func:`vaelab.data.load_dataset` moves on to the next source silently.
    """


class DataWarning(UserWarning):
    """A source served bad data and was skipped (e.g. a corrupt cache file)."""

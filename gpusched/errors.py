"""The answers the daemon gives a caller who asked for something it can't have, as types.

The bus layer (api.py) turns exactly these into {"error": ...} replies; any other exception is a bug, logged
with its traceback and answered as an internal error, never shown as the caller's mistake. Each subclasses
the builtin it stands for, so code that catches LookupError/PermissionError/ValueError still does.
"""

from __future__ import annotations


class Refused(Exception):
    """A request the daemon answers with an error message for the caller."""


class NoSuchJob(Refused, LookupError):
    pass


class NotAllowed(Refused, PermissionError):
    pass


class Invalid(Refused, ValueError):
    """The request can't be done in the job's current state (cancelling an ended job, ...)."""


class Busy(Refused):
    """The caller has used its share of the daemon's time for costly calls (callbudget.py): ask again later."""

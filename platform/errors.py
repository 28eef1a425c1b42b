"""The errors a study reports to its user: what went wrong, and what to do, in one line."""
from __future__ import annotations

from collections.abc import Callable


class StudyError(RuntimeError):
    """A study cannot start or go on; the message says why and what to do."""


class TrialFailure(RuntimeError):
    """A trial ended without finishing (diverged, out of memory, bad input); the message says where."""


def raised_from(error: BaseException | None,
                matches: Callable[[BaseException], bool]) -> BaseException | None:
    """Returns the first error in the chain of ``error`` (itself, then what it was raised from or
    during: ``__cause__``, else ``__context__``) that ``matches``, else None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if matches(error):
            return error
        error = error.__cause__ or error.__context__
    return None

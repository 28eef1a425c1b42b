"""The errors a study reports to its user: what went wrong, and what to do, in one line."""


class StudyError(RuntimeError):
    """A study cannot start or go on; the message says why and what to do."""


class TrialFailure(RuntimeError):
    """A trial ended without finishing (diverged, out of memory, bad input); the message says where."""
